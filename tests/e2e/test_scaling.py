"""Two worker groups under honcho (`-c worker=2`) share one Redis and one PostgreSQL."""

from __future__ import annotations

import random

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import BIN, ROOT, Fleet

pytestmark = [pytest.mark.e2e]
ORDERS = 40


def outcomes(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "fulfillment_outcomes_total"
    )


def test_two_worker_groups_share_the_work_and_deliver_once(fleet: Fleet) -> None:
    fleet.stop_consumers()
    base = random.randrange(30000, 34000, 100)
    fleet.env.update(
        {
            "WORKER_PROCESSES": "1",
            "WORKER_THREADS": "4",
            "PORT": str(base),
            "PATH": f"{BIN}:{fleet.env.get('PATH', '')}",
        }
    )
    honcho = fleet.spawn(
        "honcho",
        [
            str(BIN / "honcho"),
            "-f",
            str(ROOT / "Procfile"),
            "-d",
            str(ROOT),
            "start",
            "-c",
            "worker=2",
            "worker",
            "deadletter",
        ],
    )
    fleet.wait_until(
        lambda: honcho.text().count("Worker process is ready for action") >= 3,
        30,
        what="both worker groups and the dead-letter group to be ready",
    )
    # A vendor slow enough that one group cannot drain all 40 orders (about 2.5 s alone) before
    # the other's consumer, polling an empty queue once a second, fetches its share.
    fleet.faults(latency_ms=250)
    orders = fleet.publish_new_orders(ORDERS)
    fleet.wait_until(
        lambda: all(fleet.status(o) == "success" for o in orders),
        60,
        what="every order delivered by the two groups",
    )
    with fleet.store.pool.connection() as conn:
        workers = {
            r["worker"]
            for r in conn.execute(
                "SELECT DISTINCT worker FROM fulfillment_logs WHERE action = 'purchase'"
            ).fetchall()
        }
    assert len(workers) == 2, workers  # one process in each group, both took orders
    assert [fleet.deliveries(o) for o in orders] == [1] * ORDERS
    # Each group serves its own metrics (honcho's PORT + 4000), together they count every order.
    assert outcomes(base + 4000) + outcomes(base + 4001) == ORDERS
