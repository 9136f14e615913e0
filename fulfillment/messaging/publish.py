"""Sending messages, by queue and actor name: the one way every process publishes.

A message is a plain Dramatiq message (the contract of DESIGN.md), so nothing here needs an
actor object or imports the worker. A failed send is logged and reported as False, never
raised: PostgreSQL holds the state, and the reconciler re-enqueues what a lost message left.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis.exceptions import RedisError

from fulfillment.domain.constants import (
    DEAD_LETTER_ACTOR,
    DEAD_LETTER_QUEUE,
    EVENT_ACTOR,
    EVENTS_QUEUE,
    FULFILL_ACTOR,
    FULFILLMENT_QUEUE,
    SMS_ACTOR,
    SMS_QUEUE,
)
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.publishing")


def build_broker(url: str, namespace: str) -> RedisBroker:
    """A Redis broker; constructing it opens no connection."""
    broker: RedisBroker = RedisBroker(url=url, namespace=namespace)  # type: ignore[no-untyped-call]
    return broker


def message(queue: str, actor: str, *args: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue, actor_name=actor, args=args, kwargs={}, options={})


class Publisher:
    """Publishes the fleet's own messages on one broker."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def send(self, msg: dramatiq.Message[Any], delay_s: float = 0) -> None:
        """Enqueue; raises RedisError/OSError when the broker cannot be reached."""
        delay_ms = int(delay_s * 1000) if delay_s > 0 else None
        self.broker.enqueue(msg, delay=delay_ms)

    def fulfil(self, order_id: str, delay_s: float = 0) -> bool:
        """`fulfill_order(order_id)`, now or after `delay_s`."""
        msg = message(FULFILLMENT_QUEUE, FULFILL_ACTOR, order_id)
        return self._logged_send(msg, delay_s, order_id=order_id)

    def dead_letter(self, notice: dict[str, Any]) -> bool:
        """`dead_letter_order(notice)`: a DeadLetterNotice's message."""
        msg = message(DEAD_LETTER_QUEUE, DEAD_LETTER_ACTOR, notice)
        return self._logged_send(msg, 0, order_id=notice.get("order_id"), kind=notice.get("kind"))

    def sms(self, sms_id: int, delay_s: float = 0) -> bool:
        """`send_customer_sms(sms_id)`: one step of a customer_sms row."""
        msg = message(SMS_QUEUE, SMS_ACTOR, sms_id)
        return self._logged_send(msg, delay_s, sms_id=sms_id)

    def event(self, row_id: int, delay_s: float = 0) -> bool:
        """`send_platform_event(row_id)`: one POST of a platform_events row."""
        msg = message(EVENTS_QUEUE, EVENT_ACTOR, row_id)
        return self._logged_send(msg, delay_s, event_row=row_id)

    def _logged_send(self, msg: dramatiq.Message[Any], delay_s: float, **fields: Any) -> bool:
        try:
            self.send(msg, delay_s)
        except (RedisError, OSError) as exc:
            log.error(
                "broker.publish_failed", queue=msg.queue_name, error=type(exc).__name__, **fields
            )
            return False
        return True
