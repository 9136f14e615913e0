"""The circuit breaker's rule, pure: when the circuit opens and for how long.

That the Redis script follows this same rule is proved on a real Redis in
tests/integration/test_breaker.py.
"""

from __future__ import annotations

import pytest

from fulfillment.domain.breaker import BreakerPolicy

POLICY = BreakerPolicy(min_calls=20, failure_ratio=0.5, quiet_failures=2)


@pytest.mark.parametrize(
    ("calls", "failures", "opens"),
    [
        (2, 2, True),  # a quiet hour: a POST timed out, its status lookup failed
        (1, 1, False),  # one failure is not yet an outage
        (3, 2, False),  # the vendor answered one call: not down, and too few for the ratio
        (19, 19, True),  # every call failed, still below min_calls
        (20, 10, True),  # the ratio rule
        (20, 9, False),
        (40, 20, True),
        (0, 0, False),
    ],
)
def test_should_open(calls: int, failures: int, opens: bool) -> None:
    assert POLICY.should_open(calls, failures) is opens


def test_the_open_periods_are_open_for_each_opening_in_a_row() -> None:
    policy = BreakerPolicy(open_s=30, max_open_s=300)
    periods = policy.open_periods()
    assert periods == (30.0, 60.0, 120.0, 240.0, 300.0)
    for n in range(1, 12):  # the last period repeats for every later opening
        assert periods[min(n, len(periods)) - 1] == policy.open_for(n)
    assert BreakerPolicy(open_s=500, max_open_s=300).open_periods() == (300.0,)
