"""Named-query files besides db/queries.sql, run on a store's pool.

For SQL that belongs to a tool rather than to the fleet (the chaos harness's read-only checks,
chaos/queries.sql): the tool keeps its queries next to its code and reaches PostgreSQL through
here, never through psycopg. Same format as db/queries.sql (`-- name: x` headers, one line of
why), parsed by db.queries.parse once, on first use; driver errors become StoreError at this
edge, as in db.store.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, LiteralString

from db.queries import parse
from db.store import Row, Store, translate_errors


class QueryFile:
    """The named queries of one file; `rows(store, name, params)` runs one of them."""

    def __init__(self, path: Path | Traversable) -> None:
        self.path = path
        self._queries: dict[str, str] | None = None
        self._lock = threading.Lock()

    @property
    def queries(self) -> dict[str, str]:
        """{name: sql}, read and checked (no duplicate, no empty query) on first use."""
        with self._lock:
            if self._queries is None:
                self._queries = parse(self.path.read_text(encoding="utf-8"))
            return self._queries

    def sql(self, name: str) -> LiteralString:
        try:
            text = self.queries[name]
        except KeyError:
            raise KeyError(f"no query named {name!r} in {self.path.name}") from None
        # The file is part of the code base, not input: as literal as a constant.
        return text  # type: ignore[return-value,unused-ignore]

    def rows(self, store: Store, name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """The rows of query `name` (dict rows, the pool's row factory); StoreError when
        PostgreSQL fails or is away."""
        with translate_errors(), store.pool.connection() as conn:
            found: list[Row] = conn.execute(self.sql(name), dict(params or {})).fetchall()
            return found
