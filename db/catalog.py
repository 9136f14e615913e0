"""The schema of a database as PostgreSQL's catalog describes it, not as some SQL text said.

A snapshot maps each object of the `public` schema (table, column, index, constraint, trigger,
function, sequence, row-level policy) to its definition as the server prints it. Two databases
whose snapshots are equal have the same schema whatever DDL built them, and the difference of
two snapshots names what changed. Column order is left out (an upgraded table has its columns
in the order they were added), and so are objects that belong to an extension and the
migrations' own bookkeeping table. Privileges are not compared.

`drift` reads a difference as a fleet that shares its database with the purchase platform
must: every object the fleet's schema had must still be there as it was, and the fleet's own
tables must have nothing more; what the platform adds beside them (its tables, functions,
extensions, and columns or indexes of its `orders`) is not the fleet's business.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg

#: The table in which db/migrate.py records the steps applied (not part of any snapshot). Not
#: `schema_migrations`: the platform's own migration tool (Rails, dbmate, golang-migrate) may
#: keep a table of that name in the same database.
MIGRATIONS_TABLE = "fulfillment_schema_migrations"
#: The platform's table: the fleet owns only what its steps put on it.
PLATFORM_TABLE = "orders"

Snapshot = dict[str, str]

# Objects created by an extension (CREATE EXTENSION pg_trgm in public, say) are the extension's:
# each query leaves out what pg_depend says an extension owns (deptype 'e').

_QUERIES: tuple[tuple[str, str], ...] = (
    (
        "table",
        """
        SELECT c.relname,
               c.relkind::text
               || CASE c.relpersistence WHEN 'u' THEN ' unlogged' ELSE '' END
               || CASE WHEN c.relrowsecurity THEN ' row-level-security' ELSE '' END
               || CASE WHEN c.relforcerowsecurity THEN ' forced' ELSE '' END
               || coalesce(' ' || array_to_string(c.reloptions, ','), '')
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
          AND c.relname::text <> %(own)s::text
          AND NOT EXISTS (SELECT 1 FROM pg_depend e
                          WHERE e.objid = c.oid AND e.deptype = 'e')
        """,
    ),
    (
        "sequence",
        """
        SELECT c.relname,
               format_type(s.seqtypid, NULL) || ' start ' || s.seqstart
               || ' increment ' || s.seqincrement || ' min ' || s.seqmin
               || ' max ' || s.seqmax || ' cache ' || s.seqcache
               || CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END
        FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid
        WHERE c.relnamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend e
                          WHERE e.objid = c.oid AND e.deptype = 'e')
        """,
    ),
    (
        "column",
        """
        SELECT c.relname || '.' || a.attname,
               format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attcollation <> t.typcollation
                       THEN ' collate ' || quote_ident(co.collname) ELSE '' END
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
          AND c.relname::text <> %(own)s::text AND a.attnum > 0 AND NOT a.attisdropped
          AND NOT EXISTS (SELECT 1 FROM pg_depend e
                          WHERE e.objid = c.oid AND e.deptype = 'e')
        """,
    ),
    (
        "index",
        """
        SELECT i.relname,
               'on ' || t.relname || ': ' || pg_get_indexdef(x.indexrelid)
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
          AND k.contype <> 'n'
        """,
    ),
    (
        "trigger",
        """
        SELECT t.relname || '.' || g.tgname,
               pg_get_triggerdef(g.oid)
               || CASE g.tgenabled WHEN 'O' THEN '' WHEN 'D' THEN ' (DISABLED)'
                  ELSE ' (enabled ' || g.tgenabled::text || ')' END
        FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid
        WHERE t.relnamespace = 'public'::regnamespace AND NOT g.tgisinternal
        """,
    ),
    (
        "policy",
        """
        SELECT t.relname || '.' || p.polname,
               p.polcmd::text || ' ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '')
               || ' / ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
        FROM pg_policy p JOIN pg_class t ON t.oid = p.polrelid
        WHERE t.relnamespace = 'public'::regnamespace
        """,
    ),
    (
        "function",
        """
        SELECT p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid))
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_depend e
                          WHERE e.objid = p.oid AND e.deptype = 'e')
        """,
    ),
)


def snapshot(conn: psycopg.Connection[tuple[object, ...]]) -> Snapshot:
    """The catalog of `public` as {"column orders.network": "text", ...}. Definitions are
    printed with `public` on the search path and nothing before it (db/migrate.py pins it), so
    that a name is never shown schema-qualified in one database and not in another."""
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


def drift(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """The differences that concern the fleet: anything of `expected` missing or changed, and
    anything more on a table the fleet owns (every table of `expected` but `orders`)."""
    owned = {key.split(" ", 1)[1] for key in expected if key.startswith("table ")}
    owned.discard(PLATFORM_TABLE)
    extra = {key: value for key, value in actual.items() if _on(key, value) in owned}
    return differences(expected, {**extra, **{k: v for k, v in actual.items() if k in expected}})


def _on(key: str, value: str) -> str | None:
    """The table an object belongs to (None: a function, sequence...)."""
    kind, name = key.split(" ", 1)
    if kind == "table":
        return name
    if kind in ("column", "constraint", "trigger", "policy"):
        return name.split(".", 1)[0]
    if kind == "index":
        return value.removeprefix("on ").split(":", 1)[0]
    return None
