"""The chaos run's database: its own SQL (chaos/queries.sql, read-only), by name, against the
run's store, and the fresh database it runs in; both through the db layer (db.query_files,
db.databases), which translates driver errors to StoreError."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaos.config import DATABASE
from db.databases import create_database
from db.query_files import QueryFile
from db.store import Row, Store

QUERIES = QueryFile(Path(__file__).with_name("queries.sql"))


def rows(store: Store, name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
    """The rows of query `name`; StoreError while PostgreSQL is away (as db.store says it)."""
    return QUERIES.rows(store, name, params)


def fresh_database(server_url: str) -> str:
    """The run's database (`chaos`), created on the server of `server_url`; its URL."""
    return create_database(server_url, DATABASE)
