"""The chaos run's own SQL (chaos/queries.sql, read-only), by name, against the run's store."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import psycopg_pool

from db.queries import parse
from db.store import Row, Store
from fulfillment.domain.errors import StoreError

SQL_FILE = Path(__file__).with_name("queries.sql")


@cache
def _queries() -> dict[str, str]:
    return parse(SQL_FILE.read_text(encoding="utf-8"))


def sql(name: str) -> LiteralString:
    # The file is part of the code base, not input: as literal as a constant.
    return _queries()[name]  # type: ignore[return-value,unused-ignore]


def rows(store: Store, name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
    """The rows of query `name`; StoreError while PostgreSQL is away (as db.store says it)."""
    try:
        with store.pool.connection() as conn:
            found: list[Row] = conn.execute(sql(name), dict(params or {})).fetchall()
            return found
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        raise StoreError(f"database error: {type(exc).__name__}: {exc}") from exc
