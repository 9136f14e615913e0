"""Orders as the fulfillment fleet sees them: states, allowed transitions, the validated request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.domain.errors import MalformedMessage, UnsupportedNetwork
from fulfillment.domain.networks import prefix_mismatch
from fulfillment.domain.package import Catalogue, parse_size
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
    """What a vendor needs to deliver one order: validated and normalised, in both vendors'
    counts (AT-iShare: size_gb, E.164 phone; the aggregator: volume_mb, local recipient)."""

    order_id: str
    phone_number: str  # E.164
    network: str
    size_gb: Decimal
    volume_mb: int
    #: the catalogue's name of the bundle, e.g. 'MTN 5GB'
    package: str = ""
    #: the network the number's prefix names when it is not this one (ported numbers exist:
    #: logged and shown, never refused)
    issued_by: str | None = None

    @property
    def local_phone(self) -> str:
        """'+233241234567' -> '0241234567', the 10-digit local form."""
        return "0" + self.phone_number.removeprefix("+233")


#: the shipped catalogue, for callers that were given none
_DEFAULT_CATALOGUE = Catalogue.default()


def build_request(
    order_id: str,
    *,
    phone_number: object,
    network: object,
    size_gb: object,
    package_name: str | None,
    catalogue: Catalogue | None = None,
) -> FulfillmentRequest:
    """Validate an order row; raises InvalidOrder naming the field at fault: an unknown
    network, a number that is not a Ghanaian mobile, a size its network does not sell."""
    if not isinstance(network, str) or network not in KNOWN_NETWORKS:
        raise UnsupportedNetwork(f"unknown network {str(network)[:40]!r}")
    phone = normalize_ghana_mobile(phone_number)
    bundle = (catalogue or _DEFAULT_CATALOGUE).bundle(network, parse_size(size_gb, package_name))
    return FulfillmentRequest(
        order_id=order_id,
        phone_number=phone,
        network=network,
        size_gb=bundle.size_gb,
        volume_mb=bundle.volume_mb,
        package=bundle.name,
        issued_by=prefix_mismatch(network, phone),
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

    def request(self, catalogue: Catalogue | None = None) -> FulfillmentRequest:
        return build_request(
            self.id,
            phone_number=self.phone_number,
            network=self.network,
            size_gb=self.size_gb,
            package_name=self.package_name,
            catalogue=catalogue,
        )
