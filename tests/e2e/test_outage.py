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
