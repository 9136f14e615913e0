"""The reconciler: PostgreSQL is the truth, so sweep it for orders whose message was lost.

One pass finds orders pending with no attempt after the grace period, orders processing
whose claim expired (a worker killed mid-call: their status is confirmed with the vendor
here), orders whose retry or status check is overdue (the delayed message was lost), and
failed orders the dead-letter consumer never flagged. It re-enqueues each. It is the reason
a Redis restart loses no order. Safe to run on several hosts (rows are locked while swept).
Orders of a paused scope (fleet_pauses: the whole fleet or their network) are not re-enqueued
for anything that would buy (pending, an overdue retry or status check); an expired claim's
recovery and an unflagged dead letter never buy, so they go on (sweep_due_orders).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from db.store import Store
from fulfillment.domain.errors import FulfillmentError
from fulfillment.services.delivery import fulfil
from fulfillment.services.notifier import Notifier
from fulfillment.services.outbox import OutboxPublisher
from fulfillment.services.ports import DeadLetterNotice, FulfilDeps
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.reconciler")

#: How long a vendor callback's digest is kept to recognise its replays (signatures are
#: accepted for 300 s).
CALLBACK_MEMORY_S = 86400.0


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    by_reason: dict[str, int]
    notifications_resent: int
    #: outbox rows re-enqueued: {"sms": n, "events": n}
    outbox_requeued: dict[str, int] | None = None

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


def reconcile_once(
    deps: FulfilDeps,
    notifier: Notifier,
    *,
    grace_s: float,
    limit: int = 500,
    webhook_max_attempts: int = 30,  # tries, 3 per send: about 10 sends
    outbox: OutboxPublisher | None = None,
    outbox_grace_s: float = 60.0,
) -> ReconcileReport:
    counts: Counter[str] = Counter()
    due = deps.store.sweep_due_orders(grace_s=grace_s, limit=limit) if deps.enabled else []
    for item in due:
        counts[item.reason] += 1
        try:
            if item.reason == "claim_expired":
                outcome = fulfil(item.order_id, deps, allow_purchase=False)  # announces
                log.warning(
                    "reconciler.claim_recovered", order_id=item.order_id, outcome=outcome.value
                )
            elif item.reason == "dead_letter_unflagged":
                deps.publish_dead_letter(
                    DeadLetterNotice(
                        kind="dead_letter",
                        order_id=item.order_id,
                        reason=item.dead_letter_reason or "dead letter lost in transit",
                        error_code=item.last_error_code,
                        generation=item.generation,
                        source="reconciler",
                    )
                )
            else:
                deps.publish_retry(item.order_id, 0.0)
                log.info("reconciler.requeued", order_id=item.order_id, reason=item.reason)
        except FulfillmentError as exc:
            log.error(
                "reconciler.order_failed",
                order_id=item.order_id,
                reason=item.reason,
                error=str(exc),
            )
    deps.store.prune_callbacks(keep_s=CALLBACK_MEMORY_S)
    resent = _resend_notifications(
        deps.store, notifier, grace_s=grace_s, max_attempts=webhook_max_attempts
    )
    requeued = None
    if outbox is not None:
        try:
            requeued = outbox.sweep(grace_s=outbox_grace_s, limit=limit)
        except FulfillmentError as exc:
            log.error("reconciler.outbox_failed", error=str(exc))
    report = ReconcileReport(
        by_reason=dict(counts), notifications_resent=resent, outbox_requeued=requeued
    )
    log.info(
        "reconciler.pass_done",
        found=report.total,
        notifications_resent=resent,
        outbox_requeued=requeued,
        enabled=deps.enabled,
        **report.by_reason,
    )
    return report


def _resend_notifications(
    store: Store, notifier: Notifier, *, grace_s: float, max_attempts: int
) -> int:
    if not notifier.webhook_url:
        return 0
    rows = store.undelivered_notifications(max_attempts=max_attempts, grace_s=grace_s)
    for row in rows:
        notifier.send(
            int(row["id"]),
            kind=row["kind"],
            order_id=str(row["order_id"]) if row["order_id"] else None,
            message=row["message"],
            details=dict(row["details"]),
            created_at=row["created_at"],
        )
    return len(rows)


def run_forever(
    once: Callable[[], ReconcileReport], *, interval_s: float, stop: threading.Event
) -> None:
    """Pass after pass until `stop` is set; an error in one pass never ends the loop."""
    log.info("reconciler.started", interval_s=interval_s)
    while not stop.is_set():
        try:
            once()
        except FulfillmentError as exc:
            log.error("reconciler.pass_failed", error=str(exc))
        stop.wait(interval_s)
    log.info("reconciler.stopped")
