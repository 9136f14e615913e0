"""A fleet-wide vendor rate limit, measured at the vendor's side (issue 4)."""

from __future__ import annotations

import pytest

from fulfillment.dev.launcher import WORKER

from .conftest import WORKER_READY, Fleet

pytestmark = [pytest.mark.e2e]

LIMIT = 10  # vendor requests per second, fleet-wide
ORDERS = 60


def test_two_worker_processes_stay_under_the_fleet_wide_limit(fleet: Fleet) -> None:
    fleet.stop_consumers()
    fleet.env.update({"VENDOR_RATE_LIMIT_PER_S": str(LIMIT), "VENDOR_MAX_CONCURRENCY": "4"})
    # Two processes of 8 threads each would do hundreds per second against this simulator.
    fleet.workers = fleet.spawn_type(WORKER, env={"WORKER_PROCESSES": "2", "WORKER_THREADS": "8"})
    fleet.workers.wait_for_output(WORKER_READY)
    fleet.start_deadletter()
    orders = fleet.publish_new_orders(ORDERS)
    fleet.wait_until(
        lambda: all(fleet.status(o) == "success" for o in orders),
        60,
        what="every order to succeed under the limit",
    )
    with fleet.store.pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*) AS n, extract(epoch FROM max(created_at) - min(created_at)) AS span, "
            "(SELECT max(c) FROM (SELECT count(*) AS c FROM fulfillment_logs "
            " WHERE action = 'purchase' GROUP BY date_trunc('second', created_at)) s) AS peak "
            "FROM fulfillment_logs WHERE action = 'purchase'"
        ).fetchone()
    assert row is not None
    rate = (row["n"] - 1) / float(row["span"])
    print(
        f"\nvendor purchases {row['n']} in {float(row['span']):.2f}s: "
        f"{rate:.1f}/s observed under a limit of {LIMIT}/s (peak second {row['peak']})"
    )
    assert row["n"] == ORDERS
    assert rate <= LIMIT * 1.15
    assert row["peak"] <= LIMIT + 1  # log rows land just after the vendor answered
    assert sum(fleet.deliveries(o) for o in orders) == ORDERS
