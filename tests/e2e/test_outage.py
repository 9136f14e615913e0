"""A vendor outage longer than the whole retry table dead-letters nothing (issue 4)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from .conftest import Fleet

pytestmark = [pytest.mark.e2e]

ORDERS = 20
OUTAGE_S = 15  # the retry table here is 1 + 2 + 3 = 6 s


def test_outage_longer_than_the_retry_table_dead_letters_nothing(fleet: Fleet) -> None:
    fleet.stop_consumers()
    fleet.env.update(
        {
            "BREAKER_WINDOW_S": "10",
            "BREAKER_MIN_CALLS": "3",
            "BREAKER_FAILURE_RATIO": "0.5",
            "BREAKER_OPEN_S": "1",
            "BREAKER_MAX_OPEN_S": "2",
        }
    )
    fleet.start_consumers()
    fleet.start_reconciler_loop()
    fleet.vendor_down(OUTAGE_S)
    down_until = time.monotonic() + OUTAGE_S
    orders = fleet.publish_new_orders(ORDERS)

    def settled() -> bool:
        rows = [fleet.order(oid) for oid in orders]
        return all(r["fulfillment_status"] == "success" or r["dead_lettered_at"] for r in rows)

    fleet.wait_until(settled, OUTAGE_S + 60, what="every order to settle after the outage")
    assert time.monotonic() >= down_until - 1  # they did wait the outage out
    rows = {oid: fleet.order(oid) for oid in orders}
    dead = [oid for oid, r in rows.items() if r["dead_lettered_at"]]
    delivered = {oid: fleet.deliveries(oid) for oid in orders}
    attempts = Counter(r["fulfillment_attempts"] for r in rows.values())
    vendor_alerts = fleet.notifications("vendor_circuit_open")
    print(
        f"\noutage {OUTAGE_S}s: orders affected {ORDERS}, dead-lettered {len(dead)}, "
        f"delivered after recovery {sum(1 for n in delivered.values() if n == 1)}, "
        f"duplicates {sum(1 for n in delivered.values() if n > 1)}, "
        f"attempts used {dict(sorted(attempts.items()))}, "
        f"circuit-open notifications {len(vendor_alerts)}"
    )
    assert dead == []
    assert all(r["fulfillment_status"] == "success" for r in rows.values())
    assert set(delivered.values()) == {1}
    # Only the calls before the circuit opened spent an attempt; nobody came near the limit.
    assert max(attempts) <= 2
    assert attempts[1] >= ORDERS - 3
    assert len(vendor_alerts) >= 1


QUIET_OUTAGE_S = 40


def test_one_order_in_a_quiet_hour_rides_out_an_outage_spending_nothing(fleet: Fleet) -> None:
    """Issue 9: with one order there are never BREAKER_MIN_CALLS calls in the window, yet the
    fleet must see the vendor is down (every recent call failed) and spare the order's attempt
    and its status checks (3 s apart, a budget of 4: the outage would burn them all)."""
    fleet.stop_consumers()
    fleet.env.update(
        {
            "STATUS_CHECK_DELAY_S": "3",
            "MAX_STATUS_CHECKS": "4",
            "BREAKER_OPEN_S": "5",
            "BREAKER_MAX_OPEN_S": "10",
        }
    )
    fleet.start_consumers()
    fleet.start_reconciler_loop()
    fleet.vendor_down(QUIET_OUTAGE_S)
    down_until = time.monotonic() + QUIET_OUTAGE_S
    (oid,) = fleet.publish_new_orders(1)
    fleet.wait_for_status(oid, "success", timeout=QUIET_OUTAGE_S + 40)
    assert time.monotonic() >= down_until - 1
    row = fleet.order(oid)
    assert row["dead_lettered_at"] is None
    # no attempt and no status check spent on the outage
    assert (row["fulfillment_attempts"], row["fulfillment_status_checks"]) == (1, 0)
    assert [p for p in fleet.purchases(oid) if p[1] == "success"] == [(1, "success", None)]
    vendor = fleet.vendor_entry(oid)
    assert vendor["deliveries"] == 1
