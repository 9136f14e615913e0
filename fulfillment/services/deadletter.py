"""The dead-letter consumer: flag the order (failed, when, why), notify admins once, log it.

Everything that cannot be delivered ends here: attempts used up, permanent vendor errors,
invalid orders, malformed messages, and messages Dramatiq itself gave up on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from db.store import Store
from fulfillment.domain.errors import FulfillmentError, MalformedMessage
from fulfillment.domain.order import OrderStatus, order_id_from_message
from fulfillment.services.notifier import Notifier
from fulfillment.services.ports import DeadLetterNotice, Outcome
from fulfillment.telemetry import metrics
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.deadletter")


def handle_dead_letter(
    notice: DeadLetterNotice,
    store: Store,
    notifier: Notifier,
    announce: Callable[[str], None] | None = None,
) -> bool:
    """Flag and notify; True when this notice raised a new notification (idempotent).
    `announce(order_id)`: the outcome's SMS and event, written with the flag, sent now."""
    if notice.kind == "dead_letter" and notice.order_id:
        row = store.flag_dead_letter(
            notice.order_id,
            reason=notice.reason,
            error_code=notice.error_code,
            generation=notice.generation,
            source=notice.source,
        )
        if row is None or row["notification_id"] is None:
            log.info(
                "deadletter.already_handled",
                order_id=notice.order_id,
                reason=notice.reason,
                source=notice.source,
            )
            return False
        log.warning(
            "deadletter.order_flagged",
            order_id=notice.order_id,
            reason=row["dead_letter_reason"],
            attempt=row["fulfillment_attempts"],
            error_code=row["last_error_code"],
            source=notice.source,
        )
        if announce is not None:
            announce(notice.order_id)
        notifier.send(
            int(row["notification_id"]),
            kind="dead_letter",
            order_id=notice.order_id,
            message=row["message"],
            details=dict(row["details"]),
        )
        return True
    basis = notice.message_id or f"{notice.reason}|{notice.excerpt}"
    digest = hashlib.sha256(basis.encode()).hexdigest()[:24]
    metrics.DEAD_LETTERS.labels(reason=notice.kind).inc()
    log.warning(
        "deadletter.message_rejected",
        kind=notice.kind,
        reason=notice.reason,
        order_id=notice.order_id,
        source=notice.source,
    )
    return notifier.raise_once(
        kind=notice.kind,
        message=notice.reason,
        dedupe_key=f"{notice.kind}:{digest}",
        order_id=None,
        details={
            "excerpt": notice.excerpt,
            "source": notice.source,
            "error_code": notice.error_code,
            "message_id": notice.message_id,
        },
    )


#: What settle may leave for the flag: the order goes to a human (as the vendor has it).
_FOR_A_HUMAN = frozenset({Outcome.DEAD_LETTERED, Outcome.NOT_DUE, Outcome.CLAIM_LOST})


def _may_be_bought(order_id: str, store: Store) -> bool:
    """An attempt in flight or the vendor's pending: flagging it failed could refund a
    delivered order. One a worker still holds raises OrderBusy (Dramatiq retries later)."""
    order = store.get_order(order_id)
    if order is None or order.dead_letter_reason is not None:
        return False
    if order.in_flight_attempt is None and order.status is not OrderStatus.PROCESSING:
        return False
    if order.claim_expires_at is not None and order.claim_expires_at > datetime.now(UTC):
        raise OrderBusy(f"order {order_id} is held by a worker until its claim ends")
    return True


class OrderBusy(FulfillmentError):
    """The order is under a live claim: the dead letter waits for it (Dramatiq retries)."""

    code = "ORDER_BUSY"


def handle_gave_up(
    notice: DeadLetterNotice,
    store: Store,
    notifier: Notifier,
    settle: Callable[[str], Outcome] | None = None,
    announce: Callable[[str], None] | None = None,
) -> bool:
    """Like handle_dead_letter, but an order a worker still holds is retried later, not lost,
    and one the vendor may hold is first looked up (`settle`: fulfillment.services.delivery's
    settle_for_dead_letter), so that it is flagged only as what the vendor says it is."""
    if settle is not None and notice.order_id and _may_be_bought(notice.order_id, store):
        outcome = settle(notice.order_id)
        if outcome not in _FOR_A_HUMAN:
            log.warning("deadletter.settled_by_vendor", order_id=notice.order_id, outcome=outcome)
            return False
    if handle_dead_letter(notice, store, notifier, announce):
        return True
    if notice.order_id:
        order = store.get_order(notice.order_id)
        if (
            order is not None
            and order.claim_token is not None
            and order.claim_expires_at is not None
            and order.claim_expires_at > datetime.now(UTC)
        ):
            raise OrderBusy(f"order {notice.order_id} is held by a worker until its claim ends")
    return False


def notice_for_gave_up(
    message_data: object, retry_info: object, store: Store
) -> DeadLetterNotice | None:
    """Dramatiq gave up on a fulfill_order message (unexpected exceptions, retries used up).

    None when the failure was the database being unreachable: the order's state is intact
    in PostgreSQL and the reconciler re-enqueues it once the database is back.
    """
    data: dict[str, Any] = message_data if isinstance(message_data, dict) else {}
    options = data.get("options") if isinstance(data.get("options"), dict) else {}
    traceback = str((options or {}).get("traceback") or "")
    last_line = traceback.strip().splitlines()[-1][:300] if traceback.strip() else "unknown error"
    retries = retry_info.get("retries") if isinstance(retry_info, dict) else None
    message_id = str(data.get("message_id") or "")[:64] or None
    args = data.get("args")
    kwargs = data.get("kwargs")
    try:
        order_id = order_id_from_message(
            tuple(args) if isinstance(args, list | tuple) else (args,),
            kwargs if isinstance(kwargs, dict) else {},
        )
    except MalformedMessage as exc:
        return DeadLetterNotice(
            kind="malformed_message",
            reason=str(exc),
            source="dramatiq",
            excerpt=repr(args)[:300],
            message_id=message_id,
        )
    if "StoreError" in last_line or "ConfigurationError" in last_line:
        # Not the order's fault: its state is intact and the reconciler re-enqueues it once
        # the database is back or the configuration is fixed.
        log.error("deadletter.gave_up_fleet_problem", order_id=order_id, error=last_line)
        return None
    order = store.get_order(order_id)
    if order is None:
        return DeadLetterNotice(
            kind="unknown_order",
            reason=f"no order with id {order_id}",
            source="dramatiq",
            excerpt=order_id,
            message_id=message_id,
        )
    return DeadLetterNotice(
        kind="dead_letter",
        order_id=order_id,
        error_code="WORKER_GAVE_UP",
        reason=f"worker gave up after {retries} retries: {last_line}",
        generation=order.generation,
        source="dramatiq",
        message_id=message_id,
    )


def send_dead_letter(
    notice: DeadLetterNotice,
    send: Callable[[dict[str, Any]], bool],
    keep: Callable[[DeadLetterNotice], object],
) -> None:
    """Publish a notice for the dead-letter consumer. A notice that names no order cannot be
    found again by the reconciler, so when the broker is down `keep` stores it here and now
    (only then: publishing needs no database)."""
    if not send(notice.to_message()) and notice.order_id is None:
        keep(notice)
