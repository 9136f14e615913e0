"""The customer and the platform hear every outcome, once: orders run through the Procfile's
worker, dead-letter, notify and reconciler processes against the simulated vendor, an SMS
provider and a platform receiver that all fail at times. Every delivered order got one
success SMS and one order.fulfilled event; every finally failed order one failure SMS (or a
skipped record for a number that cannot receive one) and one order.failed event advising a
refund; nothing was sent twice at the provider, no event changed its body or came out of
order (the fleet fixture's teardown checks the simulators' counts of those)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Fleet

pytestmark = [pytest.mark.e2e]

DELIVERED, FAILING = 14, 4
FINAL_SMS = {"delivered", "failed", "undeliverable", "skipped"}


def _rows(fleet: Fleet, sql: str) -> list[dict[str, Any]]:
    with fleet.store.pool.connection() as conn:
        return [dict(r) for r in conn.execute(sql).fetchall()]


def _settled(fleet: Fleet, orders: list[str]) -> bool:
    statuses = {fleet.status(oid) for oid in orders}
    if not statuses <= {"success", "failed"}:
        return False
    if any(
        fleet.order(oid)["dead_letter_reason"] is None
        for oid in orders
        if fleet.status(oid) == "failed"
    ):
        return False
    open_sms = _rows(fleet, "SELECT id FROM customer_sms WHERE status IN ('queued', 'sent')")
    open_events = _rows(fleet, "SELECT id FROM platform_events WHERE status <> 'delivered'")
    return not open_sms and not open_events


def test_every_outcome_is_told_once_through_faults(fleet: Fleet) -> None:
    fleet.sms_faults(
        error_rate=0.15,
        timeout_rate=0.1,
        lost_rate=0.1,
        garbage_rate=0.05,
        rate_limit_rate=0.1,
        timeout_seconds=1.5,
        delivery_seconds=0.3,
        retry_after_seconds=0,
    )
    fleet.platform_faults(error_rate=0.2, lost_rate=0.1, timeout_rate=0.1, timeout_seconds=1.5)
    fleet.start_notify()
    fleet.start_reconciler_loop()
    delivered = [fleet.new_order() for _ in range(DELIVERED)]
    refused = [fleet.new_order() for _ in range(FAILING - 1)]
    for oid in refused:
        fleet.script(oid, ["invalid_phone"])  # the vendor refuses: nothing delivered
    # a fixed line: refused before any purchase, and no SMS can reach it
    no_sms = fleet.new_order(phone="+233302123456")
    failing = [*refused, no_sms]
    everything = delivered + failing
    for oid in everything:
        fleet.publish(oid)
    fleet.wait_until(lambda: _settled(fleet, everything), 90, what="every outcome told")

    sms = _rows(fleet, "SELECT * FROM customer_sms ORDER BY id")
    events = _rows(fleet, "SELECT * FROM platform_events ORDER BY id")
    by_order: dict[str, list[tuple[str, str]]] = {}
    for row in sms:
        by_order.setdefault(str(row["order_id"]), []).append((row["kind"], row["status"]))
    for oid in delivered:
        assert fleet.status(oid) == "success"
        assert [k for k, _ in by_order[oid]] == ["delivered"], by_order[oid]
    for oid in refused:
        assert [k for k, _ in by_order[oid]] == ["failed"], by_order[oid]
        assert by_order[oid][0][1] != "skipped", by_order[oid]
    assert by_order[no_sms] == [("failed", "skipped")]
    assert {row["status"] for row in sms} <= FINAL_SMS
    # at the provider: one send per SMS that was sent, and its text the stored one
    ledger = fleet.sms_ledger()
    sent = [r for r in sms if r["status"] != "skipped"]
    assert len(ledger["references"]) == len(sent)
    for row in sent:
        entry = ledger["references"][row["client_reference"]]
        assert entry["sends"] == 1, (row["client_reference"], entry)
        assert entry["content"] == row["content"]
        assert "233241234567" not in row["content"]
    # at the platform: one event per outcome, delivered, the type and refund as DESIGN.md says
    types = {str(e["order_id"]): e["type"] for e in events}
    assert len(events) == len(everything) == len(types)
    received = fleet.platform_ledger()
    assert set(received["events"]) == {str(e["event_id"]) for e in events}
    for event in events:
        body = json.loads(event["body"])
        seen = received["events"][str(event["event_id"])]
        assert seen["type"] == event["type"] == body["type"]
        if str(event["order_id"]) in delivered:
            assert event["type"] == "order.fulfilled" and body["refund_advised"] is False
        else:
            assert event["type"] == "order.failed" and body["refund_advised"] is True
    totals = received["totals"]
    assert totals["faults"] or ledger["totals"]["faults"], "no fault was injected"
    assert fleet.vendor_breaches() == []


def test_a_killed_notifier_and_a_lost_redis_lose_nothing_and_send_nothing_twice(
    fleet: Fleet,
) -> None:
    fleet.sms_faults(lost_rate=0.3, timeout_seconds=1.5, delivery_seconds=0.3)
    fleet.platform_faults(lost_rate=0.3)
    fleet.start_reconciler_loop()
    orders = fleet.publish_new_orders(10)
    fleet.wait_until(
        lambda: all(fleet.status(oid) == "success" for oid in orders), 60, what="deliveries"
    )
    notify = fleet.start_notify()
    fleet.wait_until(
        lambda: _rows(fleet, "SELECT id FROM customer_sms WHERE attempts > 0"),
        30,
        what="the notifier to start sending",
    )
    notify.kill()  # SIGKILL of the group, mid-send perhaps
    fleet.flush_namespace()  # Redis lost: every queued and delayed notifier message gone
    fleet.start_notify()
    fleet.wait_until(lambda: _settled(fleet, orders), 90, what="every outcome told")
    sms = _rows(fleet, "SELECT * FROM customer_sms")
    assert sorted(str(r["order_id"]) for r in sms) == sorted(orders)
    ledger = fleet.sms_ledger()
    assert all(ledger["references"][r["client_reference"]]["sends"] == 1 for r in sms)
    received = fleet.platform_ledger()
    assert received["totals"]["distinct"] == len(orders)
    assert fleet.vendor_breaches() == []
