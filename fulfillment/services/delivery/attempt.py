"""One claimed order in one worker: the decision's steps carried out for one message.

The loop asks fulfillment.domain.decision for each step and hands it to the module that
carries it out (verify.lookup, purchase.purchase, record.write); then the final step: the
order completed, waiting (a retry or a status check published), deferred, left as it was, or
marked for a human with a notice to the dead-letter consumer.
"""

from __future__ import annotations

import random
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime

from db.store import Claim
from fulfillment.domain.decision import (
    Asker,
    Buy,
    Complete,
    Decision,
    Defer,
    Facts,
    Human,
    Leave,
    Lookup,
    Wait,
    first_step,
)
from fulfillment.domain.errors import InvalidOrder
from fulfillment.domain.order import FulfillmentRequest, OrderStatus
from fulfillment.services.delivery.purchase import purchase
from fulfillment.services.delivery.record import Audit, Call, delay_of, write
from fulfillment.services.delivery.session import (
    ClaimLost,
    Deferred,
    PausedMeanwhile,
    VendorSession,
)
from fulfillment.services.delivery.verify import lookup
from fulfillment.services.ports import DeadLetterNotice, FulfilDeps, Outcome
from fulfillment.telemetry import metrics

#: What a deferred order says while it waits (its last_error_code and message), by why no
#: vendor call could be made (session.Deferred.reason).
_WAITS_BECAUSE: dict[str, dict[str, str]] = {
    "circuit_open": {
        "error_code": "CIRCUIT_OPEN",
        "error_message": "vendor circuit open: waiting without spending an attempt",
    },
    "no_slot": {
        "error_code": "VENDOR_RATE_LIMIT",
        "error_message": "vendor rate limit reached: waiting without spending an attempt",
    },
    "vendor_busy": {
        "error_code": "VENDOR_BUSY",
        "error_message": "vendor slow: its share of the worker threads is in use; "
        "waiting without spending an attempt",
    },
}


