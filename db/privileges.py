"""May the database role the fleet connects as run the fleet's statements? The privileges the
statements of db/queries.sql need, table by table and per process, and which of them a role
lacks, asked of PostgreSQL (has_table_privilege, has_sequence_privilege) without running any
statement. For the pre-flight: a role that may not read fleet_pauses passes every other check,
and then every claim fails with permission denied.

The SQL here reads the catalog, not the fleet's data, so it stays beside its code, as
db/catalog.py's does. Driver errors become StoreError at this edge, as in db.store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import psycopg

from db.store import translate_errors

Privilege = Literal["SELECT", "INSERT", "UPDATE", "DELETE"]


@dataclass(frozen=True, slots=True)
class Need:
    table: str
    privileges: tuple[Privilege, ...]
    why: str  # the statements of db/queries.sql that need them


#: What each process type of the Procfile runs needs. A statement needs SELECT on a table it
#: reads in a WHERE, a join or a RETURNING, and UPDATE for a FOR UPDATE; an INSERT into a
#: table with a serial id also needs USAGE on its sequence (asked for with it, below).
NEEDS: dict[str, tuple[Need, ...]] = {
    "worker": (
        Need("orders", ("SELECT", "UPDATE"), "claim_order, begin_purchase, finish_call"),
        Need("fleet_pauses", ("SELECT",), "claim_order reads the pauses at every claim"),
        Need("fulfillment_logs", ("SELECT", "INSERT"), "finish_call logs every vendor call"),
        Need("customer_sms", ("SELECT", "INSERT"), "finish_call (a delivery), order_outbox_due"),
        Need("platform_events", ("SELECT", "INSERT"), "finish_call (a delivery), order_outbox_due"),
        Need(
            "fleet_networks",
            ("SELECT", "INSERT", "UPDATE"),
            "record_networks at start, network_served",
        ),
    ),
    "deadletter": (
        Need("orders", ("SELECT", "UPDATE"), "flag_dead_letter, the vendor lookup's claim"),
        Need("fleet_pauses", ("SELECT",), "claim_order, for the vendor lookup"),
        Need("fulfillment_logs", ("SELECT", "INSERT"), "finish_call, for the vendor lookup"),
        Need(
            "customer_sms", ("SELECT", "INSERT"), "flag_dead_letter (a failure), order_outbox_due"
        ),
        Need(
            "platform_events",
            ("SELECT", "INSERT"),
            "flag_dead_letter (a failure), order_outbox_due",
        ),
        Need(
            "fleet_networks",
            ("SELECT", "INSERT", "UPDATE"),
            "record_networks at start, network_served",
        ),
        Need(
            "admin_notifications",
            ("SELECT", "INSERT", "UPDATE"),
            "flag_dead_letter, insert_notification, record_webhook_delivery",
        ),
    ),
    "reconciler": (
        Need("orders", ("SELECT", "UPDATE"), "sweep_due_orders"),
        Need("fleet_pauses", ("SELECT",), "sweep_due_orders"),
        Need(
            "admin_notifications",
            ("SELECT", "UPDATE"),
            "undelivered_notifications, record_webhook_delivery",
        ),
        Need("vendor_callbacks", ("SELECT", "DELETE"), "prune_callbacks"),
        Need("customer_sms", ("SELECT",), "due_sms"),
        Need("platform_events", ("SELECT",), "due_events"),
        Need(
            "fleet_networks",
            ("SELECT", "INSERT", "UPDATE"),
            "record_networks at start, sweep_due_orders",
        ),
    ),
    "notify": (
        Need("orders", ("SELECT",), "claim_sms reads the order's package"),
        Need("customer_sms", ("SELECT", "UPDATE"), "claim_sms, sms_sending, sms_sent, sms_final"),
        Need("platform_events", ("SELECT", "UPDATE"), "claim_event, event_result"),
        Need(
            "fleet_networks",
            ("SELECT", "INSERT", "UPDATE"),
            "record_networks at start (a dramatiq process of the fleet)",
        ),
    ),
    "web": (
        Need("orders", ("SELECT", "UPDATE"), "list_orders and the admin actions"),
        Need("fulfillment_logs", ("SELECT",), "order_logs, latest_log"),
        Need("admin_notifications", ("SELECT",), "notifications, order_notifications"),
        Need("admin_audit", ("SELECT", "INSERT"), "insert_audit records every admin action"),
        Need(
            "customer_sms",
            ("SELECT", "INSERT", "UPDATE"),
            "an admin's dismiss or decision, order_sms, failed_sms, retry_sms",
        ),
        Need(
            "platform_events",
            ("SELECT", "INSERT", "UPDATE"),
            "an admin's dismiss or decision, order_events, failed_events, resend_event",
        ),
        Need("vendor_callbacks", ("SELECT", "INSERT"), "record_callback (the vendor's callbacks)"),
        Need(
            "fleet_pauses",
            ("SELECT", "INSERT", "DELETE"),
            "list_pauses, insert_pause, delete_pause",
        ),
        Need(
            "fleet_networks",
            ("SELECT", "INSERT", "UPDATE"),
            "record_networks at start, the stats and the admin actions",
        ),
    ),
}

# has_table_privilege on every (table, privilege) asked; then the sequences owned by a column
# of each table asked INSERT on (serial or identity), with has_sequence_privilege. A table
# that is not there (the schema check comes first) counts as not granted.
_TABLES = """
SELECT t.name, t.privilege, coalesce(has_table_privilege(c.oid, t.privilege), false)
FROM unnest(%(tables)s::text[], %(privileges)s::text[]) WITH ORDINALITY AS t(name, privilege, n)
LEFT JOIN pg_class c ON c.oid = to_regclass('public.' || quote_ident(t.name))
ORDER BY t.n
"""
_SEQUENCES = """
SELECT t.name, s.relname, has_sequence_privilege(s.oid, 'USAGE')
FROM unnest(%(tables)s::text[]) AS t(name)
JOIN pg_depend d ON d.refobjid = to_regclass('public.' || quote_ident(t.name))
                AND d.refclassid = 'pg_class'::regclass AND d.classid = 'pg_class'::regclass
                AND d.deptype IN ('a', 'i')
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
ORDER BY t.name, s.relname
"""


@dataclass(frozen=True, slots=True)
class Missing:
    privilege: str  # SELECT, INSERT, UPDATE, DELETE, or USAGE (a sequence's)
    table: str  # the table, or the one whose serial id the sequence feeds
    sequence: str | None  # set for USAGE on a sequence
    processes: tuple[str, ...]  # the processes whose statements need it
    why: tuple[str, ...]

    @property
    def label(self) -> str:
        on = f"sequence {self.sequence}" if self.sequence else self.table
        return f"{self.privilege} on {on}"


@dataclass(frozen=True, slots=True)
class Grants:
    role: str  # current_user
    role_sql: str  # the role's name as SQL writes it (quoted when it must be)
    missing: tuple[Missing, ...]

    def grant_statements(self) -> list[str]:
        """The GRANTs that give the role what it lacks, one per table or sequence."""
        by_object: dict[str, list[str]] = {}
        for m in self.missing:
            on = f"SEQUENCE public.{m.sequence}" if m.sequence else f"TABLE public.{m.table}"
            by_object.setdefault(on, []).append(m.privilege)
        return [
            f"GRANT {', '.join(privileges)} ON {on} TO {self.role_sql};"
            for on, privileges in by_object.items()
        ]


def missing_privileges(
    database_url: str, processes: Sequence[str], *, connect_timeout_s: float = 10.0
) -> Grants:
    """What the connecting role lacks of what `processes` (keys of NEEDS) need; StoreError
    when PostgreSQL fails or is away."""
    needs = [(p, n) for p in processes for n in NEEDS[p]]
    asked = sorted({(n.table, priv) for _, n in needs for priv in n.privileges})
    inserted = sorted({n.table for _, n in needs if "INSERT" in n.privileges})
    with (
        translate_errors(),
        psycopg.connect(
            database_url, autocommit=True, connect_timeout=max(1, round(connect_timeout_s))
        ) as conn,
    ):
        row = conn.execute("SELECT current_user, quote_ident(current_user)").fetchone()
        role, role_sql = (str(row[0]), str(row[1])) if row else ("", "")
        tables = conn.execute(
            _TABLES,
            {"tables": [t for t, _ in asked], "privileges": [p for _, p in asked]},
        ).fetchall()
        sequences = conn.execute(_SEQUENCES, {"tables": inserted}).fetchall()
    missing = [
        _missing(needs, str(table), str(privilege), None)
        for table, privilege, granted in tables
        if not granted
    ]
    missing += [
        _missing(needs, str(table), "USAGE", str(sequence))
        for table, sequence, granted in sequences
        if not granted
    ]
    return Grants(role, role_sql, tuple(missing))


def _missing(
    needs: Sequence[tuple[str, Need]], table: str, privilege: str, sequence: str | None
) -> Missing:
    """Who needs it: for a table's privilege, the processes asking that one of it; for a
    sequence's USAGE, those inserting into its table."""
    wanted = "INSERT" if sequence else privilege
    why = [(p, n) for p, n in needs if n.table == table and wanted in n.privileges]
    return Missing(
        privilege,
        table,
        sequence,
        tuple(dict.fromkeys(p for p, _ in why)),
        tuple(dict.fromkeys(n.why for _, n in why)),
    )
