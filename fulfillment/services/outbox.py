"""The notifier: the customer's SMS and the platform's outcome events, each row of the
outboxes worked by whoever holds its claim, one step per message.

An SMS row moves queued -> sent -> delivered | failed | undeliverable, or queued -> skipped
(no provider configured, SMS_ENABLED=false, a number that is not a mobile one) or -> failed
(rejected, or given up). A send whose answer was not read (a timeout, a 5xx, garbage) leaves
the row in flight: its next try looks the ClientReference up before it sends again, because
the provider does not deduplicate. Its text is rendered once and kept, so every try sends
the same. A sent SMS's report is polled (the provider sends no callbacks).

An event row is POSTed, body as stored, until a 2xx, then the next event of its order is
sent: the platform hears an order's events in order. After EVENT_MAX_ATTEMPTS it is failed
(a list, a metric, an alert) until an admin resends it.

Each step either ends the row or schedules the next one (publish with a delay); a lost message
is the reconciler's to re-enqueue (sweep_outboxes).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from db.outbox_store import EventRow, OutboxStore, SmsRow
from fulfillment.domain.errors import InvalidPhoneNumber
from fulfillment.domain.phone import normalize_ghana_mobile
from fulfillment.domain.sms import SmsFields, SmsTemplates
from fulfillment.notify.platform_webhook import PostResult
from fulfillment.notify.sms_provider import (
    SmsOutcomeUnknown,
    SmsRejected,
    SmsReport,
    SmsRetryLater,
)
from fulfillment.telemetry import metrics
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.notifier")

#: waits between sends of one SMS (the last repeats), and between reads of its report
SMS_DELAYS_S: tuple[float, ...] = (30.0, 120.0, 600.0, 1800.0)
SMS_REPORT_DELAYS_S: tuple[float, ...] = (10.0, 30.0, 120.0, 600.0)
#: waits between POSTs of one event (the last repeats)
EVENT_DELAYS_S: tuple[float, ...] = (10.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
#: an SMS whose provider never answers the same way: a report of `failed`
PROVIDER_STATUSES = frozenset({"pending", "delivered", "failed", "undeliverable"})


class SmsClient(Protocol):
    """The SMS provider (fulfillment/notify/sms_provider.py)."""

    def send(self, *, sender: str, to: str, content: str, client_reference: str) -> str: ...

    def lookup(self, client_reference: str) -> list[SmsReport]: ...

    def report(self, message_id: str) -> SmsReport | None: ...


class EventClient(Protocol):
    """The platform's webhook (fulfillment/notify/platform_webhook.py)."""

    def post(self, body: str) -> PostResult: ...


def _delay(delays: tuple[float, ...], done: int) -> float:
    return delays[min(max(done, 1), len(delays)) - 1]


@dataclass(frozen=True, slots=True)
class SmsDeps:
    outbox: OutboxStore
    #: None: SMS_API_URL is not set, every SMS is stored as skipped
    client: SmsClient | None
    sender_id: str
    templates: SmsTemplates
    #: SMS_ENABLED: false stores every SMS as skipped
    enabled: bool
    publish: Callable[[int, float], None]
    max_sends: int = 6
    max_status_checks: int = 20
    claim_ttl_s: float = 60.0
    delays_s: tuple[float, ...] = SMS_DELAYS_S
    report_delays_s: tuple[float, ...] = SMS_REPORT_DELAYS_S


@dataclass(frozen=True, slots=True)
class EventDeps:
    outbox: OutboxStore
    #: None: PLATFORM_WEBHOOK_URL is not set, events are only stored
    client: EventClient | None
    publish: Callable[[int, float], None]
    max_attempts: int = 12
    claim_ttl_s: float = 60.0
    delays_s: tuple[float, ...] = EVENT_DELAYS_S
    #: how long an event waits to look again when there is no URL to POST it to
    unconfigured_delay_s: float = 3600.0


# -- customer SMS --------------------------------------------------------------------------


def send_sms(sms_id: int, deps: SmsDeps) -> str:
    """One step of one SMS; what happened (for logs and tests)."""
    token = str(uuid.uuid4())
    row = deps.outbox.claim_sms(sms_id, token, ttl_s=deps.claim_ttl_s)
    if row is None:
        return "not_due"
    step = _SmsStep(row, token, deps)
    outcome = step.report() if row.status == "sent" else step.send()
    log.info(
        "sms.step",
        sms_id=row.id,
        order_id=row.order_id,
        kind=row.kind,
        generation=row.generation,
        outcome=outcome,
    )
    return outcome


