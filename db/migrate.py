"""Apply schema.sql idempotently, under an advisory lock so concurrent migrations queue up."""

from __future__ import annotations

from pathlib import Path

import psycopg

from fulfillment.errors import StoreError

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.sql"
_MIGRATION_LOCK = 0x41_54_49_53  # "ATIS"


def migrate(database_url: str, schema_file: Path = SCHEMA_FILE) -> None:
    ddl = schema_file.read_text(encoding="utf-8")
    try:
        with psycopg.connect(database_url, autocommit=False) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(ddl.encode())  # bytes: a script of many statements, no parameters
            conn.commit()
    except psycopg.Error as exc:
        raise StoreError(f"migration failed: {exc}") from exc
