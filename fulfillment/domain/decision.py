"""What to do next with an order: the fulfilment decision, one pure rule for every caller.

The worker, the reconciler, the vendor callback and the dead-letter consumer all ask the same
three questions here, and none decides on its own:

- `first_step`: an order was just claimed; buy, or look its reference up first?
- `after_lookup`: the vendor answered a status lookup (or did not); what now?
- `after_purchase`: the vendor answered a purchase (or did not); what now?

Each answer is a `Decision`: the next `Step` and the order's counters after it (`Facts`), so
the attempt accounting (what counts as an attempt, a status check or a deferral, and what
is spared and why) lives here too.

The rule's core, whatever spared an attempt, whoever asks and whatever an admin did: a POST
whose outcome is not known (no answer, 5xx, timeout, a lost worker) leaves `in_flight` set,
and while it is set the only vendor call allowed is a lookup. Only the vendor's "never
received" (not found) or "failed" clears it and allows another POST. An outcome that stays
unknown goes to a human as outcome unknown, never as failed-and-refundable.

    state (Facts)                 vendor answer        next step (worker)
    ----------------------------  -------------------  ------------------------------------
    never bought                  -                    Buy(1)
    in flight / pending / retry   -                    Lookup
    any                           delivered            Complete
    any                           pending              Wait(status check) | Human(unknown)
    in flight, lost or retry      not found / failed   Buy(n+1) | Human(failed, confirmed)
    pending at vendor             failed               Wait(backoff) | Human(failed)
    just POSTed, outcome unknown  not found / failed   Wait(backoff) | Human(failed)
    in flight or pending          lookup failed        Wait(status check) | Human(unknown)
    settled failure (a retry)     lookup failed        Wait(status check) | Human(failed)
    any, vendor down              lookup failed        Defer (nothing spent)
    POSTed                        unknown              Lookup at once
    POSTed                        failed               Wait(backoff) | Human(failed)
    POSTed                        rejected (4xx)       Human(failed)
    POSTed                        held (429/402/401)   Wait(pause) | Human(failed): no attempt

The reconciler (recovery only) hands an order the vendor has nothing of back to a worker;
a callback changes nothing unless the lookup confirms delivery; the dead-letter consumer
sends a confirmed non-delivery to a human as failed and an unknown one as outcome unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from fulfillment.domain.errors import (
    InsufficientBalance,
    OutcomeUnknown,
    PermanentVendorError,
    RateLimited,
    VendorError,
    VendorUnauthorized,
)
from fulfillment.domain.retry import RetryPolicy


class Answer(StrEnum):
    """What the vendor's reply means for the order, whatever its protocol."""

    DELIVERED = "delivered"  # purchase 200 success, lookup success
    PENDING = "pending"  # accepted, not finished
    FAILED = "failed"  # the vendor says the purchase failed: nothing delivered
    NOT_FOUND = "not_found"  # lookup 404: the vendor never received the reference
    UNKNOWN = "unknown"  # no readable answer: timeout, dropped connection, 5xx, garbage
    REJECTED = "rejected"  # permanent 4xx: the vendor refuses the order itself
    HELD = "held"  # 429, 402, 401: nothing bought, for a reason that is not the order's


class Asker(StrEnum):
    WORKER = "worker"  # a fulfill_order message: may buy
    RECONCILER = "reconciler"  # recovery of an expired claim: never buys
    CALLBACK = "callback"  # the vendor's webhook: completes a confirmed delivery, nothing else
    DEAD_LETTER = "dead_letter"  # Dramatiq gave up: settle for a human


@dataclass(frozen=True, slots=True)
class Facts:
    """The order's recorded fulfilment state: what the decision reads and rewrites."""

    attempts: int  # purchase attempts spent
    in_flight: int | None  # the attempt whose POST may have reached the vendor, outcome unknown
    status_checks: int  # lookups spent on the current open outcome
    deferrals: int  # waits that kept their attempt (rate limits, balance, credentials)
    at_vendor: bool  # the vendor's last word was "pending"
    max_attempts: int  # the policy's, plus any an admin granted

    @property
    def outcome_open(self) -> bool:
        """The vendor may hold a delivery we do not know of: never fail, never re-buy blind."""
        return self.in_flight is not None or self.at_vendor


