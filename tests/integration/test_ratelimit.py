"""The fleet-wide vendor gate (Dramatiq's Redis rate limiters) on a real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from workers.ratelimit import VendorGate

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
