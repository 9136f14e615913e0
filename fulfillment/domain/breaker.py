"""The vendor circuit breaker's rule, pure: when to open, how long to stay open.

The shared state lives in Redis (workers/breaker.py); this module only decides.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    #: seconds of recent vendor calls, across the fleet, that the failure ratio looks at
    window_s: int = 60
    #: fewer calls than this in the window never open the circuit
    min_calls: int = 20
    #: open when at least this share of the window's calls failed for vendor-wide reasons
    failure_ratio: float = 0.5
    #: first open period; each failed half-open probe doubles it up to max_open_s
    open_s: float = 30.0
    max_open_s: float = 300.0

    def should_open(self, calls: int, failures: int) -> bool:
        return calls >= self.min_calls and failures >= self.failure_ratio * calls

    def open_for(self, consecutive_openings: int) -> float:
        """How long the n-th opening in a row (1-based) lasts."""
        n = max(consecutive_openings, 1)
        return float(min(self.open_s * 2 ** (n - 1), self.max_open_s))
