"""Fulfil one order: claim, verify what the vendor already knows, buy at most once, record.

The service behind the `fulfill_order` actor, the reconciler's recovery, the vendor callback
and the dead-letter consumer's last look. What to do next is never decided here: each vendor
answer goes to fulfillment.domain.decision, and this module carries the step out (the vendor
call, the fleet's breaker and rate limit around it, the row that records it). No SQL and no
HTTP here: the store and the vendor client are passed in (see FulfilDeps).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from db.store import CallRecord, Claim
from fulfillment.atishare.client import VendorAnswer
from fulfillment.domain.constants import NETWORK_AT_ISHARE
from fulfillment.domain.decision import (
    Answer,
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
    after_lookup,
    after_purchase,
    answer_of_error,
    answer_of_status,
    first_step,
    vendor_wide,
)
from fulfillment.domain.errors import (
    InsufficientBalance,
    InvalidOrder,
    OrderNotFound,
    RateLimited,
    VendorError,
    VendorUnauthorized,
)
from fulfillment.domain.order import FulfillmentRequest, OrderStatus
from fulfillment.services.ports import DeadLetterNotice, FulfilDeps, Outcome, Permit
from fulfillment.telemetry import metrics
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.worker")

#: A delayed message may be delivered this early (clock skew between hosts) and still count.
EARLY_TOLERANCE_S = 2.0
#: An early message (clock skew) due within this is sent again for when it is due.
MAX_EARLY_REPUBLISH_S = 120.0
#: Spread of the wake-ups after a pause waited out in place.
PAUSE_JITTER_S = 0.2
#: A callback or a dead letter takes its order whatever its schedule says.
ANY_TIME_S = 10 * 365 * 86400.0


def fulfil(order_id: str, deps: FulfilDeps, *, allow_purchase: bool = True) -> Outcome:
    """Handle one fulfill_order message. allow_purchase=False: recover only (the reconciler)."""
    if not deps.enabled:
        log.info("worker.fulfillment_disabled", order_id=order_id, network=NETWORK_AT_ISHARE)
        return Outcome.DISABLED
    token = str(uuid.uuid4())
    # A fresh order's attempt 1 is marked by the claim itself (one round trip less).
    claim = deps.store.claim(
        order_id,
        token,
        ttl_s=deps.claim_ttl_s,
        early_s=EARLY_TOLERANCE_S,
        begin=allow_purchase,
    )
    if claim is None:
        return _not_claimed(order_id, deps)
    asker = Asker.WORKER if allow_purchase else Asker.RECONCILER
    return _Attempt(claim, token, deps, asker).run()


def confirm_delivery(order_id: str, deps: FulfilDeps) -> Outcome:
    """The vendor says (webhook) it delivered: confirm with its status endpoint and complete
    the order now instead of at its next scheduled check. Nothing is ever bought here, and
    anything but a confirmed delivery leaves the order exactly as it was (its schedule, its
    status checks): a callback can hurry a delivery, never give an order up."""
    return _take_anytime(order_id, deps, Asker.CALLBACK)


def settle_for_dead_letter(order_id: str, deps: FulfilDeps) -> Outcome:
    """Dramatiq gave up on an order that may have been bought: ask the vendor before anyone
    flags it, so that it goes to a human as delivered, failed (confirmed) or outcome unknown."""
    return _take_anytime(order_id, deps, Asker.DEAD_LETTER)


def _take_anytime(order_id: str, deps: FulfilDeps, asker: Asker) -> Outcome:
    token = str(uuid.uuid4())
    claim = deps.store.claim(
        order_id, token, ttl_s=deps.claim_ttl_s, early_s=ANY_TIME_S, in_review=True
    )
    if claim is None:
        if deps.store.get_order(order_id) is None:
            raise OrderNotFound(order_id)
        return Outcome.NOT_DUE
    return _Attempt(claim, token, deps, asker).run()


def _not_claimed(order_id: str, deps: FulfilDeps) -> Outcome:
    order = deps.store.get_order(order_id)
    if order is None:
        raise OrderNotFound(order_id)
    if order.network != NETWORK_AT_ISHARE:
        log.warning("worker.misrouted_message", order_id=order_id, network=order.network)
        deps.publish_dead_letter(
            DeadLetterNotice(
                kind="misrouted_message",
                order_id=None,
                error_code="UNSUPPORTED_NETWORK",
                reason=f"fulfill_order received for a {order.network} order; not ours, left as is",
                excerpt=order_id,
            )
        )
        return Outcome.NOT_DUE
    wait = deps.store.seconds_until_due(order_id)
    if wait is not None and 0 < wait <= MAX_EARLY_REPUBLISH_S:
        # Early (clock skew between hosts): come back when the database says it is due.
        deps.publish_retry(order_id, wait)
    log.info(
        "worker.not_due",
        order_id=order_id,
        network=order.network,
        status=order.status.value,
        attempt=order.attempts,
    )
    return Outcome.NOT_DUE


class _Deferred(Exception):
    """No vendor call now (circuit open, paused, no rate-limit slot): nothing is spent."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s