class _SmsStep:
    def __init__(self, row: SmsRow, token: str, deps: SmsDeps) -> None:
        self.row, self.token, self.deps = row, token, deps
        self.outbox = deps.outbox

    # queued: send it (after looking up a send whose answer was lost)
    def send(self) -> str:
        row, deps = self.row, self.deps
        why_not = self._why_not_sent()
        if why_not is not None:
            return self._final("skipped", skip_reason=why_not, content=self._text())
        assert deps.client is not None
        if row.in_flight:
            found = self._lookup()
            if found is not None:
                return found
        if row.attempts >= deps.max_sends:
            return self._final("failed", error=f"gave up after {row.attempts} send(s)")
        text = self.outbox.sms_sending(row.id, self.token, self._text())
        if text is None:
            return "claim_lost"
        try:
            message_id = deps.client.send(
                sender=deps.sender_id,
                to=row.phone_number or "",
                content=text,
                client_reference=row.client_reference,
            )
        except SmsRejected as exc:
            metrics.SMS_PROVIDER_ERRORS.labels("rejected").inc()
            status = "undeliverable" if exc.code == "INVALID_RECIPIENT" else "failed"
            return self._final(status, error=f"rejected: {exc.code}")
        except SmsRetryLater as exc:
            metrics.SMS_PROVIDER_ERRORS.labels("retry_later").inc()
            delay = max(exc.retry_after_s or 0.0, _delay(deps.delays_s, row.attempts + 1))
            return self._later(delay, in_flight=False, error=exc.reason)
        except SmsOutcomeUnknown as exc:
            metrics.SMS_PROVIDER_ERRORS.labels("unknown").inc()
            delay = _delay(deps.delays_s, row.attempts + 1)
            return self._later(delay, in_flight=True, error=f"outcome unknown: {exc.reason}")
        metrics.SMS_SENT.labels(row.kind).inc()
        return self._sent(message_id, "pending", checks=0)

    def _why_not_sent(self) -> str | None:
        if not self.deps.enabled:
            return "SMS_ENABLED is false"
        if self.deps.client is None:
            return "SMS_API_URL is not set"
        try:
            normalize_ghana_mobile(self.row.phone_number)
        except InvalidPhoneNumber as exc:
            return f"cannot receive an SMS: {exc}"
        return None

    def _lookup(self) -> str | None:
        """After a send whose answer was lost: the provider's record of it, if it has one."""
        assert self.deps.client is not None
        try:
            found = self.deps.client.lookup(self.row.client_reference)
        except SmsRetryLater as exc:
            metrics.SMS_PROVIDER_ERRORS.labels("retry_later").inc()
            delay = _delay(self.deps.delays_s, self.row.attempts)
            return self._later(delay, in_flight=True, error=f"lookup: {exc.reason}")
        if not found:
            return None  # never received: sending again is safe
        metrics.SMS_SENT.labels(self.row.kind).inc()
        return self._settle(found[0], found_by_lookup=True)

    # sent: read its report
    def report(self) -> str:
        row, deps = self.row, self.deps
        if deps.client is None or row.provider_message_id is None:
            return self._final("sent", error="no report: the provider is no longer configured")
        try:
            found = deps.client.report(row.provider_message_id)
        except SmsRetryLater as exc:
            metrics.SMS_PROVIDER_ERRORS.labels("retry_later").inc()
            return self._poll_again(error=f"report: {exc.reason}", provider_status=None)
        if found is None:
            return self._poll_again(error="report: unknown message id", provider_status=None)
        return self._settle(found, found_by_lookup=False)

    def _settle(self, found: SmsReport, *, found_by_lookup: bool) -> str:
        status = found.status if found.status in PROVIDER_STATUSES else "pending"
        if status == "pending":
            if found_by_lookup:
                return self._sent(found.message_id, status, checks=0)
            return self._poll_again(error=None, provider_status=status)
        if found_by_lookup:
            self.outbox.sms_sent(
                self.row.id,
                self.token,
                message_id=found.message_id,
                provider_status=status,
                delay_s=0.0,
            )
            self.deps.publish(self.row.id, 0.0)  # the next step reads the last word
            return "found_" + status
        return self._final(status, provider_status=status)

    def _poll_again(self, *, error: str | None, provider_status: str | None) -> str:
        checks = self.row.status_checks + 1
        if checks >= self.deps.max_status_checks:
            return self._final("sent", error=f"no final report after {checks} check(s)")
        delay = _delay(self.deps.report_delays_s, checks)
        self.outbox.sms_later(
            self.row.id,
            self.token,
            delay_s=delay,
            in_flight=False,
            error=error,
            checked=True,
            provider_status=provider_status,
        )
        self.deps.publish(self.row.id, delay)
        return "report_pending"

    def _sent(self, message_id: str, provider_status: str, *, checks: int) -> str:
        delay = _delay(self.deps.report_delays_s, checks + 1)
        self.outbox.sms_sent(
            self.row.id,
            self.token,
            message_id=message_id,
            provider_status=provider_status,
            delay_s=delay,
        )
        self.deps.publish(self.row.id, delay)
        return "sent"

    def _later(self, delay: float, *, in_flight: bool, error: str) -> str:
        self.outbox.sms_later(
            self.row.id, self.token, delay_s=delay, in_flight=in_flight, error=error
        )
        self.deps.publish(self.row.id, delay)
        return "retry_scheduled"

    def _final(
        self,
        status: str,
        *,
        provider_status: str | None = None,
        error: str | None = None,
        skip_reason: str | None = None,
        content: str | None = None,
    ) -> str:
        self.outbox.sms_final(
            self.row.id,
            self.token,
            status,
            provider_status=provider_status,
            error=error,
            skip_reason=skip_reason,
            content=content,
        )
        metrics.SMS_RESULTS.labels(self.row.kind, status).inc()
        if status in ("failed", "undeliverable"):
            log.warning(
                "sms.not_delivered",
                sms_id=self.row.id,
                order_id=self.row.order_id,
                status=status,
                error=error,
            )
        return status

    def _text(self) -> str:
        if self.row.content is not None:
            return self.row.content
        fields = SmsFields.for_order(
            order_id=self.row.order_id,
            network=self.row.network,
            phone_number=self.row.phone_number,
            package=self.row.package_name,
            size_gb=self.row.size_gb,
        )
        return self.deps.templates.render(
            self.row.kind,
            self.row.network,
            refund_advised=self.row.refund_advised,
            fields=fields,
        )


