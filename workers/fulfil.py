"""Fulfil one order: claim, verify what the vendor already knows, buy at most once, record.

The service behind the `fulfill_order` actor and the reconciler's recovery. No SQL and no
HTTP here: the store and the vendor client are passed in (see FulfilDeps).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from db.store import CallRecord, Claim
from fulfillment import metrics
from fulfillment.constants import NETWORK_AT_ISHARE
from fulfillment.domain.order import FulfillmentRequest, OrderStatus
from fulfillment.domain.retry import DeadLetter, decide, decide_status_check
from fulfillment.errors import (
    InsufficientBalance,
    InvalidOrder,
    OrderNotFound,
    OutcomeUnknown,
    RateLimited,
    TransientVendorError,
    VendorError,
    VendorUnauthorized,
)
from fulfillment.logs import get_logger
from vendor.client import VendorAnswer
from workers.contracts import DeadLetterNotice, FulfilDeps, Outcome

log = get_logger("fulfillment.worker")

#: A delayed message may be delivered this early (clock skew between hosts) and still count.
EARLY_TOLERANCE_S = 2.0
#: An early message (clock skew) due within this is sent again for when it is due.
MAX_EARLY_REPUBLISH_S = 120.0
#: Spread of the wake-ups after a pause waited out in place.
PAUSE_JITTER_S = 0.2


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
    return _Attempt(claim, token, deps).run(allow_purchase=allow_purchase)


def confirm_delivery(order_id: str, deps: FulfilDeps) -> Outcome:
    """The vendor says (webhook) it delivered: confirm with its status endpoint and complete
    the order now instead of at its next scheduled check. Replays are harmless: a finished
    order cannot be claimed, and nothing is ever bought here."""
    token = str(uuid.uuid4())
    # Due now, whatever its schedule said: the vendor just told us something.
    claim = deps.store.claim(order_id, token, ttl_s=deps.claim_ttl_s, early_s=10 * 365 * 86400)
    if claim is None:
        if deps.store.get_order(order_id) is None:
            raise OrderNotFound(order_id)
        return Outcome.NOT_DUE
    attempt = _Attempt(claim, token, deps)
    try:
        request = claim.order.request()
    except InvalidOrder as exc:
        return attempt._reject(exc)
    if claim.order.attempts == 0 and claim.order.in_flight_attempt is None:
        # Never bought by us: the vendor cannot know it. Give it back untouched.
        deps.store.release_claim(order_id, token, claim.previous_status)
        return Outcome.NOT_DUE
    settled = attempt._verify(request, keep_claim=False)
    return settled if settled is not None else Outcome.RETRY_SCHEDULED


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
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s


class _SparedFailure(TransientVendorError):
    """A vendor-wide failure that keeps the order's attempt (decide() retries it as such)."""

    consumes_attempt = False


def _vendor_wide(exc: VendorError) -> bool:
    """Failures that say the vendor (or our access to it) is down, not this order."""
    return isinstance(exc, OutcomeUnknown | VendorUnauthorized)