@dataclass(frozen=True, slots=True)
class _Call:
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


class _ClaimLost(Exception):
    """Another worker took the order (our lease ended): stop, write nothing more."""


#: After a failed call while the vendor is down, come back this soon: the next message meets
#: the open circuit and is deferred for exactly as long as it stays open.
DEFER_AFTER_FAILURE_S = 5.0


class _Attempt:
    """One claimed order in one worker: carries out the decision's steps for one message."""

    def __init__(self, claim: Claim, token: str, deps: FulfilDeps, asker: Asker) -> None:
        self.claim = claim
        self.order = claim.order
        self.token = token
        self.deps = deps
        self.asker = asker
        self.max_attempts = deps.policy.max_attempts + self.order.extra_attempts
        # attempts an admin granted count in the retry rule too
        self.policy = replace(deps.policy, max_attempts=self.max_attempts)
        #: the claim marked attempt 1 in flight and nothing was sent yet: an exit without a
        #: purchase (deferred, invalid) clears the mark
        self.begun_unsent = claim.purchase_begun
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
        #: the last failed call was vendor-wide while the circuit was open (or its probe)
        self.vendor_down = False
        #: a worker died with a purchase in flight: its attempt has no row yet
        self.lost_attempt = claim.taken_over and in_flight is not None
        #: how long the breaker or the gate asked us to wait, when a lookup could not be made
        self.defer_s: float | None = None
        #: Waits that hold the claim (a pause waited out, a rate-limit slot) end within half
        #: its lease, all together; a purchase after more than a quarter of it renews the lease.
        self.leased_at = time.monotonic()
        self.probe_taken = False
        self.probe_reported = False
        self.log = log.bind(
            order_id=self.order.id,
            network=self.order.network,
            attempt=self.order.attempts,
            phone=self.order.phone_number,
        )

    def run(self) -> Outcome:
        try:
            try:
                return self._drive()
            except _Deferred as deferred:
                return self._defer(deferred.delay_s)
            except _ClaimLost:
                return Outcome.CLAIM_LOST
        except BaseException:
            if self.begun_unsent:
                # Nothing was sent (the error came before the POST, or handing the order
                # back failed): attempt 1 must not look in flight to the next worker.
                with suppress(Exception):
                    self.deps.store.release_claim(
                        self.order.id, self.token, self.claim.previous_status, clear_in_flight=True
                    )
            raise
        finally:
            if self.probe_taken and not self.probe_reported:
                # We held the half-open probe but made no call (claim lost, database
                # error): hand it on now rather than make the fleet wait for its expiry.
                self.deps.breaker.release_probe()

    def _drive(self) -> Outcome:
        request: FulfillmentRequest | None = None
        invalid: InvalidOrder | None = None
        try:
            request = self.order.request()
        except InvalidOrder as exc:
            if not self.facts.outcome_open:
                if self.asker in (Asker.CALLBACK, Asker.DEAD_LETTER):
                    return self._leave()
                return self._reject(exc)
            invalid = exc  # the vendor may hold it: a lookup needs only the reference
        else:
            self.log = self.log.bind(phone=request.phone_number)  # E.164: masks alike always
        if self.claim.taken_over:
            self.log.warning("worker.claim_taken_over", in_flight=self.order.in_flight_attempt)
        decision = first_step(self.facts, self.asker)
        call: _Call | None = None
        while isinstance(decision.step, Lookup | Buy):
            right_after_purchase = isinstance(decision.step, Lookup) and (
                call is not None and call.action == "purchase"
            )
            if call is not None and not right_after_purchase:
                # More calls follow in this claim: record this one, keep the order.
                self._write(request, call, decision, keep_claim=True)
            self.facts = decision.facts
            if isinstance(decision.step, Lookup):
                looked, decision = self._lookup(right_after_purchase=right_after_purchase)
                if call is not None and right_after_purchase:
                    # One row for the attempt: its lost answer with what the lookup found.
                    answer = looked.answer if looked is not None else None
                    call = replace(call, answer=answer)
                else:
                    call = looked
            elif request is None:
                assert invalid is not None
                return self._reject(invalid)
            else:
                call, decision = self._purchase(request, decision.step.attempt)
        self.facts = decision.facts
        return self._settle(request, call, decision)

    # -- the vendor calls ----------------------------------------------------------------

    def _lookup(self, *, right_after_purchase: bool) -> tuple[_Call | None, Decision]:
        """Ask the vendor about the reference (None: no call could be made now).

        The first lookup after a worker died with a purchase in flight writes that attempt's
        row (the dead worker left none), with what the vendor says of it."""
        attempt = self.facts.in_flight or self.facts.attempts
        lost = self.lost_attempt
        self.lost_attempt = False
        try:
            answer = self._vendor(lambda: self.deps.vendor.status(self.order.id))
        except _Deferred as deferred:
            # Circuit open, paused or no slot: nothing can be learnt now and nothing is spent.
            self.defer_s = deferred.delay_s
            return _lost(attempt, None) if lost else None, after_lookup(
                self.facts,
                Answer.UNKNOWN,
                self.policy,
                self.asker,
                vendor_down=True,
                right_after_purchase=right_after_purchase,
            )
        except VendorError as exc:
            self.log.warning(
                "vendor.status_check_failed", error_code=exc.code, latency_ms=exc.latency_ms
            )
            held = answer_of_error(exc) is Answer.HELD
            call = _lost(attempt, None, exc) if lost else _Call("status_check", attempt, error=exc)
            return call, after_lookup(
                self.facts,
                Answer.UNKNOWN,
                self.policy,
                self.asker,
                vendor_down=self.vendor_down or held,
                right_after_purchase=right_after_purchase,
            )
        self.log.info(
            "vendor.status_checked",
            vendor_status=answer.status,
            latency_ms=answer.latency_ms,
            request_id=answer.request_id,
        )
        call = _lost(attempt, answer) if lost else _Call("status_check", attempt, answer=answer)
        return call, after_lookup(
            self.facts,
            answer_of_status(answer.status),
            self.policy,
            self.asker,
            right_after_purchase=right_after_purchase,
        )

    def _purchase(self, request: FulfillmentRequest, attempt: int) -> tuple[_Call, Decision]:
        permit = self._permit()
        # The rate-limit slot comes before a purchase is sent; an order that cannot get one
        # waits without an attempt to account for (a fresh order's mark, set by its claim,
        # is cleared again by _defer).
        with self._slot():
            # Marked by the claim (a fresh order) and the lease still young: straight to the
            # POST. Otherwise begin_purchase marks the attempt and renews the lease.
            if not self.begun_unsent or self._lease_age() > self.deps.claim_ttl_s / 4:
                if not self.deps.store.begin_purchase(
                    self.order.id, self.token, attempt, ttl_s=self.deps.claim_ttl_s
                ):
                    self.log.warning("worker.claim_lost", stage="begin_purchase")
                    raise _ClaimLost
                self.leased_at = time.monotonic()
            self.begun_unsent = False  # from here a purchase may be sent: the mark stays
            self.facts = replace(self.facts, attempts=attempt, in_flight=attempt, at_vendor=False)
            self.log = self.log.bind(attempt=attempt)
            try:
                answer = self._call_and_record(lambda: self.deps.vendor.purchase(request), permit)
            except VendorError as exc:
                self.log.warning(
                    "vendor.request_failed",
                    error_code=exc.code,
                    http_status=exc.http_status,
                    latency_ms=exc.latency_ms,
                )
                metrics.ATTEMPTS.labels(outcome="failed", error_code=exc.code).inc()
                self._alert(exc)
                return _Call("purchase", attempt, error=exc), after_purchase(
                    self.facts,
                    answer_of_error(exc),
                    self.policy,
                    error_code=exc.code,
                    retry_after_s=exc.retry_after_s if isinstance(exc, RateLimited) else None,
                )
        self.log.info(
            "vendor.purchase_answered",
            vendor_status=answer.status,
            latency_ms=answer.latency_ms,
            request_id=answer.request_id,
        )
        metrics.ATTEMPTS.labels(outcome=answer.status, error_code="none").inc()
        decided = after_purchase(
            self.facts, answer_of_status(answer.status), self.policy, error_code="VENDOR_FAILED"
        )
        return _Call("purchase", attempt, answer=answer), decided

    def _alert(self, exc: VendorError) -> None:
        if isinstance(exc, VendorUnauthorized):
            self.deps.alert(
                "vendor_unauthorized", "AT-iShare rejected our credentials (401)", exc.code
            )
        elif isinstance(exc, InsufficientBalance):
            self.deps.alert(
                "vendor_insufficient_balance",
                "AT-iShare balance is too low to deliver (402)",
                exc.code,
            )

    # -- the vendor, behind the fleet's circuit breaker ----------------------------------

    def _permit(self) -> Permit:
        permit = self.deps.breaker.allow()
        if not permit.allowed and permit.retry_in_s + PAUSE_JITTER_S <= min(
            self.deps.wait_in_place_s, self._wait_budget()
        ):
            # A short pause (a 429's Retry-After): waiting here costs less than handing the
            # order back and taking it again, and keeps its place in the line.
            time.sleep(permit.retry_in_s + random.uniform(0.0, PAUSE_JITTER_S))  # noqa: S311
            metrics.PAUSE_WAITS.inc()
            permit = self.deps.breaker.allow()
        if not permit.allowed:
            raise _Deferred(permit.retry_in_s)
        self.probe_taken = self.probe_taken or permit.probe
        return permit

    def _report(self, *, success: bool, probe: bool) -> None:
        self.deps.breaker.record(success=success, probe=probe)
        self.probe_reported = self.probe_reported or probe

    def _vendor(self, call: Callable[[], VendorAnswer]) -> VendorAnswer:
        permit = self._permit()
        with self._slot():
            return self._call_and_record(call, permit)

    def _lease_age(self) -> float:
        return time.monotonic() - self.leased_at

    def _wait_budget(self) -> float:
        """How much longer this message may wait before a vendor call: waits end within half
        the lease (the other half covers the call and recording its answer)."""
        return self.deps.claim_ttl_s / 2 - self._lease_age()

    @contextmanager
    def _slot(self) -> Iterator[None]:
        """A fleet-wide rate-limit slot held for one vendor call, or _Deferred."""
        with self.deps.gate.slot(max_wait_s=self._wait_budget()) as admitted:
            if not admitted:
                raise _Deferred(random.uniform(0.5, 2.0))  # noqa: S311 - jitter
            yield

    def _call_and_record(self, call: Callable[[], VendorAnswer], permit: Permit) -> VendorAnswer:
        try:
            answer = call()
        except VendorError as exc:
            wide = vendor_wide(exc)
            self._report(success=not wide, probe=permit.probe)
            if isinstance(exc, InsufficientBalance):
                self.deps.breaker.trip(self.deps.balance_pause_s, "insufficient_balance")
            if isinstance(exc, RateLimited) and exc.retry_after_s:
                # The vendor asked everyone to wait: the whole fleet pauses, not one order.
                self.deps.breaker.trip(exc.retry_after_s, "rate_limited", alert=False)
            self.vendor_down = wide and (permit.probe or self.deps.breaker.is_open())
            raise
        self._report(success=True, probe=permit.probe)
        return answer

    # -- carrying out the final step -------------------------------------------------------

    def _settle(
        self, request: FulfillmentRequest | None, call: _Call | None, decision: Decision
    ) -> Outcome:
        step = decision.step
        if isinstance(step, Leave):
            # the order waits on the vendor, or there was nothing to do (never bought)
            waits = call is not None or self.facts.outcome_open or self.facts.attempts > 0
            return self._leave(Outcome.PENDING if waits else Outcome.NOT_DUE)
        if isinstance(step, Defer) and call is None:
            return self._defer(self.defer_s if self.defer_s is not None else 0.5)
        if call is None:
            # Decided without a vendor call (attempts used up, or a recovery hand-back).
            requeued = isinstance(step, Wait) and step.why == "requeued"
            call = _Call(
                "status_check",
                self.facts.attempts,
                note="requeued by the reconciler" if requeued else None,
                code="REQUEUED" if requeued else None,
                status="not_found" if requeued else "failed",
            )
        if not self._write(request, call, decision):
            return Outcome.CLAIM_LOST
        if isinstance(step, Complete):
            return self._completed(call)
        if isinstance(step, Human):
            return self._to_human(step, call)
        delay = _delay_of(decision) or 0.0
        if isinstance(step, Defer):
            self.log.info("fulfillment.deferred", reason="vendor_down", delay_s=round(delay, 1))
            metrics.RETRIES.labels(reason="circuit_open").inc()
            self.deps.publish_retry(self.order.id, delay)
            return Outcome.DEFERRED
        assert isinstance(step, Wait)
        if step.why == "status_check":
            metrics.RETRIES.labels(reason="status_check").inc()
        else:
            self.log.info(
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

    def _completed(self, call: _Call) -> Outcome:
        transaction_id = call.answer.transaction_id if call.answer else None
        self.log.info("fulfillment.succeeded", attempt=call.attempt, transaction_id=transaction_id)
        metrics.OUTCOMES.labels(outcome="success", network=self.order.network).inc()
        age = (datetime.now(UTC) - self.order.created_at).total_seconds()
        metrics.TIME_TO_SUCCESS.observe(max(age, 0.0))
        return Outcome.SUCCESS

    def _to_human(self, step: Human, call: _Call) -> Outcome:
        code = call.error.code if call.error else None
        self.log.warning(
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
            self.order.id, self.token, self.claim.previous_status, clear_in_flight=self.begun_unsent
        )
        self.begun_unsent = False
        return outcome

    def _defer(self, delay_s: float) -> Outcome:
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
            clear_in_flight=self.begun_unsent,
        ):
            return Outcome.CLAIM_LOST
        self.begun_unsent = False
        self.log.info("fulfillment.deferred", reason="circuit_open", delay_s=round(wait, 1))
        metrics.RETRIES.labels(reason="circuit_open").inc()
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
            clear_in_flight=self.begun_unsent,
        )
        self.begun_unsent = False
        self.log.warning("fulfillment.invalid_order", field=exc.field, error_code=exc.code)
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

    def _write(
        self,
        request: FulfillmentRequest | None,
        call: _Call,
        decision: Decision,
        *,
        keep_claim: bool = False,
    ) -> bool:
        """One row for the call and the order's state after the decision, in one statement."""
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
        ok = self.deps.store.finish_call(
            CallRecord(
                order_id=self.order.id,
                token=self.token,
                network=self.order.network or NETWORK_AT_ISHARE,
                phone_number=request.phone_number if request else (self.order.phone_number or ""),
                action=call.action,
                log_status=call.log_status,
                attempt_number=call.attempt,
                max_attempts=self.max_attempts,
                status=_status_of(decision, keep_claim=keep_claim),
                attempts=facts.attempts,
                in_flight=facts.in_flight,
                status_checks=facts.status_checks,
                deferrals=facts.deferrals,
                delay_s=None if keep_claim else _delay_of(decision),
                http_status=(
                    answer.http_status if answer else error.http_status if error else None
                ),
                api_response=raw,
                error_code=call.code or (error.code if error else None),
                error_message=note or (str(error)[:500] if error else None),
                latency_ms=(answer.latency_ms if answer else error.latency_ms if error else None),
                transaction_id=answer.transaction_id if answer else None,
                dead_letter_reason=step.reason if isinstance(step, Human) else None,
                worker=self.deps.worker,
                keep_claim=keep_claim,
            )
        )
        if not ok:
            self.log.warning("worker.claim_lost", stage=call.action, log_status=call.log_status)
            if keep_claim:
                raise _ClaimLost
        return ok


def _lost(attempt: int, answer: VendorAnswer | None, error: VendorError | None = None) -> _Call:
    """A dead worker's purchase, as its row: what the vendor says of it, when it says."""
    said = answer.status if answer is not None else "nothing yet"
    if answer is not None and answer.status in ("success", "pending"):
        return _Call("purchase", attempt, answer=answer)
    return _Call(
        "purchase",
        attempt,
        answer=answer,
        error=error,
        status="failed",
        code="WORKER_LOST",
        note=f"worker lost during attempt {attempt}; vendor: {said}",
    )


def _status_of(decision: Decision, *, keep_claim: bool) -> OrderStatus:
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


def _delay_of(decision: Decision) -> float | None:
    step = decision.step
    if isinstance(step, Wait):
        return step.delay_s
    if isinstance(step, Defer):
        return DEFER_AFTER_FAILURE_S + random.uniform(0.0, 1.0)  # noqa: S311 - jitter
    return None
