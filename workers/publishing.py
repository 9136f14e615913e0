"""Sending the fleet's own messages. A failed send is logged, never raised: PostgreSQL holds
the state, and the reconciler re-enqueues whatever a lost message left behind."""

from __future__ import annotations

from redis.exceptions import RedisError

from fulfillment.logs import get_logger
from workers.actors import dead_letter_order, fulfill_order
from workers.contracts import DeadLetterNotice

log = get_logger("fulfillment.publishing")


def publish_retry(order_id: str, delay_s: float) -> None:
    delay_ms = int(delay_s * 1000) if delay_s > 0 else None
    try:
        fulfill_order.send_with_options(args=(order_id,), delay=delay_ms)
    except (RedisError, OSError) as exc:
        log.error(
            "broker.publish_failed",
            order_id=order_id,
            queue="fulfillment",
            error=type(exc).__name__,
        )


def publish_dead_letter(notice: DeadLetterNotice) -> None:
    try:
        dead_letter_order.send(notice.to_message())
    except (RedisError, OSError) as exc:
        log.error(
            "broker.publish_failed",
            order_id=notice.order_id,
            queue="fulfillment.deadletter",
            error=type(exc).__name__,
            kind=notice.kind,
        )
        if notice.order_id is None:
            # Not an order: nothing for the reconciler to find later, so store it now.
            from fulfillment import bootstrap
            from workers.deadletter import handle_dead_letter

            handle_dead_letter(notice, bootstrap.store(), bootstrap.notifier())