# -- platform events -----------------------------------------------------------------------


def send_event(row_id: int, deps: EventDeps) -> str:
    """One POST of one event (or none: not due, or behind an earlier one of its order)."""
    token = str(uuid.uuid4())
    event = deps.outbox.claim_event(row_id, token, ttl_s=deps.claim_ttl_s)
    if event is None:
        return "not_due"
    if deps.client is None:
        deps.outbox.event_result(
            event.id,
            token,
            "pending",
            http_status=None,
            error="PLATFORM_WEBHOOK_URL is not set: stored only",
            delay_s=deps.unconfigured_delay_s,
            counted=False,
        )
        return "stored_only"
    result = deps.client.post(event.body)
    outcome = _record_post(event, token, result, deps)
    log.info(
        "platform_event.step",
        event_id=event.event_id,
        order_id=event.order_id,
        type=event.type,
        generation=event.generation,
        http_status=result.http_status,
        outcome=outcome,
    )
    return outcome


def _record_post(event: EventRow, token: str, result: PostResult, deps: EventDeps) -> str:
    outbox = deps.outbox
    if result.delivered:
        outbox.event_result(
            event.id, token, "delivered", http_status=result.http_status, error=None
        )
        metrics.EVENTS_DELIVERED.labels(event.type).inc()
        following = outbox.event_next_of_order(event.id)
        if following is not None:
            deps.publish(following, 0.0)
        return "delivered"
    attempts = event.attempts + 1
    error = result.error or f"HTTP {result.http_status}"
    if attempts >= deps.max_attempts:
        outbox.event_result(event.id, token, "failed", http_status=result.http_status, error=error)
        metrics.EVENT_FAILURES.labels("gave_up").inc()
        log.error(
            "platform_event.gave_up",
            event_id=event.event_id,
            order_id=event.order_id,
            attempts=attempts,
            error=error,
        )
        return "failed"
    delay = _delay(deps.delays_s, attempts)
    outbox.event_result(
        event.id, token, "pending", http_status=result.http_status, error=error, delay_s=delay
    )
    metrics.EVENT_FAILURES.labels("retry").inc()
    deps.publish(event.id, delay)
    return "retry_scheduled"


# -- after an outcome, and the reconciler's sweep ------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxPublisher:
    """Enqueues the notifier's messages: send_customer_sms(id), send_platform_event(id)."""

    outbox: OutboxStore
    sms: Callable[[int, float], None]
    event: Callable[[int, float], None]

    def announce(self, order_id: str) -> int:
        """After an order's outcome committed: its new SMS and event, now. How many."""
        due = self.outbox.order_outbox_due(order_id)
        for box, row_id in due:
            (self.sms if box == "sms" else self.event)(row_id, 0.0)
        return len(due)

    def sweep(self, *, grace_s: float, limit: int = 500) -> dict[str, int]:
        """Re-enqueue the rows overdue by more than the grace (their message was lost)."""
        sms = self.outbox.due_sms(grace_s=grace_s, limit=limit)
        events = self.outbox.due_events(grace_s=grace_s, limit=limit)
        for row_id in sms:
            self.sms(row_id, 0.0)
        for row_id in events:
            self.event(row_id, 0.0)
        return {"sms": len(sms), "events": len(events)}
