"""Removing the fleet entirely (`migrate(url, to=0)`) leaves the platform's orders rows and their
history intact: every row, every value of every column, none even rewritten as it was; a new
order is then no one's to fulfil. Migrating up again brings the fleet back over the rows as they
were."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from db.migrate import load_steps, migrate, status

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[dict[str, Any]]
PHONE = "+233241234567"
#: the fleet's own tables, gone with it; the platform's and the history stay
FLEET_ONLY = ("fleet_pauses", "admin_notifications", "vendor_callbacks")
HISTORY = ("fulfillment_logs", "admin_audit")


@contextmanager
def connected(url: str) -> Iterator[Conn]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def _order(conn: Conn, **columns: object) -> str:
    oid = str(uuid.uuid4())
    values: dict[str, object] = {
        "id": oid,
        "phone_number": PHONE,
        "network": "at-ishare",
        "size_gb": 2,
        "package_name": "AT iShare 2GB",
        **columns,
    }
    conn.execute(
        f"INSERT INTO orders ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))})",
        list(values.values()),
    )
    return oid


def _seed(conn: Conn) -> None:
    """Orders in several states, with their attempts, audit rows, notifications, callbacks and a
    pause: what a database holds after the fleet has worked on it."""
    _order(conn)  # pending, never tried
    _order(conn, fulfillment_status=None, network="at-ishare")  # before the fleet
    _order(conn, network="mtn", phone_number="+233541234567")
    done = _order(
        conn,
        fulfillment_status="success",
        fulfillment_attempts=2,
        fulfilled_at="2026-11-01T10:00:00Z",
        vendor_transaction_id="TX-1",
        last_error_code="VENDOR_5XX",
        size_gb=None,
        package_name="500MB",
    )
    due = _order(
        conn,
        fulfillment_status="failed",
        fulfillment_attempts=1,
        next_attempt_at="2026-11-01T10:05:00Z",
        last_error_code="TIMEOUT",
        last_error_message="no answer",
        fulfillment_status_checks=1,
    )
    dead = _order(
        conn,
        fulfillment_status="failed",
        fulfillment_attempts=3,
        fulfillment_generation=1,
        fulfillment_extra_attempts=1,
        dead_letter_reason="3 attempts used up",
        dead_letter_requested_at="2026-11-01T11:00:00Z",
        dead_lettered_at="2026-11-01T11:00:01Z",
        dead_letter_dismissed_at="2026-11-02T09:00:00Z",
        dead_letter_dismissed_by="ops@example.com",
    )
    held = _order(
        conn,
        fulfillment_status="processing",
        fulfillment_attempts=1,
        fulfillment_in_flight_attempt=1,
        fulfillment_deferrals=2,
        dead_letter_reason="outcome unknown; check by hand",
        dead_letter_requested_at="2026-11-01T12:00:00Z",
        dead_lettered_at="2026-11-01T12:00:01Z",
    )
    _order(
        conn,
        fulfillment_status="processing",
        fulfillment_attempts=1,
        fulfillment_in_flight_attempt=1,
        claim_token=str(uuid.uuid4()),
        claim_expires_at="2026-11-01T12:30:00Z",
        last_enqueued_at="2026-11-01T12:29:00Z",
    )
    for oid, attempt, state, code in (
        (done, 1, "failed", "VENDOR_5XX"),
        (done, 2, "success", None),
        (due, 1, "failed", "TIMEOUT"),
        (dead, 1, "failed", "VENDOR_5XX"),
        (dead, 2, "failed", "VENDOR_5XX"),
        (dead, 3, "failed", "VENDOR_5XX"),
        (held, 1, "failed", "TIMEOUT"),
    ):
        conn.execute(
            "INSERT INTO fulfillment_logs (order_id, network, phone_number, action, status, "
            "attempt_number, max_attempts, http_status, api_response, error_code, latency_ms, "
            "worker) VALUES (%s, 'at-ishare', %s, 'purchase', %s, %s, 3, 200, "
            "'{\"status\": \"x\"}'::jsonb, %s, 25, 'host-1')",
            (oid, PHONE, state, attempt, code),
        )
    conn.execute(
        "INSERT INTO fulfillment_logs (order_id, network, action, status, attempt_number, "
        "max_attempts) VALUES (%s, 'at-ishare', 'status_check', 'not_found', 1, 3)",
        (due,),
    )
    audited: tuple[tuple[str, str | None], ...] = (
        ("retry", dead),
        ("dismiss", dead),
        ("pause", None),
    )
    for action, target in audited:
        conn.execute(
            "INSERT INTO admin_audit (actor, action, order_id, reason, details) "
            "VALUES ('ops@example.com', %s, %s, 'checked by phone', '{\"n\": 1}'::jsonb)",
            (action, target),
        )
    conn.execute(
        "INSERT INTO admin_notifications (kind, order_id, message, dedupe_key) "
        "VALUES ('dead_letter', %s, 'dead-lettered', %s)",
        (dead, f"dead_letter:{dead}:0"),
    )
    conn.execute(
        "INSERT INTO vendor_callbacks (digest, order_id, status) VALUES ('abc', %s, 'success')",
        (done,),
    )
    conn.execute(
        "INSERT INTO fleet_pauses (scope, reason, paused_by) VALUES ('*', 'vendor down', 'ops')"
    )


def _dump(conn: Conn, table: str) -> list[tuple[str, str, str]]:
    """Every row of `table` by id: every column's value as PostgreSQL prints it, and the row's
    version (xmin: a row rewritten as it was is not untouched either)."""
    rows = conn.execute(
        f"SELECT id::text AS key, t::text AS row, t.xmin::text AS version FROM {table} t ORDER BY 1"
    )
    return [(r["key"], r["row"], r["version"]) for r in rows.fetchall()]


def _columns(conn: Conn, table: str) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    return [(r["column_name"], r["data_type"], r["is_nullable"]) for r in rows.fetchall()]


def _exists(conn: Conn, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS found", (f"public.{table}",))
    found = row.fetchone()
    return bool(found and found["found"])


def _status_of(conn: Conn, oid: str) -> str | None:
    row = conn.execute("SELECT fulfillment_status FROM orders WHERE id = %s", (oid,)).fetchone()
    assert row is not None
    value: str | None = row["fulfillment_status"]
    return value


def test_removing_the_fleet_keeps_the_orders_and_their_history(own_database: str) -> None:
    url = own_database
    migrate(url)
    code_version = len(load_steps())
    with connected(url) as conn:
        _seed(conn)
        orders_before = _dump(conn, "orders")
        columns_before = _columns(conn, "orders")
        history_before = {t: _dump(conn, t) for t in HISTORY}

    removed = migrate(url, to=0)

    assert removed.version == 0
    with connected(url) as conn:
        # every orders row, every value of every column; the columns themselves
        assert _dump(conn, "orders") == orders_before
        assert _columns(conn, "orders") == columns_before
        assert {t: _dump(conn, t) for t in HISTORY} == history_before
        assert [t for t in FLEET_ONLY if _exists(conn, t)] == []
        # the history stays append-only
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM fulfillment_logs")
        # a new order of the platform is no one's to fulfil
        newcomer = _order(conn)
        assert _status_of(conn, newcomer) is None
        orders_removed = _dump(conn, "orders")

    back = migrate(url)

    assert back.version == code_version and back.exit_code == 0
    assert status(url).exit_code == 0
    with connected(url) as conn:
        # the fleet is back over the rows as they were, the newcomer still nobody's
        assert _dump(conn, "orders") == orders_removed
        assert _status_of(conn, newcomer) is None
        assert {t: _dump(conn, t) for t in HISTORY} == history_before
        assert all(_exists(conn, t) for t in FLEET_ONLY)
        # and a new order is the fleet's again
        assert _status_of(conn, _order(conn)) == "pending"
