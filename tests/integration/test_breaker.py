"""The shared circuit breaker on a real Redis, with a fake clock."""

from __future__ import annotations

import pytest
import redis

from fulfillment.domain.breaker import BreakerPolicy
from workers.breaker import VendorBreaker

pytestmark = pytest.mark.integration
POLICY = BreakerPolicy(window_s=10, min_calls=5, failure_ratio=0.5, open_s=4, max_open_s=10)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def breaker(redis_url: str, redis_namespace: str) -> tuple[VendorBreaker, Clock, list[float]]:
    clock = Clock()
    opened: list[float] = []
    b = VendorBreaker(
        redis.Redis.from_url(redis_url),
        redis_namespace,
        POLICY,
        on_open=lambda until, _reason: opened.append(until),
        clock=clock,
    )
    return b, clock, opened


def test_opens_once_when_most_calls_fail_then_probes_and_closes(breaker: tuple) -> None:
    b, clock, opened = breaker
    for _ in range(3):
        b.record(success=True)
    for _ in range(3):
        assert b.allow().allowed
        b.record(success=False)
    assert opened == [clock.now + 4]  # 3 of 6 failed: open, admins told once
    b.record(success=False)  # late answers while open change nothing
    assert len(opened) == 1
    denied = b.allow()
    assert not denied.allowed and denied.retry_in_s == pytest.approx(4)
    clock.now += 4.1
    probe = b.allow()
    assert probe.allowed and probe.probe
    assert not b.allow().allowed  # one probe at a time across the fleet
    b.record(success=False, probe=True)  # still down: open again, for longer
    assert b.state()["state"] == "open"
    assert b.allow().retry_in_s == pytest.approx(8)
    clock.now += 8.1
    probe = b.allow()
    assert probe.probe
    b.record(success=True, probe=True)
    assert b.state()["state"] == "closed"
    assert b.allow() == b.allow()  # closed: everyone through
    assert b.allow().allowed


def test_few_calls_or_old_failures_do_not_open(breaker: tuple) -> None:
    b, clock, opened = breaker
    for _ in range(4):
        b.record(success=False)  # below min_calls
    assert opened == []
    clock.now += 11  # those fell out of the window
    for _ in range(4):
        b.record(success=True)
    b.record(success=False)
    assert opened == []


def test_a_success_never_opens_the_circuit(breaker: tuple) -> None:
    """Only a failure can tip the window: a success that brings it up to min_calls while
    failures are already at the ratio leaves it closed; the next failure opens it."""
    b, _clock, opened = breaker
    for _ in range(4):
        b.record(success=False)
    b.record(success=True)  # 4 of 5 failed, but a success is no evidence of an outage
    assert opened == [] and b.allow().allowed
    b.record(success=False)
    assert len(opened) == 1 and not b.allow().allowed


def test_a_pause_and_the_circuit_are_read_together(breaker: tuple) -> None:
    b, clock, opened = breaker
    b.trip(2.0, "rate_limited", alert=False)
    denied = b.allow()
    assert not denied.allowed and denied.retry_in_s == pytest.approx(2)
    clock.now += 2.1
    assert b.allow().allowed  # a pause ends by itself: no probe
    assert opened == []


def test_redis_down_fails_open() -> None:
    b = VendorBreaker(redis.Redis(port=1, socket_connect_timeout=0.2, retry=None), "x", POLICY)
    assert b.allow().allowed
    b.record(success=False)  # logged, not raised
