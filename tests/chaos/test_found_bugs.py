"""What the chaos run found, each reduced to a deterministic reproduction.

Every test states the behaviour the fleet should have; each was a strict xfail until the
code under test was fixed (f88f443), and now guards against the bug coming back.
docs/RELIABILITY.md tells each story with the chaos run's evidence.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from db.store import Store
from fulfillment.dev.simulator.faults import FaultConfig
from fulfillment.dev.simulator.server import Simulator
from fulfillment.domain.retry import RetryPolicy
from fulfillment.fleet.breaker import BreakerPolicy, VendorBreaker
from fulfillment.services.delivery import fulfil
from fulfillment.services.ports import DeadLetterNotice, FulfilDeps, VendorConnection, routes_to
from fulfillment.vendors.atishare import AtIshareClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

KEY, SECRET = "bug-key", "bug-secret"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(api_key=KEY, api_secret=SECRET, faults=FaultConfig(), seed=1)
    simulator.start()
    yield simulator
    simulator.stop()


def test_a_lost_answer_on_the_last_attempt_is_verified_before_dead_lettering(
    store: Store, sim: Simulator
) -> None:
    order_id = str(uuid.uuid4())
    store.insert_order(
        order_id, phone_number="0241234567", network="at-ishare", size_gb=2, package_name=None
    )
    # attempts 1, 2: 503 (each followed by a status check: failed, and one before the next
    # attempt); attempt 3 is delivered but its answer lost, and the check after it fails.
    sim.chaos.scripts.set_from_json(
        {
            "reference": order_id,
            "responses": ["error", "error", "drop_after_delivery"],
            "status_responses": ["ok", "ok", "ok", "ok", "error"],
        }
    )
    client = AtIshareClient(sim.url, KEY, SECRET, connect_timeout_s=1, read_timeout_s=1)
    dead: list[DeadLetterNotice] = []
    deps = FulfilDeps(
        store=store,
        routes=routes_to(VendorConnection("at-ishare", "AT-iShare", client), "at-ishare"),
        policy=RetryPolicy((0.0,), max_attempts=3, max_deferrals=5, max_status_checks=5,
                           status_check_delay_s=0.0),
        enabled=True,
        claim_ttl_s=30.0,
        worker="bug",
        publish_retry=lambda *_: None,
        publish_dead_letter=dead.append,
        alert=lambda *_: None,
    )  # fmt: skip
    try:
        for _ in range(3):  # the first message, then the retry after each failed attempt
            fulfil(order_id, deps)
    finally:
        client.close()

    assert sim.ledger.deliveries(order_id) == 1  # the vendor delivered attempt 3
    row = store.order_row(order_id)
    assert row is not None
    assert row["dead_letter_reason"] is None, f"dead-lettered a delivered order: {row}"
    assert not dead
    assert row["fulfillment_status"] in ("success", "processing")  # or: awaiting its check


@pytest.fixture
def breaker_client(redis_url: str, redis_namespace: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_a_rate_limit_pause_ends_when_retry_after_has_passed(
    breaker_client: redis.Redis, redis_namespace: str
) -> None:
    now = [1_000_000.0]
    breaker = VendorBreaker(
        breaker_client, redis_namespace, BreakerPolicy(open_s=30.0), clock=lambda: now[0]
    )
    breaker.trip(1.0, "rate_limited", alert=False)  # what a 429 with Retry-After: 1 does
    now[0] += 1.5
    first, second = breaker.allow(), breaker.allow()
    if first.probe:  # what happens today: the pause became a half-open circuit
        breaker.record(success=False, probe=True)  # the probe met an ordinary 5xx
    third = breaker.allow()
    assert second.allowed and third.allowed, (
        f"the vendor asked for 1 s; the fleet waits {breaker.state()['until'] - now[0]:.0f} s"
    )


def test_a_probe_nobody_reports_is_given_to_another_worker_after_the_call_deadline(
    breaker_client: redis.Redis, redis_namespace: str
) -> None:
    # As fulfillment.runtime.bootstrap.breaker() builds it; vendor calls end within 3 s here
    # (connect 1 s + 2 x read 1 s: the client's total deadline).
    breaker = VendorBreaker(
        breaker_client, redis_namespace, BreakerPolicy(open_s=0.5), probe_ttl_s=3.0
    )
    # an open circuit (not a pause: pauses need no probe)
    for _ in range(30):
        breaker.record(success=False)
    time.sleep(0.6)
    taken = breaker.allow()
    assert taken.probe  # ...and the worker holding it is killed: nothing is ever recorded
    time.sleep(3.5)
    assert breaker.allow().allowed, "the fleet still waits for a probe that will never end"


def test_an_infinite_retry_after_does_not_stop_the_fleet_forever(
    breaker_client: redis.Redis, redis_namespace: str
) -> None:
    now = [1_000_000.0]
    breaker = VendorBreaker(breaker_client, redis_namespace, BreakerPolicy(), clock=lambda: now[0])
    breaker.trip(float("inf"), "rate_limited", alert=False)  # RateLimited.retry_after_s
    now[0] += 24 * 3600
    permit = breaker.allow()
    assert permit.allowed or permit.retry_in_s < 3600, f"a day later: {permit}"
