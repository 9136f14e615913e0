"""The admin web's guard against token guessing (fulfillment/web/security.py: AuthThrottle)."""

from __future__ import annotations

from fulfillment.web.security import AuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_refused_until_its_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    throttle = AuthThrottle(limit=3, window_s=60, clock=clock)
    for _ in range(2):
        throttle.failed("10.0.0.1")
        clock.now += 10
    assert throttle.retry_after("10.0.0.1") == 0  # two of three: still allowed
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 40  # the first failure was 20 s ago
    assert throttle.retry_after("10.0.0.2") == 0  # other addresses are not affected
    clock.now += 40
    assert throttle.retry_after("10.0.0.1") == 0


def test_memory_is_bounded_by_forgetting_the_longest_unseen_addresses() -> None:
    throttle = AuthThrottle(limit=1, window_s=60, clock=Clock())
    throttle.MAX_CLIENTS = 3
    for n in range(5):
        throttle.failed(f"10.0.0.{n}")
    assert throttle.retry_after("10.0.0.0") == 0 and throttle.retry_after("10.0.0.1") == 0
    assert throttle.retry_after("10.0.0.4") == 60
