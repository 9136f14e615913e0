"""Recording: each vendor call's fulfillment_logs row and the order's state after it.

Pure: this module turns a call (Call), what every row of the claimed order repeats (Audit)
and the decision taken on the call into the db.store.CallRecord that finish_call writes in
one statement. Nothing here talks to the vendor or decides anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from db.store import CallRecord, Store
from fulfillment.domain.decision import Complete, Decision, Defer, Human, Wait
from fulfillment.domain.errors import VendorError
from fulfillment.domain.order import OrderStatus
from fulfillment.vendors.answer import VendorAnswer

#: After a failed call while the vendor is down, come back this soon: the next message meets
#: the open circuit and is deferred for exactly as long as it stays open.
DEFER_AFTER_FAILURE_S = 5.0


@dataclass(frozen=True, slots=True)
class Call:
    """One vendor call as the audit row tells it."""

    action: str  # purchase | status_check
    attempt: int
    answer: VendorAnswer | None = None
    error: VendorError | None = None
    #: for a row written without a vendor answer (a recovery hand-back)
    status: str | None = None
    code: str | None = None
    note: str | None = None

    @property
    def log_status(self) -> str:
        if self.status is not None:
            return self.status
        return self.answer.status if self.answer is not None else "failed"


@dataclass(frozen=True, slots=True)
class Audit:
    """What every row written for one claimed order repeats: the order, the claim's token,
    the phone as the request normalised it, the attempts it may take, the worker."""

    order_id: str
    token: str
    network: str
    phone_number: str
    max_attempts: int
    worker: str


def write(
    store: Store, audit: Audit, call: Call, decision: Decision, *, keep_claim: bool = False
) -> bool:
    """One row for the call and the order's state after the decision, in one statement;
    False when the claim was lost meanwhile (nothing written)."""
    return store.finish_call(call_record(audit, call, decision, keep_claim=keep_claim))


def call_record(audit: Audit, call: Call, decision: Decision, *, keep_claim: bool) -> CallRecord:
    """keep_claim: more calls follow in this claim (the order stays processing and ours)."""
    step, facts = decision.step, decision.facts
    answer, error = call.answer, call.error
    raw: object = answer.raw if answer is not None else None
    if error is not None:
        raw = {"error": error.raw, "status_check": raw} if raw is not None else error.raw
    note = call.note
    if isinstance(step, Complete) and call.action == "status_check":
        note = "delivery confirmed by status check"
    elif isinstance(step, Complete) and error is not None:
        note = "purchase answer lost; delivery confirmed by status"
    return CallRecord(
        order_id=audit.order_id,
        token=audit.token,
        network=audit.network,
        phone_number=audit.phone_number,
        action=call.action,
        log_status=call.log_status,
        attempt_number=call.attempt,
        max_attempts=audit.max_attempts,
        status=status_of(decision, keep_claim=keep_claim),
        attempts=facts.attempts,
        in_flight=facts.in_flight,
        status_checks=facts.status_checks,
        deferrals=facts.deferrals,
        delay_s=None if keep_claim else delay_of(decision),
        http_status=(answer.http_status if answer else error.http_status if error else None),
        api_response=raw,
        error_code=call.code or (error.code if error else None),
        error_message=note or (str(error)[:500] if error else None),
        latency_ms=(answer.latency_ms if answer else error.latency_ms if error else None),
        transaction_id=answer.transaction_id if answer else None,
        dead_letter_reason=step.reason if isinstance(step, Human) else None,
        worker=audit.worker,
        keep_claim=keep_claim,
    )


def status_of(decision: Decision, *, keep_claim: bool) -> OrderStatus:
    """The order's fulfillment_status after a step: processing while the vendor may hold it."""
    step = decision.step
    if keep_claim:
        return OrderStatus.PROCESSING
    if isinstance(step, Complete):
        return OrderStatus.SUCCESS
    if isinstance(step, Wait):
        return OrderStatus.PROCESSING if step.open else OrderStatus.FAILED
    if isinstance(step, Human):
        return OrderStatus.PROCESSING if step.outcome_unknown else OrderStatus.FAILED
    return OrderStatus.PROCESSING if decision.facts.outcome_open else OrderStatus.FAILED


def delay_of(decision: Decision) -> float | None:
    """When the order is due again after the decision (a Defer: jittered, drawn per call)."""
    step = decision.step
    if isinstance(step, Wait):
        return step.delay_s
    if isinstance(step, Defer):
        return DEFER_AFTER_FAILURE_S + random.uniform(0.0, 1.0)  # noqa: S311 - jitter
    return None
