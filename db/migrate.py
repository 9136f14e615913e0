"""Apply schema.sql idempotently, under an advisory lock so concurrent migrations queue up."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

import psycopg

from fulfillment.domain.errors import StoreError

# The root schema.sql, shipped in the package as db/schema.sql (a symlink in the checkout).
SCHEMA_FILE = files("db").joinpath("schema.sql")
_MIGRATION_LOCK = 0x41_54_49_53  # "ATIS"


def migrate(database_url: str, schema_file: Traversable = SCHEMA_FILE) -> None:
    ddl = schema_file.read_text(encoding="utf-8")
    try:
        with psycopg.connect(database_url, autocommit=False) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(ddl.encode())  # bytes: a script of many statements, no parameters
            conn.commit()
    except psycopg.Error as exc:
        raise StoreError(f"migration failed: {exc}") from exc
