"""Orders as the fulfillment fleet sees them: states, allowed transitions, the validated request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from fulfillment.domain.constants import KNOWN_NETWORKS, NETWORK_AT_ISHARE
from fulfillment.domain.errors import MalformedMessage, UnsupportedNetwork
from fulfillment.domain.package import parse_package_size
from fulfillment.domain.phone import normalize_ghana_mobile


class OrderStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"


def parse_order_id(value: object) -> str:
    """The canonical string form of a message's order id, or MalformedMessage."""
    if not isinstance(value, str):
        raise MalformedMessage(f"order id must be a string UUID, got {type(value).__name__}")
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise MalformedMessage(f"order id {value[:64]!r} is not a UUID") from exc


def order_id_from_message(args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    """The message contract: exactly one positional argument, the order id. Keyword fields
    are where a later release adds to a message, so they are ignored here (a worker of this
    release keeps working beside a producer of the next); a message without its one
    positional order id is malformed."""
    if len(args) != 1:
        raise MalformedMessage(
            f"fulfill_order takes one positional order id; got {len(args)} args and "
            f"{sorted(map(str, kwargs))[:5]} kwargs"
        )
    return parse_order_id(args[0])


@dataclass(frozen=True, slots=True)
class FulfillmentRequest:
    """What the vendor needs to deliver one order: validated and normalised."""

    order_id: str
    phone_number: str  # E.164
    network: str
    size_gb: Decimal


def build_request(
    order_id: str,
    *,
    phone_number: object,
    network: object,
    size_gb: object,
    package_name: str | None,
) -> FulfillmentRequest:
    """Validate an order row; raises InvalidOrder naming the field at fault."""
    if not isinstance(network, str) or network not in KNOWN_NETWORKS:
        raise UnsupportedNetwork(f"unknown network {network!r}")
    if network != NETWORK_AT_ISHARE:
        raise UnsupportedNetwork(f"{network} orders are not fulfilled by the AT-iShare fleet")
    return FulfillmentRequest(
        order_id=order_id,
        phone_number=normalize_ghana_mobile(phone_number),
        network=network,
        size_gb=parse_package_size(size_gb, package_name),
    )


@dataclass(frozen=True, slots=True)
class Order:
    """An orders row with the fulfillment columns (db/ builds these)."""

    id: str
    phone_number: str | None
    network: str | None
    size_gb: Decimal | None
    package_name: str | None
    status: OrderStatus
    attempts: int
    in_flight_attempt: int | None
    status_checks: int
    deferrals: int
    generation: int
    extra_attempts: int
    next_attempt_at: datetime | None
    claim_token: str | None
    claim_expires_at: datetime | None
    last_error_code: str | None
    dead_letter_reason: str | None
    dead_lettered_at: datetime | None
    vendor_transaction_id: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def open(self) -> bool:
        """Still the fleet's to work on: not delivered, and not handed to a person (dead
        letter, outcome unknown)."""
        return self.status is not OrderStatus.SUCCESS and self.dead_letter_reason is None

    def request(self) -> FulfillmentRequest:
        return build_request(
            self.id,
            phone_number=self.phone_number,
            network=self.network,
            size_gb=self.size_gb,
            package_name=self.package_name,
        )
