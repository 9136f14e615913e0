"""Purchasing: one POST of the order to the vendor, as attempt `attempt`.

The attempt is marked in flight before the POST (inside the breaker's permit and a
rate-limit slot, see session.VendorSession.purchase_slot); what the vendor answers, or how
the call failed, goes to fulfillment.domain.decision.after_purchase. A 401 or a 402 also
alerts an admin.
"""

from __future__ import annotations

from dataclasses import replace

from fulfillment.domain.decision import (
    Decision,
    Facts,
    after_purchase,
    answer_of_error,
    answer_of_status,
)
from fulfillment.domain.errors import (
    InsufficientBalance,
    RateLimited,
    VendorError,
    VendorUnauthorized,
)
from fulfillment.domain.order import FulfillmentRequest
from fulfillment.domain.retry import RetryPolicy
from fulfillment.services.delivery.record import Call
from fulfillment.services.delivery.session import VendorSession
from fulfillment.telemetry import metrics


def purchase(
    session: VendorSession,
    request: FulfillmentRequest,
    facts: Facts,
    policy: RetryPolicy,
    attempt: int,
) -> tuple[Call, Decision]:
    """Send the purchase (Deferred: no permit or slot, nothing sent; ClaimLost: not ours)."""
    with session.purchase_slot(attempt) as permit:
        facts = replace(facts, attempts=attempt, in_flight=attempt, at_vendor=False)
        session.log = session.log.bind(attempt=attempt)
        try:
            # resend: how often the vendor held this order (429, 402, 401: nothing bought), so
            # that a vendor that replays the answer of a request key sends a new one
            answer = session.send(
                lambda: session.line.client.purchase(request, attempt, resend=facts.deferrals),
                permit,
            )
        except VendorError as exc:
            session.log.warning(
                "vendor.request_failed",
                error_code=exc.code,
                http_status=exc.http_status,
                latency_ms=exc.latency_ms,
            )
            metrics.ATTEMPTS.labels(
                vendor=session.line.name, outcome="failed", error_code=exc.code
            ).inc()
            alert(session, exc)
            return Call("purchase", attempt, error=exc), after_purchase(
                facts,
                answer_of_error(exc),
                policy,
                error_code=exc.code,
                retry_after_s=exc.retry_after_s if isinstance(exc, RateLimited) else None,
            )
    session.log.info(
        "vendor.purchase_answered",
        vendor_status=answer.status,
        latency_ms=answer.latency_ms,
        request_id=answer.request_id,
    )
    metrics.ATTEMPTS.labels(
        vendor=session.line.name, outcome=answer.status, error_code="none"
    ).inc()
    decided = after_purchase(
        facts, answer_of_status(answer.status), policy, error_code="VENDOR_FAILED"
    )
    return Call("purchase", attempt, answer=answer), decided


def alert(session: VendorSession, exc: VendorError) -> None:
    """The vendor refused us for a reason only an admin can fix: credentials, balance."""
    line = session.line
    if isinstance(exc, VendorUnauthorized):
        session.deps.alert(
            "vendor_unauthorized",
            f"{line.display_name} rejected our credentials (401)",
            exc.code,
            line.name,
        )
    elif isinstance(exc, InsufficientBalance):
        session.deps.alert(
            "vendor_insufficient_balance",
            f"{line.display_name} balance is too low to deliver (402)",
            exc.code,
            line.name,
        )
