"""Verifying: a status lookup of an order whose earlier outcome the worker does not know.

The vendor is asked about the order's reference (it may hold a purchase whose answer was
lost, or one still pending); what it says goes to fulfillment.domain.decision.after_lookup.
The first lookup after a worker died with a purchase in flight also writes that attempt's
row (the dead worker left none), with what the vendor says of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fulfillment.domain.decision import (
    Answer,
    Asker,
    Decision,
    Facts,
    after_lookup,
    answer_of_error,
    answer_of_status,
)
from fulfillment.domain.errors import VendorError
from fulfillment.domain.retry import RetryPolicy
from fulfillment.services.delivery.record import Call
from fulfillment.services.delivery.session import Deferred, VendorSession
from fulfillment.vendors.answer import VendorAnswer


@dataclass(frozen=True, slots=True)
class Looked:
    """A lookup's row (None: nothing to write) and the decision on what it found."""

    call: Call | None
    decision: Decision
    #: no call could be made now: how long the breaker or the gate asked us to wait, and why
    defer_s: float | None = None
    defer_reason: str = "circuit_open"


def lookup(
    session: VendorSession,
    facts: Facts,
    policy: RetryPolicy,
    asker: Asker,
    *,
    lost: bool,
    right_after_purchase: bool,
) -> Looked:
    """Ask the vendor about the reference. lost: a dead worker's purchase has no row yet."""
    attempt = facts.in_flight or facts.attempts
    try:
        answer = session.guarded(lambda: session.line.client.status(session.order_id))
    except Deferred as deferred:
        # Circuit open, paused or no slot: nothing can be learnt now and nothing is spent.
        return Looked(
            lost_purchase(attempt, None) if lost else None,
            after_lookup(
                facts,
                Answer.UNKNOWN,
                policy,
                asker,
                vendor_down=True,
                right_after_purchase=right_after_purchase,
            ),
            defer_s=deferred.delay_s,
            defer_reason=deferred.reason,
        )
    except VendorError as exc:
        session.log.warning(
            "vendor.status_check_failed", error_code=exc.code, latency_ms=exc.latency_ms
        )
        held = answer_of_error(exc) is Answer.HELD
        call = (
            lost_purchase(attempt, None, exc) if lost else Call("status_check", attempt, error=exc)
        )
        return Looked(
            call,
            after_lookup(
                facts,
                Answer.UNKNOWN,
                policy,
                asker,
                vendor_down=session.vendor_down or held,
                right_after_purchase=right_after_purchase,
            ),
        )
    session.log.info(
        "vendor.status_checked",
        vendor_status=answer.status,
        latency_ms=answer.latency_ms,
        request_id=answer.request_id,
    )
    call = lost_purchase(attempt, answer) if lost else Call("status_check", attempt, answer=answer)
    return Looked(
        call,
        after_lookup(
            facts,
            answer_of_status(answer.status),
            policy,
            asker,
            right_after_purchase=right_after_purchase,
        ),
    )


def lost_purchase(
    attempt: int, answer: VendorAnswer | None, error: VendorError | None = None
) -> Call:
    """A dead worker's purchase, as its row: what the vendor says of it, when it says."""
    said = answer.status if answer is not None else "nothing yet"
    if answer is not None and answer.status in ("success", "pending"):
        return Call("purchase", attempt, answer=answer)
    return Call(
        "purchase",
        attempt,
        answer=answer,
        error=error,
        status="failed",
        code="WORKER_LOST",
        note=f"worker lost during attempt {attempt}; vendor: {said}",
    )
