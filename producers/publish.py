"""publish_fulfillment: the purchase path's one call after it commits an order.

It validates the order (Ghana mobile number to E.164, a network the platform sells, a size
that network sells in the package catalogue, PACKAGE_CATALOGUE_FILE) and publishes
`fulfill_order(order_id)` on the `fulfillment` queue, as a plain Dramatiq message (the
contract of DESIGN.md), so this module needs no actor and no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from fulfillment.domain.constants import FULFILL_ACTOR, FULFILLMENT_QUEUE
from fulfillment.domain.errors import InvalidOrder, MalformedMessage
from fulfillment.domain.order import FulfillmentRequest, build_request, parse_order_id
from fulfillment.domain.package import Catalogue
from fulfillment.messaging.publish import Publisher, message
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.producer")


@dataclass(frozen=True, slots=True)
class PublishResult:
    request: FulfillmentRequest
    published: bool
    #: why nothing was published: "disabled" (kill switch) or "broker_unavailable"
    reason: str | None = None


def publish_fulfillment(
    order_id: object,
    *,
    phone_number: object,
    network: object,
    size_gb: object = None,
    package_name: str | None = None,
    broker: Any = None,
    enabled: bool | None = None,
    catalogue: Catalogue | None = None,
) -> PublishResult:
    """Validate and publish. Raises InvalidOrder (naming the field) for bad input.

    With FULFILLMENT_ENABLED=false nothing is published and the order stays pending. When
    Redis is unreachable the order is still committed: the result says so and the reconciler
    publishes it after its grace period; the purchase is never failed for it.
    """
    try:
        oid = parse_order_id(order_id)
    except MalformedMessage as exc:
        raise InvalidOrder("order_id", str(exc)) from exc
    if catalogue is None:
        from fulfillment.runtime import bootstrap

        catalogue = bootstrap.catalogue()
    request = build_request(
        oid,
        phone_number=phone_number,
        network=network,
        size_gb=size_gb,
        package_name=package_name,
        catalogue=catalogue,
    )
    if enabled is None:
        from fulfillment.runtime import bootstrap

        enabled = bootstrap.settings().fulfillment_enabled
    if not enabled:
        log.info("producer.disabled", order_id=oid, network=request.network)
        return PublishResult(request, published=False, reason="disabled")
    if broker is None:
        from fulfillment.runtime import bootstrap

        broker = bootstrap.install_broker()
    try:
        Publisher(broker).send(message(FULFILLMENT_QUEUE, FULFILL_ACTOR, oid))
    except (RedisError, OSError) as exc:
        log.warning(
            "producer.publish_failed",
            order_id=oid,
            network=request.network,
            error=type(exc).__name__,
            recovery="reconciler",
        )
        return PublishResult(request, published=False, reason="broker_unavailable")
    log.info(
        "producer.published",
        order_id=oid,
        network=request.network,
        phone=request.phone_number,
        size_gb=str(request.size_gb),
    )
    return PublishResult(request, published=True)
