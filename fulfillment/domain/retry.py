"""The retry policy: the backoff table and the budgets the decision (domain/decision.py) spends."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    delays: tuple[float, ...]  # seconds after failed attempt 1, 2, 3...
    max_attempts: int
    max_deferrals: int
    max_status_checks: int
    status_check_delay_s: float

    def delay_after(self, attempt: int) -> float:
        """Delay after failed attempt N (1-based); the last entry repeats past the table."""
        if not self.delays:
            return 0.0
        return self.delays[min(max(attempt, 1), len(self.delays)) - 1]