@dataclass(frozen=True, slots=True)
class Lookup:
    """Ask the vendor for the reference's status."""


@dataclass(frozen=True, slots=True)
class Buy:
    attempt: int


@dataclass(frozen=True, slots=True)
class Complete:
    """Delivered: the order succeeds."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Give the order back, due in delay_s; `open` says the vendor may hold it (processing)."""

    delay_s: float
    open: bool
    why: str  # status_check | backoff | held | requeued


@dataclass(frozen=True, slots=True)
class Defer:
    """The vendor is down (or no slot is free): give the order back; nothing is spent."""


@dataclass(frozen=True, slots=True)
class Leave:
    """Change nothing: the order keeps its schedule and its claim is released untouched."""


@dataclass(frozen=True, slots=True)
class Human:
    """A person decides. outcome_unknown: the vendor may have delivered (never refundable)."""

    reason: str
    outcome_unknown: bool


Step = Lookup | Buy | Complete | Wait | Defer | Leave | Human


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    facts: Facts


def first_step(facts: Facts, asker: Asker) -> Decision:
    """An order was just claimed: buy only when nothing was ever sent for it."""
    if facts.outcome_open or facts.attempts > 0:
        return Decision(Lookup(), facts)
    if asker is Asker.WORKER:
        return _buy_or_give_up(facts)
    if asker is Asker.RECONCILER:
        return Decision(Wait(0.0, open=False, why="requeued"), facts)
    # A callback or a dead letter for an order never bought: the vendor cannot know it.
    return Decision(Leave(), facts)


def after_lookup(
    facts: Facts,
    answer: Answer,
    policy: RetryPolicy,
    asker: Asker,
    *,
    vendor_down: bool = False,
    right_after_purchase: bool = False,
) -> Decision:
    """The vendor answered a status lookup (UNKNOWN: the lookup itself failed)."""
    if answer is Answer.DELIVERED:
        return Decision(Complete(), replace(_counted(facts), in_flight=None, at_vendor=False))
    if answer is Answer.PENDING:
        if asker is Asker.CALLBACK:
            return Decision(Leave(), facts)  # a repeat of what we know spends nothing
        held = replace(_counted(facts), in_flight=None, at_vendor=True)
        return _check_again(held, policy, unknown=True)
    if answer in (Answer.NOT_FOUND, Answer.FAILED):
        settled = replace(
            _counted(facts) if answer is Answer.FAILED else facts, in_flight=None, at_vendor=False
        )
        if asker is Asker.CALLBACK:
            return Decision(Leave(), facts)
        if asker is Asker.DEAD_LETTER:
            return Decision(Human(f"vendor confirms nothing delivered ({answer})", False), settled)
        if asker is Asker.RECONCILER:
            return Decision(Wait(0.0, open=False, why="requeued"), settled)
        if right_after_purchase or (facts.at_vendor and answer is Answer.FAILED):
            # Our own POST just failed, or a pending purchase failed: the backoff table applies.
            return _backoff(settled, policy)
        return _buy_or_give_up(settled)
    # The lookup itself failed: the outcome stays as open as it was.
    if asker is Asker.CALLBACK:
        return Decision(Leave(), facts)
    if asker is Asker.DEAD_LETTER:
        return Decision(Human(_unknown_reason(facts), facts.outcome_open), facts)
    if vendor_down:
        # The vendor is down for everyone: nothing is spent, not even the POST just made.
        spared = facts
        if right_after_purchase and facts.in_flight is not None:
            spared = replace(facts, attempts=min(facts.attempts, facts.in_flight - 1))
        return Decision(Defer(), spared)
    return _check_again(facts, policy, unknown=facts.outcome_open)


