"""Every final outcome writes the platform's event and the customer's SMS in the statement
that records it (db/queries.sql, fulfillment_record_outcome), once per outcome generation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from db.admin_store import AdminStore
from db.store import Store
from fulfillment.services.deadletter import handle_dead_letter
from fulfillment.services.delivery import fulfil
from fulfillment.services.notifier import Notifier
from fulfillment.services.ports import FulfilDeps, Outcome

from .conftest import Sent

pytestmark = pytest.mark.integration


def _told(store: Store, oid: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with store.pool.connection() as conn:
        events = conn.execute(
            "SELECT * FROM platform_events WHERE order_id = %s ORDER BY id", (oid,)
        ).fetchall()
        sms = conn.execute(
            "SELECT * FROM customer_sms WHERE order_id = %s ORDER BY id", (oid,)
        ).fetchall()
    return [dict(e) for e in events], [dict(s) for s in sms]


def test_a_delivery_writes_one_event_and_one_sms(
    store: Store, new_order: Callable[..., str], make_deps: Callable[..., FulfilDeps]
) -> None:
    oid = new_order()
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    fulfil(oid, make_deps())  # a duplicate message finds it done and writes nothing
    events, sms = _told(store, oid)
    assert [(e["type"], e["generation"], e["status"]) for e in events] == [
        ("order.fulfilled", 0, "pending")
    ]
    body = json.loads(events[0]["body"])
    assert body["event_id"] == str(events[0]["event_id"])
    assert body["order_id"] == oid and body["network"] == "at-ishare"
    assert body["refund_advised"] is False and body["attempts"] == 1
    assert body["transaction_id"] and body["occurred_at"].endswith("Z")
    assert "reason" not in body  # nulls are left out
    assert [(s["kind"], s["status"], s["client_reference"]) for s in sms] == [
        ("delivered", "queued", f"{oid}:0:delivered")
    ]


def test_a_failure_tells_with_a_refund_advised_and_a_dismissal_resolves(
    store: Store,
    new_order: Callable[..., str],
    make_deps: Callable[..., FulfilDeps],
    sent: Sent,
) -> None:
    oid = new_order(phone="12345")  # refused before any purchase
    assert fulfil(oid, make_deps()) is Outcome.DEAD_LETTERED
    assert _told(store, oid) == ([], [])  # requested, not yet final
    notifier = Notifier(store=store, webhook_url=None)
    assert handle_dead_letter(sent.dead_letters[0], store, notifier)
    assert not handle_dead_letter(sent.dead_letters[0], store, notifier)
    events, sms = _told(store, oid)
    assert [e["type"] for e in events] == ["order.failed"]
    body = json.loads(events[0]["body"])
    assert body["refund_advised"] is True and body["attempts"] == 0
    assert "invalid order" in body["reason"]
    assert [(s["kind"], s["refund_advised"]) for s in sms] == [("failed", True)]
    assert AdminStore(store).dismiss(oid, actor="ama", reason="refunded by hand") is not None
    events, sms = _told(store, oid)
    assert [e["type"] for e in events] == ["order.failed", "order.resolved"]
    resolved = json.loads(events[1]["body"])
    assert resolved["reason"] == "refunded by hand" and resolved["refund_advised"] is False
    assert len(sms) == 1  # a dismissal texts nobody
    assert "12345" not in events[0]["body"] + events[1]["body"]


def test_an_outcome_unknown_tells_nobody_until_a_person_decides(
    store: Store, new_order: Callable[..., str]
) -> None:
    oid = new_order()
    with store.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET fulfillment_status = 'processing', fulfillment_attempts = 3, "
            "fulfillment_in_flight_attempt = 3, dead_letter_reason = 'outcome unknown', "
            "dead_letter_requested_at = now(), dead_lettered_at = now() WHERE id = %s",
            (oid,),
        )
    assert _told(store, oid) == ([], [])
    admin = AdminStore(store)
    decided = admin.settle_review(oid, decision="mark_not_delivered", reason="vendor: none")
    assert decided is not None
    events, sms = _told(store, oid)
    assert [(e["type"], json.loads(e["body"])["refund_advised"]) for e in events] == [
        ("order.failed", True)
    ]
    assert [s["kind"] for s in sms] == ["failed"]
    # a retry is a new generation: its delivery is a new event after the failure
    with store.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET fulfillment_generation = 1, fulfillment_status = 'processing', "
            "dead_letter_reason = 'outcome unknown' WHERE id = %s",
            (oid,),
        )
    assert admin.settle_review(oid, decision="mark_delivered", transaction_id="TX-1") is not None
    events, sms = _told(store, oid)
    assert [(e["type"], e["generation"]) for e in events] == [
        ("order.failed", 0),
        ("order.fulfilled", 1),
    ]
    assert json.loads(events[1]["body"])["transaction_id"] == "TX-1"
    assert [(s["kind"], s["generation"]) for s in sms] == [("failed", 0), ("delivered", 1)]
