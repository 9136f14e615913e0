"""The retry rule: what to do after a failed vendor call. Pure; tested without servers."""

from __future__ import annotations

from dataclasses import dataclass

from fulfillment.errors import (
    PermanentVendorError,
    RateLimited,
    TransientVendorError,
    VendorError,
)


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


@dataclass(frozen=True, slots=True)
class Retry:
    delay_s: float
    consumes_attempt: bool


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str


Decision = Retry | DeadLetter


def decide(
    attempt: int, error: VendorError, policy: RetryPolicy, *, deferrals: int = 0
) -> Decision:
    """After purchase attempt `attempt` (1-based) failed with `error`: retry or dead-letter.

    `deferrals` counts earlier retries that kept their attempt (rate limits).
    """
    if isinstance(error, PermanentVendorError):
        return DeadLetter(f"vendor rejected the order: {error.code}")
    if isinstance(error, RateLimited):
        if deferrals + 1 > policy.max_deferrals:
            return DeadLetter(f"vendor rate-limited the order {deferrals + 1} times")
        wait = error.retry_after_s if error.retry_after_s is not None else policy.delay_after(1)
        return Retry(delay_s=max(wait, 0.0), consumes_attempt=False)
    if isinstance(error, TransientVendorError) and not error.consumes_attempt:
        if deferrals + 1 > policy.max_deferrals:
            return DeadLetter(f"vendor deferred the order {deferrals + 1} times: {error.code}")
        return Retry(delay_s=policy.delay_after(1), consumes_attempt=False)
    if attempt >= policy.max_attempts:
        return DeadLetter(f"{attempt} attempts used up; last error {error.code}")
    return Retry(delay_s=policy.delay_after(attempt), consumes_attempt=True)


def decide_status_check(checks_done: int, policy: RetryPolicy) -> Decision:
    """After a status check left the outcome open (pending, or the check itself failed)."""
    if checks_done >= policy.max_status_checks:
        return DeadLetter(
            f"vendor outcome still unknown after {checks_done} status checks; check by hand"
        )
    return Retry(delay_s=policy.status_check_delay_s, consumes_attempt=False)