def after_purchase(
    facts: Facts,
    answer: Answer,
    policy: RetryPolicy,
    *,
    error_code: str | None = None,
    retry_after_s: float | None = None,
) -> Decision:
    """Purchase attempt facts.in_flight was sent and the vendor answered (or did not).

    The POST spends its attempt (facts.attempts counts it) unless the vendor held it."""
    attempt = facts.in_flight or facts.attempts
    if answer is Answer.DELIVERED:
        return Decision(Complete(), replace(facts, in_flight=None))
    if answer is Answer.PENDING:
        pending = replace(facts, in_flight=None, at_vendor=True, status_checks=0)
        return _check_again(pending, policy, unknown=True)
    if answer is Answer.UNKNOWN:
        return Decision(Lookup(), facts)  # the vendor may have delivered: ask at once
    if answer is Answer.REJECTED:
        done = replace(facts, in_flight=None)
        return Decision(Human(f"vendor rejected the order: {error_code}", False), done)
    if answer is Answer.HELD:
        held = replace(facts, in_flight=None, attempts=attempt - 1, deferrals=facts.deferrals + 1)
        if held.deferrals > policy.max_deferrals:
            return Decision(
                Human(f"vendor deferred the order {held.deferrals} times: {error_code}", False),
                held,
            )
        wait = retry_after_s if retry_after_s is not None else policy.delay_after(1)
        return Decision(Wait(max(wait, 0.0), open=False, why="held"), held)
    return _backoff(replace(facts, in_flight=None, at_vendor=False), policy, error_code)


# -- the accounting ----------------------------------------------------------------------


def _counted(facts: Facts) -> Facts:
    """The vendor has the in-flight POST (it answered about it): its attempt is spent,
    even one that was spared because the vendor looked down."""
    if facts.in_flight is None:
        return facts
    return replace(facts, attempts=max(facts.attempts, facts.in_flight))


def _buy_or_give_up(facts: Facts) -> Decision:
    if facts.attempts >= facts.max_attempts:
        return Decision(Human(f"{facts.attempts} attempts used up", False), facts)
    return Decision(Buy(facts.attempts + 1), facts)


def _backoff(facts: Facts, policy: RetryPolicy, error_code: str | None = None) -> Decision:
    if facts.attempts >= facts.max_attempts:
        last = f"; last error {error_code}" if error_code else ""
        return Decision(Human(f"{facts.attempts} attempts used up{last}", False), facts)
    delay = policy.delay_after(max(facts.attempts, 1))
    return Decision(Wait(delay, open=False, why="backoff"), replace(facts, status_checks=0))


def _check_again(facts: Facts, policy: RetryPolicy, *, unknown: bool) -> Decision:
    checks = replace(facts, status_checks=facts.status_checks + 1)
    if checks.status_checks >= policy.max_status_checks:
        return Decision(Human(_unknown_reason(checks), unknown), checks)
    return Decision(Wait(policy.status_check_delay_s, open=unknown, why="status_check"), checks)


def _unknown_reason(facts: Facts) -> str:
    if facts.outcome_open:
        return (
            f"vendor outcome still unknown after {facts.status_checks} status checks; check by hand"
        )
    return f"vendor unreachable after {facts.status_checks} status checks before a retry"


# -- what a vendor reply means -------------------------------------------------------------

_STATUS_ANSWERS = {
    "success": Answer.DELIVERED,
    "pending": Answer.PENDING,
    "failed": Answer.FAILED,
    "not_found": Answer.NOT_FOUND,
}


def answer_of_status(status: str) -> Answer:
    """A readable vendor status (purchase, 409's transaction, lookup) as an Answer."""
    return _STATUS_ANSWERS.get(status, Answer.UNKNOWN)


def answer_of_error(exc: VendorError) -> Answer:
    """A failed vendor call as an Answer: held, rejected, or outcome unknown."""
    if isinstance(exc, PermanentVendorError):
        return Answer.REJECTED
    if isinstance(exc, RateLimited | InsufficientBalance | VendorUnauthorized):
        return Answer.HELD
    return Answer.UNKNOWN


def vendor_wide(exc: VendorError) -> bool:
    """Failures that say the vendor (or our access to it) is down, not this order."""
    return isinstance(exc, OutcomeUnknown | VendorUnauthorized)
