"""The vendor circuit breaker's rule, pure: when to open, how long to stay open.

The shared state lives in Redis (workers/breaker.py), whose script follows this rule: the
periods come from here as arguments, and a test runs call sequences through the script and
through should_open and compares.
"""

from __future__ import annotations

from dataclasses import dataclass

#: open_periods() stops doubling here, whatever the ratio of max_open_s to open_s
_MAX_PERIODS = 32


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    #: seconds of recent vendor calls, across the fleet, that the rule looks at
    window_s: int = 60
    #: the ratio rule needs at least this many calls in the window
    min_calls: int = 20
    #: open when at least this share of the window's calls failed for vendor-wide reasons
    failure_ratio: float = 0.5
    #: ...or when at least this many failed and none succeeded, however few calls there were
    quiet_failures: int = 2
    #: first open period; each failed half-open probe doubles it up to max_open_s
    open_s: float = 30.0
    max_open_s: float = 300.0

    def should_open(self, calls: int, failures: int) -> bool:
        """Whether a window of `calls` vendor calls, `failures` of them vendor-wide failures,
        shows the vendor down. Every call failing counts at any volume (a quiet hour); else
        most calls failing, once there are enough calls to tell."""
        if failures >= self.quiet_failures and failures == calls:
            return True
        return calls >= self.min_calls and failures >= self.failure_ratio * calls

    def open_for(self, consecutive_openings: int) -> float:
        """How long the n-th opening in a row (1-based) lasts."""
        n = max(consecutive_openings, 1)
        return float(min(self.open_s * 2 ** (n - 1), self.max_open_s))

    def open_periods(self) -> tuple[float, ...]:
        """open_for(1), open_for(2)... up to the first that reaches max_open_s (at most 32);
        the last one lasts for every later opening."""
        periods = [self.open_for(1)]
        while periods[-1] < self.max_open_s and len(periods) < _MAX_PERIODS:
            periods.append(self.open_for(len(periods) + 1))
        return tuple(periods)
