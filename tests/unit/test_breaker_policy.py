"""How long the circuit stays open, opening after opening. When it opens is the Redis
script's rule, proved on a real Redis in tests/integration/test_breaker.py."""

from __future__ import annotations

from fulfillment.fleet.breaker import BreakerPolicy

POLICY = BreakerPolicy(min_calls=20, failure_ratio=0.5, quiet_failures=2)


def test_the_open_periods_are_open_for_each_opening_in_a_row() -> None:
    policy = BreakerPolicy(open_s=30, max_open_s=300)
    periods = policy.open_periods()
    assert periods == (30.0, 60.0, 120.0, 240.0, 300.0)
    for n in range(1, 12):  # the last period repeats for every later opening
        assert periods[min(n, len(periods)) - 1] == policy.open_for(n)
    assert BreakerPolicy(open_s=500, max_open_s=300).open_periods() == (300.0,)
