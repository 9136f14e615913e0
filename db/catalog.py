"""The schema of a database as PostgreSQL's catalog describes it, not as some SQL text said.

A snapshot maps each object of the `public` schema (table, column, index, constraint, trigger,
function, sequence) to its definition as the server prints it. Two databases whose snapshots
are equal have the same schema whatever DDL built them, and the difference of two snapshots
names what changed. Column order is left out: an upgraded table has its columns in the order
they were added. The migrations' own bookkeeping table is not part of the schema it records.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg

#: The table in which db/migrate.py records the steps applied (not part of any snapshot).
MIGRATIONS_TABLE = "schema_migrations"

Snapshot = dict[str, str]

_QUERIES: tuple[tuple[str, str], ...] = (
    (
        "table",
        """
        SELECT c.relname, c.relkind::text
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
          AND c.relname::text <> %(own)s::text
        """,
    ),
    (
        "sequence",
        """
        SELECT c.relname, format_type(s.seqtypid, NULL)
        FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid
        WHERE c.relnamespace = 'public'::regnamespace
        """,
    ),
    (
        "column",
        """
        SELECT c.relname || '.' || a.attname,
               format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
          AND c.relname::text <> %(own)s::text AND a.attnum > 0 AND NOT a.attisdropped
        """,
    ),
    (
        "index",
        """
        SELECT i.relname,
               pg_get_indexdef(x.indexrelid)
               || CASE WHEN x.indisvalid THEN '' ELSE ' (INVALID)' END
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        WHERE t.relnamespace = 'public'::regnamespace AND t.relname::text <> %(own)s::text
        """,
    ),
    (
        "constraint",
        """
        SELECT t.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
        WHERE k.connamespace = 'public'::regnamespace AND t.relname::text <> %(own)s::text
        """,
    ),
    (
        "trigger",
        """
        SELECT t.relname || '.' || g.tgname, pg_get_triggerdef(g.oid)
        FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid
        WHERE t.relnamespace = 'public'::regnamespace AND NOT g.tgisinternal
        """,
    ),
    (
        "function",
        """
        SELECT p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid))
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
        """,
    ),
)


def snapshot(conn: psycopg.Connection[tuple[object, ...]]) -> Snapshot:
    """The catalog of `public` as {"column orders.network": "text", ...}."""
    found: Snapshot = {}
    for kind, query in _QUERIES:
        for name, definition in conn.execute(query, {"own": MIGRATIONS_TABLE}).fetchall():
            found[f"{kind} {name}"] = str(definition)
    return dict(sorted(found.items()))


def differences(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """What `actual` has that `expected` lacks, and the reverse, one line per object."""
    lines: list[str] = []
    for key in sorted(set(expected) | set(actual)):
        if key not in actual:
            lines.append(f"missing {key} ({expected[key]})")
        elif key not in expected:
            lines.append(f"unexpected {key} ({actual[key]})")
        elif expected[key] != actual[key]:
            lines.append(f"changed {key}: {expected[key]} -> {actual[key]}")
    return lines
