"""The fleet-wide vendor gate (Dramatiq's Redis rate limiters) on a real Redis."""

from __future__ import annotations

import contextlib
import time

import pytest
import redis

from fulfillment.fleet.ratelimit import VendorGate

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("bound_s", "most_s"), [(None, 3.0), (0.1, 0.6), (-1.0, 0.3)])
def test_a_slot_is_waited_for_no_longer_than_the_caller_allows(
    redis_url: str, redis_namespace: str, bound_s: float | None, most_s: float
) -> None:
    """One call at a time, and it is taken: the next caller gives up after the gate's own
    wait, or sooner when its claim's lease allows less (a negative bound: one try)."""
    gate = VendorGate(
        redis.Redis.from_url(redis_url),
        redis_namespace,
        per_second=0,
        concurrent=1,
        max_wait_s=1.0,
    )
    with gate.slot() as first:
        assert first
        started = time.monotonic()
        with gate.slot(max_wait_s=bound_s) as second:
            waited = time.monotonic() - started
            assert not second
    expected = 1.0 if bound_s is None else max(bound_s, 0.0)
    assert expected <= waited < most_s
    with gate.slot(max_wait_s=0.0) as again:  # released: free at once
        assert again


def test_a_killed_workers_slot_is_freed_after_its_lease_while_the_fleet_is_busy(
    redis_url: str, redis_namespace: str
) -> None:
    """Finding 8: a worker SIGKILLed during a vendor call never releases its slot. Its slot
    must come back after the lease even while other workers take and release slots all the
    time (with Dramatiq's ConcurrentRateLimiter that traffic kept the count alive)."""

    def worker_gate() -> VendorGate:
        client = redis.Redis.from_url(redis_url)
        return VendorGate(client, redis_namespace, per_second=0, concurrent=2, call_ttl_s=1.0)

    killed = worker_gate().slot(max_wait_s=0.0)
    assert killed.__enter__()  # ...and the worker dies: no __exit__, ever
    busy = worker_gate()
    calls = 0
    deadline = time.monotonic() + 2.5  # more than twice the lease
    while time.monotonic() < deadline:
        with busy.slot(max_wait_s=0.5) as admitted:
            assert admitted
            calls += 1
            time.sleep(0.02)
    assert calls > 20
    fleet = worker_gate()
    with fleet.slot(max_wait_s=0.2) as first, fleet.slot(max_wait_s=0.2) as second:
        assert first and second, "the dead worker's slot is still taken"


def test_the_gate_never_holds_more_slots_than_its_limit(
    redis_url: str, redis_namespace: str
) -> None:
    gates = [
        VendorGate(redis.Redis.from_url(redis_url), redis_namespace, per_second=0, concurrent=3)
        for _ in range(2)
    ]
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(gates[i % 2].slot(max_wait_s=0.0)) for i in range(5)]
    assert held == [True, True, True, False, False]
    with gates[0].slot(max_wait_s=0.0) as again:  # all released
        assert again


def test_redis_down_lets_calls_through() -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=None)
    gate = VendorGate(dead, "x", per_second=5, concurrent=2)
    with gate.slot(max_wait_s=0.0) as admitted:
        assert admitted