class _Attempt:
    """One claimed order in one worker: the state machine of a single message."""

    def __init__(self, claim: Claim, token: str, deps: FulfilDeps) -> None:
        self.claim = claim
        self.order = claim.order
        self.token = token
        self.deps = deps
        self.max_attempts = deps.policy.max_attempts + self.order.extra_attempts
        # attempts an admin granted count in the retry rule too
        self.policy = replace(deps.policy, max_attempts=self.max_attempts)
        #: set when a vendor-wide failure must not cost this order an attempt
        self.spare_attempt = False
        #: the claim marked attempt 1 in flight and nothing was sent yet: an exit without a
        #: purchase (deferred, invalid) clears the mark
        self.begun_unsent = claim.purchase_begun
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

    def run(self, *, allow_purchase: bool) -> Outcome:
        try:
            try:
                return self._run(allow_purchase=allow_purchase)
            except _Deferred as deferred:
                return self._defer(deferred.delay_s)
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

    def _run(self, *, allow_purchase: bool) -> Outcome:
        try:
            request = self.order.request()
        except InvalidOrder as exc:
            return self._reject(exc)
        self.log = self.log.bind(phone=request.phone_number)  # E.164: masks the same way always
        if self.claim.taken_over:
            self.log.warning("worker.claim_taken_over", in_flight=self.order.in_flight_attempt)
        unknown = (
            self.order.attempts > 0
            or (self.order.in_flight_attempt is not None and not self.claim.purchase_begun)
            or self.claim.previous_status is OrderStatus.PROCESSING
        )
        if unknown:
            settled = self._verify(request, keep_claim=allow_purchase)
            if settled is not None:
                return settled
        if not allow_purchase:
            return self._hand_back()
        return self._purchase(request)

    # -- before buying: what does the vendor know? ---------------------------------------

    def _verify(self, request: FulfillmentRequest, *, keep_claim: bool) -> Outcome | None:
        """Ask the vendor about the reference. An Outcome when that settles the message;
        None when the vendor confirms nothing was delivered and a purchase may follow."""
        in_flight = self.order.in_flight_attempt
        attempt = in_flight or self.order.attempts
        waiting = (
            OrderStatus.PROCESSING
            if in_flight or self.claim.previous_status is OrderStatus.PROCESSING
            else OrderStatus.FAILED
        )
        try:
            answer = self._vendor(lambda: self.deps.vendor.status(self.order.id))
        except VendorError as exc:
            self.log.warning(
                "vendor.status_check_failed", error_code=exc.code, latency_ms=exc.latency_ms
            )
            return self._check_again(request, attempt, waiting, error=exc)
        self.log.info(
            "vendor.status_checked",
            vendor_status=answer.status,
            latency_ms=answer.latency_ms,
            request_id=answer.request_id,
        )
        # A lost worker's purchase is logged as that attempt, with what the vendor says of it.
        action = "purchase" if in_flight else "status_check"
        if answer.status == "success":
            return self._succeeded(
                request, attempt, answer, action=action, note="delivery confirmed by status check"
            )
        if answer.status == "pending":
            return self._check_again(
                request,
                attempt,
                OrderStatus.PROCESSING,
                answer=answer,
                action=action,
                attempts=max(self.order.attempts, attempt),
            )
        # not_found or failed: nothing was delivered.
        if in_flight:
            lost = OutcomeUnknown(
                f"worker lost during attempt {in_flight}; vendor: {answer.status}",
                code="WORKER_LOST",
            )
            decision = decide(in_flight, lost, self.policy)
            if isinstance(decision, DeadLetter) or not keep_claim:
                return self._failed(request, in_flight, lost, answer=answer)
            self._record(
                request,
                action="purchase",
                log_status="failed",
                attempt=in_flight,
                status=OrderStatus.PROCESSING,
                attempts=in_flight,
                keep_claim=True,
                answer=answer,
                error=lost,
            )
            self.order = replace(self.order, attempts=in_flight, in_flight_attempt=None)
        elif keep_claim:
            self._record(
                request,
                action="status_check",
                log_status=answer.status,
                attempt=attempt,
                status=OrderStatus.PROCESSING,
                attempts=self.order.attempts,
                keep_claim=True,
                answer=answer,
            )
        else:
            # Recovery only: the vendor has nothing; a worker buys on the next message.
            self._record(
                request,
                action="status_check",
                log_status=answer.status,
                attempt=attempt,
                status=OrderStatus.FAILED,
                attempts=self.order.attempts,
                delay_s=0.0,
                answer=answer,
            )
            self.deps.publish_retry(self.order.id, 0.0)
            return Outcome.RETRY_SCHEDULED
        return None

    def _check_again(
        self,
        request: FulfillmentRequest,
        attempt: int,
        waiting: OrderStatus,
        *,
        error: VendorError | None = None,
        answer: VendorAnswer | None = None,
        action: str = "status_check",
        attempts: int | None = None,
    ) -> Outcome:
        checks = self.order.status_checks + 1
        decision = decide_status_check(checks, self.policy)
        used = attempts if attempts is not None else self.order.attempts
        in_flight = None if answer is not None else self.order.in_flight_attempt
        if isinstance(decision, DeadLetter):
            return self._dead_letter(
                request,
                decision.reason,
                action=action,
                attempt=attempt,
                attempts=used,
                error=error,
                answer=answer,
                log_status="pending" if answer else "failed",
            )
        self._record(
            request,
            action=action,
            log_status=answer.status if answer else "failed",
            attempt=attempt,
            status=waiting,
            attempts=used,
            in_flight=in_flight,
            status_checks=checks,
            delay_s=decision.delay_s,
            answer=answer,
            error=error,
        )
        metrics.RETRIES.labels(reason="status_check").inc()
        self.deps.publish_retry(self.order.id, decision.delay_s)
        return Outcome.PENDING

    def _hand_back(self) -> Outcome:
        """Recovery of an order nobody had started buying: a worker takes it from here."""
        self._record(
            None,
            action="status_check",
            log_status="not_found",
            attempt=self.order.attempts,
            status=OrderStatus.FAILED,
            attempts=self.order.attempts,
            delay_s=0.0,
            error_code="REQUEUED",
            error_message="requeued by the reconciler",
        )
        self.deps.publish_retry(self.order.id, 0.0)
        return Outcome.RETRY_SCHEDULED

    # -- the purchase --------------------------------------------------------------------

    def _purchase(self, request: FulfillmentRequest) -> Outcome:
        attempt = self.order.attempts + 1
        if attempt > self.max_attempts:
            return self._dead_letter(
                request,
                f"{self.order.attempts} attempts used up",
                action="status_check",
                attempt=self.order.attempts,
                attempts=self.order.attempts,
                log_status="failed",
            )
        permit = self._permit()
        # The rate-limit slot comes before a purchase is sent; an order that cannot get one
        # waits without an attempt to account for (a fresh order's mark, set by its claim,
        # is cleared again by _defer).
        with self._slot():
            return self._purchase_now(request, attempt, permit)

    def _purchase_now(self, request: FulfillmentRequest, attempt: int, permit: Any) -> Outcome:
        # Marked by the claim (a fresh order) and the lease still young: straight to the POST.
        # Otherwise begin_purchase marks the attempt and renews the lease.
        if not self.begun_unsent or self._lease_age() > self.deps.claim_ttl_s / 4:
            if not self.deps.store.begin_purchase(
                self.order.id, self.token, attempt, ttl_s=self.deps.claim_ttl_s
            ):
                self.log.warning("worker.claim_lost", stage="begin_purchase")
                return Outcome.CLAIM_LOST
            self.leased_at = time.monotonic()
        self.begun_unsent = False  # from here a purchase may be sent: the mark stays
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
            return self._purchase_failed(request, attempt, exc)
        self.log.info(
            "vendor.purchase_answered",
            vendor_status=answer.status,
            latency_ms=answer.latency_ms,
            request_id=answer.request_id,
        )
        metrics.ATTEMPTS.labels(outcome=answer.status, error_code="none").inc()
        if answer.status == "success":
            return self._succeeded(request, attempt, answer, action="purchase")
        if answer.status == "pending":
            self.order = replace(self.order, status_checks=0)
            return self._check_again(
                request,
                attempt,
                OrderStatus.PROCESSING,
                answer=answer,
                action="purchase",
                attempts=attempt,
            )
        failed = TransientVendorError(
            "vendor reports the transaction failed",
            code="VENDOR_FAILED",
            http_status=answer.http_status,
            raw=answer.raw,
            latency_ms=answer.latency_ms,
        )
        return self._failed(request, attempt, failed)

    def _purchase_failed(
        self, request: FulfillmentRequest, attempt: int, exc: VendorError
    ) -> Outcome:
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
        answer: VendorAnswer | None = None
        if isinstance(exc, OutcomeUnknown):
            # The vendor may have delivered: ask at once rather than after the backoff.
            try:
                answer = self._vendor(lambda: self.deps.vendor.status(self.order.id))
            except (VendorError, _Deferred):
                answer = None
            if answer is not None and answer.status == "success":
                return self._succeeded(
                    request,
                    attempt,
                    answer,
                    action="purchase",
                    error=exc,
                    note="purchase answer lost; delivery confirmed by status",
                )
            if answer is not None and answer.status == "pending":
                return self._check_again(
                    request,
                    attempt,
                    OrderStatus.PROCESSING,
                    answer=answer,
                    action="purchase",
                    attempts=attempt,
                )
        return self._failed(request, attempt, exc, answer=answer)

    # -- the vendor, behind the fleet's circuit breaker ----------------------------------

    def _permit(self) -> Any:
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

    def _vendor(self, call: Callable[[], VendorAnswer], *, permit: Any = None) -> VendorAnswer:
        permit = permit or self._permit()
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

    def _call_and_record(self, call: Callable[[], VendorAnswer], permit: Any) -> VendorAnswer:
        try:
            answer = call()
        except VendorError as exc:
            wide = _vendor_wide(exc)
            self._report(success=not wide, probe=permit.probe)
            if isinstance(exc, InsufficientBalance):
                self.deps.breaker.trip(self.deps.balance_pause_s, "insufficient_balance")
            if isinstance(exc, RateLimited) and exc.retry_after_s:
                # The vendor asked everyone to wait: the whole fleet pauses, not one order.
                self.deps.breaker.trip(exc.retry_after_s, "rate_limited", alert=False)
            if (wide and (permit.probe or self.deps.breaker.is_open())) or isinstance(
                exc, InsufficientBalance
            ):
                self.spare_attempt = True
            raise
        self._report(success=True, probe=permit.probe)
        return answer

    def _defer(self, delay_s: float) -> Outcome:
        """The circuit is open: give the order back, due when it may close; nothing spent."""
        wait = max(delay_s, 0.5) + random.uniform(0, min(5.0, max(delay_s, 0.5)))  # noqa: S311
        status = self.claim.previous_status  # pending stays pending, a retry stays failed
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

    # -- writing outcomes ------------------------------------------------------------------

    def _succeeded(
        self,
        request: FulfillmentRequest,
        attempt: int,
        answer: VendorAnswer,
        *,
        action: str,
        note: str | None = None,
        error: VendorError | None = None,
    ) -> Outcome:
        ok = self._record(
            request,
            action=action,
            log_status="success",
            attempt=attempt,
            status=OrderStatus.SUCCESS,
            attempts=max(attempt, self.order.attempts),
            answer=answer,
            error=error,
            error_message=note,
        )
        if ok:
            self.log.info(
                "fulfillment.succeeded", attempt=attempt, transaction_id=answer.transaction_id
            )
            metrics.OUTCOMES.labels(outcome="success", network=self.order.network).inc()
            age = (datetime.now(UTC) - self.order.created_at).total_seconds()
            metrics.TIME_TO_SUCCESS.observe(max(age, 0.0))
        return Outcome.SUCCESS if ok else Outcome.CLAIM_LOST

    def _failed(
        self,
        request: FulfillmentRequest,
        attempt: int,
        exc: VendorError,
        *,
        answer: VendorAnswer | None = None,
    ) -> Outcome:
        if self.spare_attempt and isinstance(exc, TransientVendorError):
            # The vendor was down for everyone (circuit open, or this was its probe): the
            # order waits for it without spending an attempt.
            exc = _SparedFailure(
                str(exc),
                code=exc.code,
                http_status=exc.http_status,
                raw=exc.raw,
                latency_ms=exc.latency_ms,
            )
        decision = decide(attempt, exc, self.policy, deferrals=self.order.deferrals)
        if isinstance(decision, DeadLetter) and isinstance(exc, OutcomeUnknown) and answer is None:
            # The last attempt's outcome is unknown and the check after it failed too: the
            # vendor may have delivered. Find out (status checks) before giving up on it.
            checks = self.order.status_checks + 1
            check = decide_status_check(checks, self.policy)
            if not isinstance(check, DeadLetter):
                ok = self._record(
                    request,
                    action="purchase",
                    log_status="failed",
                    attempt=attempt,
                    status=OrderStatus.PROCESSING,
                    attempts=attempt - 1,
                    in_flight=attempt,
                    status_checks=checks,
                    delay_s=check.delay_s,
                    error=exc,
                )
                if not ok:
                    return Outcome.CLAIM_LOST
                metrics.RETRIES.labels(reason="status_check").inc()
                self.deps.publish_retry(self.order.id, check.delay_s)
                return Outcome.PENDING
        consumed = exc.consumes_attempt if isinstance(exc, TransientVendorError) else True
        attempts = attempt if consumed else attempt - 1
        if isinstance(decision, DeadLetter):
            return self._dead_letter(
                request,
                decision.reason,
                action="purchase",
                attempt=attempt,
                attempts=attempts,
                error=exc,
                answer=answer,
                log_status="failed",
            )
        deferrals = self.order.deferrals + (0 if decision.consumes_attempt else 1)
        ok = self._record(
            request,
            action="purchase",
            log_status="failed",
            attempt=attempt,
            status=OrderStatus.FAILED,
            attempts=attempts,
            deferrals=deferrals,
            delay_s=decision.delay_s,
            error=exc,
            answer=answer,
        )
        if not ok:
            return Outcome.CLAIM_LOST
        self.log.info(
            "fulfillment.retry_scheduled",
            attempt=attempt,
            error_code=exc.code,
            delay_s=decision.delay_s,
            attempt_consumed=decision.consumes_attempt,
        )
        metrics.RETRIES.labels(
            reason="transient" if decision.consumes_attempt else "rate_limited"
        ).inc()
        self.deps.publish_retry(self.order.id, decision.delay_s)
        return Outcome.RETRY_SCHEDULED

    def _dead_letter(
        self,
        request: FulfillmentRequest | None,
        reason: str,
        *,
        action: str,
        attempt: int,
        attempts: int,
        log_status: str,
        error: VendorError | None = None,
        answer: VendorAnswer | None = None,
    ) -> Outcome:
        ok = self._record(
            request,
            action=action,
            log_status=log_status,
            attempt=attempt,
            status=OrderStatus.FAILED,
            attempts=attempts,
            error=error,
            answer=answer,
            dead_letter_reason=reason,
        )
        if not ok:
            return Outcome.CLAIM_LOST
        self.log.warning(
            "fulfillment.dead_lettered", reason=reason, error_code=error.code if error else None
        )
        return self._announce_dead_letter(
            reason, error.code if error else None, metrics.dead_letter_kind(reason)
        )

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

    def _announce_dead_letter(self, reason: str, error_code: str | None, kind: str) -> Outcome:
        """The order is marked for a dead letter: count it and tell the dead-letter consumer."""
        metrics.OUTCOMES.labels(outcome="dead_lettered", network=self.order.network).inc()
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

    def _record(
        self,
        request: FulfillmentRequest | None,
        *,
        action: str,
        log_status: str,
        attempt: int,
        status: OrderStatus,
        attempts: int,
        in_flight: int | None = None,
        status_checks: int | None = None,
        deferrals: int | None = None,
        delay_s: float | None = None,
        answer: VendorAnswer | None = None,
        error: VendorError | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        dead_letter_reason: str | None = None,
        keep_claim: bool = False,
    ) -> bool:
        raw: Any = answer.raw if answer is not None else None
        if error is not None:
            raw = {"error": error.raw, "status_check": raw} if raw is not None else error.raw
        ok = self.deps.store.finish_call(
            CallRecord(
                order_id=self.order.id,
                token=self.token,
                network=self.order.network or NETWORK_AT_ISHARE,
                phone_number=request.phone_number if request else (self.order.phone_number or ""),
                action=action,
                log_status=log_status,
                attempt_number=attempt,
                max_attempts=self.max_attempts,
                status=status,
                attempts=attempts,
                in_flight=in_flight,
                status_checks=status_checks
                if status_checks is not None
                else (self.order.status_checks if status is OrderStatus.PROCESSING else 0),
                deferrals=deferrals if deferrals is not None else self.order.deferrals,
                delay_s=delay_s,
                http_status=(
                    answer.http_status if answer else error.http_status if error else None
                ),
                api_response=raw,
                error_code=error_code or (error.code if error else None),
                error_message=error_message or (str(error)[:500] if error else None),
                latency_ms=(answer.latency_ms if answer else error.latency_ms if error else None),
                transaction_id=answer.transaction_id if answer else None,
                dead_letter_reason=dead_letter_reason,
                worker=self.deps.worker,
                keep_claim=keep_claim,
            )
        )
        if not ok:
            self.log.warning("worker.claim_lost", stage=action, log_status=log_status)
        return ok