class Attempt:
    """One claimed order in one worker: carries out the decision's steps for one message."""

    def __init__(self, claim: Claim, token: str, deps: FulfilDeps, asker: Asker) -> None:
        self.claim = claim
        self.order = claim.order
        self.token = token
        self.deps = deps
        self.asker = asker
        self.session = VendorSession(deps, claim, token)
        self.max_attempts = deps.policy.max_attempts + self.order.extra_attempts
        # attempts an admin granted count in the retry rule too
        self.policy = replace(deps.policy, max_attempts=self.max_attempts)
        in_flight = None if claim.purchase_begun else self.order.in_flight_attempt
        self.facts = Facts(
            # a fresh order's claim counted attempt 1 with its mark; nothing is sent yet
            attempts=self.order.attempts - (1 if claim.purchase_begun else 0),
            in_flight=in_flight,
            status_checks=self.order.status_checks,
            deferrals=self.order.deferrals,
            # processing with nothing in flight: the vendor's last word was "pending" (or a
            # lookup of it was under way when its worker died): treated alike
            at_vendor=claim.previous_status is OrderStatus.PROCESSING and in_flight is None,
            max_attempts=self.max_attempts,
        )
        #: a worker died with a purchase in flight: its attempt has no row yet
        self.lost_attempt = claim.taken_over and in_flight is not None
        #: how long the breaker or the gate asked us to wait, when a lookup could not be made
        self.defer_s: float | None = None
        self.defer_reason = "circuit_open"

    def run(self) -> Outcome:
        try:
            try:
                return self._drive()
            except Deferred as deferred:
                return self._defer(deferred.delay_s, deferred.reason)
            except PausedMeanwhile:
                # Given back as it was (a fresh order's attempt 1 unmarked): it waits for
                # the resume, which re-enqueues it, like every order of its scope.
                self.deps.store.release_claim(
                    self.order.id,
                    self.token,
                    self.claim.previous_status,
                    clear_in_flight=self.session.begun_unsent,
                )
                self.session.begun_unsent = False
                return Outcome.PAUSED
            except ClaimLost:
                return Outcome.CLAIM_LOST
        except BaseException:
            if self.session.begun_unsent:
                # Nothing was sent (the error came before the POST, or handing the order
                # back failed): attempt 1 must not look in flight to the next worker.
                with suppress(Exception):
                    self.deps.store.release_claim(
                        self.order.id, self.token, self.claim.previous_status, clear_in_flight=True
                    )
            raise
        finally:
            self.session.release_unused_probe()

    def _drive(self) -> Outcome:
        request: FulfillmentRequest | None = None
        invalid: InvalidOrder | None = None
        session = self.session
        try:
            request = self.order.request(self.deps.catalogue)
        except InvalidOrder as exc:
            if not self.facts.outcome_open:
                if self.asker in (Asker.CALLBACK, Asker.DEAD_LETTER):
                    return self._leave()
                return self._reject(exc)
            invalid = exc  # the vendor may hold it: a lookup needs only the reference
        else:
            session.log = session.log.bind(phone=request.phone_number)  # E.164: masks alike
            if request.issued_by is not None and self.asker is Asker.WORKER:
                # A ported number, or a typo the vendor may refuse: said, never refused here.
                session.log.info(
                    "fulfillment.prefix_mismatch",
                    issued_by=request.issued_by,
                    package=request.package,
                )
        if self.claim.taken_over:
            session.log.warning("worker.claim_taken_over", in_flight=self.order.in_flight_attempt)
        audit = Audit(
            order_id=self.order.id,
            token=self.token,
            network=self.order.network or "",
            phone_number=request.phone_number if request else (self.order.phone_number or ""),
            max_attempts=self.max_attempts,
            worker=self.deps.worker,
        )
        decision = first_step(self.facts, self.asker)
        call: Call | None = None
        while isinstance(decision.step, Lookup | Buy):
            right_after_purchase = isinstance(decision.step, Lookup) and (
                call is not None and call.action == "purchase"
            )
            if call is not None and not right_after_purchase:
                # More calls follow in this claim: record this one, keep the order.
                self._write(audit, call, decision, keep_claim=True)
            self.facts = decision.facts
            if isinstance(decision.step, Lookup):
                lost, self.lost_attempt = self.lost_attempt, False
                looked = lookup(
                    session,
                    self.facts,
                    self.policy,
                    self.asker,
                    lost=lost,
                    right_after_purchase=right_after_purchase,
                )
                decision = looked.decision
                if looked.defer_s is not None:
                    self.defer_s = looked.defer_s
                    self.defer_reason = looked.defer_reason
                if call is not None and right_after_purchase:
                    # One row for the attempt: its lost answer with what the lookup found.
                    answer = looked.call.answer if looked.call is not None else None
                    call = replace(call, answer=answer)
                else:
                    call = looked.call
            elif request is None:
                assert invalid is not None
                return self._reject(invalid)
            else:
                call, decision = purchase(
                    session, request, self.facts, self.policy, decision.step.attempt
                )
        self.facts = decision.facts
        return self._settle(audit, call, decision)

    def _write(
        self, audit: Audit, call: Call, decision: Decision, *, keep_claim: bool = False
    ) -> bool:
        ok = write(self.deps.store, audit, call, decision, keep_claim=keep_claim)
        if not ok:
            self.session.log.warning(
                "worker.claim_lost", stage=call.action, log_status=call.log_status
            )
            if keep_claim:
                raise ClaimLost
        return ok

    # -- carrying out the final step -------------------------------------------------------

    def _settle(self, audit: Audit, call: Call | None, decision: Decision) -> Outcome:
        step = decision.step
        log = self.session.log
        if isinstance(step, Leave):
            # the order waits on the vendor, or there was nothing to do (never bought)
            waits = call is not None or self.facts.outcome_open or self.facts.attempts > 0
            return self._leave(Outcome.PENDING if waits else Outcome.NOT_DUE)
        if isinstance(step, Defer) and call is None:
            return self._defer(self.defer_s if self.defer_s is not None else 0.5, self.defer_reason)
        if call is None:
            # Decided without a vendor call (attempts used up, or a recovery hand-back).
            requeued = isinstance(step, Wait) and step.why == "requeued"
            call = Call(
                "status_check",
                self.facts.attempts,
                note="requeued by the reconciler" if requeued else None,
                code="REQUEUED" if requeued else None,
                status="not_found" if requeued else "failed",
            )
        if not self._write(audit, call, decision):
            return Outcome.CLAIM_LOST
        if isinstance(step, Complete):
            return self._completed(call)
        if isinstance(step, Human):
            return self._to_human(step, call)
        delay = delay_of(decision) or 0.0
        if isinstance(step, Defer):
            log.info("fulfillment.deferred", reason="vendor_down", delay_s=round(delay, 1))
            metrics.RETRIES.labels(reason="circuit_open").inc()
            self.deps.publish_retry(self.order.id, delay)
            return Outcome.DEFERRED
        assert isinstance(step, Wait)
        if step.why == "status_check":
            metrics.RETRIES.labels(reason="status_check").inc()
        else:
            log.info(
                "fulfillment.retry_scheduled",
                attempt=call.attempt,
                error_code=call.error.code if call.error else None,
                delay_s=delay,
                attempt_consumed=step.why == "backoff",
            )
            if step.why != "requeued":
                metrics.RETRIES.labels(
                    reason="transient" if step.why == "backoff" else "rate_limited"
                ).inc()
        self.deps.publish_retry(self.order.id, delay)
        return Outcome.PENDING if step.why == "status_check" else Outcome.RETRY_SCHEDULED

    def _completed(self, call: Call) -> Outcome:
        transaction_id = call.answer.transaction_id if call.answer else None
        self.session.log.info(
            "fulfillment.succeeded", attempt=call.attempt, transaction_id=transaction_id
        )
        metrics.OUTCOMES.labels(outcome="success", network=self.order.network).inc()
        age = (datetime.now(UTC) - self.order.created_at).total_seconds()
        metrics.TIME_TO_SUCCESS.observe(max(age, 0.0))
        return Outcome.SUCCESS

    def _to_human(self, step: Human, call: Call) -> Outcome:
        code = call.error.code if call.error else None
        self.session.log.warning(
            "fulfillment.dead_lettered",
            reason=step.reason,
            error_code=code,
            outcome_unknown=step.outcome_unknown,
        )
        return self._announce_dead_letter(
            step.reason,
            code,
            metrics.dead_letter_kind(step.reason),
            outcome="outcome_unknown" if step.outcome_unknown else "dead_lettered",
        )

    def _leave(self, outcome: Outcome = Outcome.NOT_DUE) -> Outcome:
        """Give the order back exactly as it was (a callback, a dead letter never bought)."""
        self.deps.store.release_claim(
            self.order.id,
            self.token,
            self.claim.previous_status,
            clear_in_flight=self.session.begun_unsent,
        )
        self.session.begun_unsent = False
        return outcome

    def _defer(self, delay_s: float, reason: str = "circuit_open") -> Outcome:
        """No vendor call now: give the order back, due when it may go on; nothing spent."""
        if self.asker is not Asker.WORKER and self.asker is not Asker.RECONCILER:
            return self._leave()
        wait = max(delay_s, 0.5) + random.uniform(0, min(5.0, max(delay_s, 0.5)))  # noqa: S311
        if self.facts.outcome_open:
            status = OrderStatus.PROCESSING
        elif self.claim.previous_status is OrderStatus.PENDING:
            status = OrderStatus.PENDING  # pending stays pending, a retry stays failed
        else:
            status = OrderStatus.FAILED
        if not self.deps.store.defer(
            self.order.id,
            self.token,
            status=status,
            delay_s=wait,
            clear_in_flight=self.session.begun_unsent,
            **_WAITS_BECAUSE.get(reason, _WAITS_BECAUSE["circuit_open"]),
        ):
            return Outcome.CLAIM_LOST
        self.session.begun_unsent = False
        self.session.log.info("fulfillment.deferred", reason=reason, delay_s=round(wait, 1))
        metrics.RETRIES.labels(reason=reason).inc()
        self.deps.publish_retry(self.order.id, wait)
        return Outcome.DEFERRED

    def _reject(self, exc: InvalidOrder) -> Outcome:
        """The order itself is invalid: no vendor call can help."""
        reason = f"invalid order: {exc}"
        self.deps.store.request_dead_letter(
            self.order.id,
            self.token,
            reason=reason,
            error_code=exc.code,
            error_message=str(exc),
            clear_in_flight=self.session.begun_unsent,
        )
        self.session.begun_unsent = False
        self.session.log.warning("fulfillment.invalid_order", field=exc.field, error_code=exc.code)
        return self._announce_dead_letter(reason, exc.code, "invalid_order")

    def _announce_dead_letter(
        self, reason: str, error_code: str | None, kind: str, *, outcome: str = "dead_lettered"
    ) -> Outcome:
        """The order is marked for a dead letter: count it and tell the dead-letter consumer."""
        metrics.OUTCOMES.labels(outcome=outcome, network=self.order.network).inc()
        metrics.DEAD_LETTERS.labels(reason=kind).inc()
        self.deps.publish_dead_letter(
            DeadLetterNotice(
                kind="dead_letter",
                order_id=self.order.id,
                reason=reason,
                error_code=error_code,
                generation=self.order.generation,
            )
        )
        return Outcome.DEAD_LETTERED
