"""What the fulfil service needs and says: its dependencies, outcomes and dead-letter notices.

Kept apart from the state machine in fulfillment/services/delivery/ so actors, the reconciler,
the web process's webhook and the dead-letter consumer can share them without importing each
other. The adapters that satisfy these ports live in fulfillment.fleet (VendorBreaker, its
BreakerPermit; VendorGate; Bulkhead) and fulfillment.vendors (one client per vendor API).

Every vendor is reached through its own VendorConnection: its client, circuit breaker,
rate limit, share of the worker threads and pauses are its own, so that a vendor down or
slow never holds another network's orders. FulfilDeps.routes maps each network this
process serves to its connection (configuration: NETWORK_VENDORS); nothing below names one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from db.store import Store
from fulfillment.domain.order import FulfillmentRequest
from fulfillment.domain.package import Catalogue
from fulfillment.domain.retry import RetryPolicy
from fulfillment.vendors.answer import VendorAnswer


class Permit(Protocol):
    """A breaker's answer (read-only: frozen dataclasses satisfy it, e.g. BreakerPermit)."""

    @property
    def allowed(self) -> bool: ...
    @property
    def probe(self) -> bool: ...
    @property
    def retry_in_s(self) -> float: ...


class BreakerPort(Protocol):
    """The fleet-wide circuit breaker around the vendor (fulfillment/fleet/breaker.py)."""

    def allow(self) -> Permit: ...
    def record(self, *, success: bool, probe: bool = False) -> None: ...
    def is_open(self) -> bool: ...
    def trip(self, seconds: float, reason: str, *, alert: bool = True) -> None: ...
    def release_probe(self) -> None: ...


class GatePort(Protocol):
    """The fleet-wide vendor rate limit (fulfillment/fleet/ratelimit.py)."""

    def slot(self, max_wait_s: float | None = None) -> AbstractContextManager[bool]: ...


@dataclass(frozen=True, slots=True)
class _Always:
    allowed: bool = True
    probe: bool = False
    retry_in_s: float = 0.0


class NoBreaker:
    """Every call goes through (tests of one unit, tools that must never be held back)."""

    def allow(self) -> Permit:
        return _Always()

    def record(self, *, success: bool, probe: bool = False) -> None:
        return None

    def is_open(self) -> bool:
        return False

    def trip(self, seconds: float, reason: str, *, alert: bool = True) -> None:
        return None

    def release_probe(self) -> None:
        return None


class _Open:
    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None


class NoGate:
    def slot(self, max_wait_s: float | None = None) -> AbstractContextManager[bool]:
        return _Open()


class BulkheadPort(Protocol):
    """The share of this process's worker threads one vendor's calls may hold at once
    (fulfillment/fleet/bulkhead.py). Never waits: a full bulkhead defers the order."""

    def enter(self) -> bool: ...
    def leave(self, seconds: float) -> None: ...
    def busy_delay_s(self) -> float: ...


class NoBulkhead:
    def enter(self) -> bool:
        return True

    def leave(self, seconds: float) -> None:
        return None

    def busy_delay_s(self) -> float:
        return 1.0


class VendorPort(Protocol):
    """One vendor's API (fulfillment/vendors/): the order id is the reference on every
    attempt; `attempt` lets a vendor with idempotency keys tell attempts apart."""

    def purchase(
        self, request: FulfillmentRequest, attempt: int = 1, *, resend: int = 0
    ) -> VendorAnswer: ...
    def status(self, reference: str) -> VendorAnswer: ...


@dataclass(frozen=True, slots=True)
class VendorConnection:
    """One vendor, as the fleet reaches it: everything here is this vendor's own."""

    #: the connection's name in metrics, logs and settings: at-ishare | aggregator
    name: str
    #: how admins name it in alerts: 'AT-iShare', 'the data aggregator'
    display_name: str
    client: VendorPort
    breaker: BreakerPort = field(default_factory=NoBreaker)
    gate: GatePort = field(default_factory=NoGate)
    bulkhead: BulkheadPort = field(default_factory=NoBulkhead)
    #: how long an empty-wallet answer pauses this vendor's purchases fleet-wide
    balance_pause_s: float = 60.0


def routes_to(connection: VendorConnection, *networks: str) -> dict[str, VendorConnection]:
    """{network: connection} for networks served by one connection."""
    return dict.fromkeys(networks, connection)


@dataclass(frozen=True, slots=True)
class DeadLetterNotice:
    """What the dead-letter consumer receives (as a dict on the wire)."""

    kind: str  # dead_letter | malformed_message | unknown_order | misrouted_message
    reason: str
    order_id: str | None = None
    error_code: str | None = None
    generation: int = 0
    source: str = "worker"
    excerpt: str | None = None
    message_id: str | None = None

    def to_message(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "order_id": self.order_id,
            "error_code": self.error_code,
            "generation": self.generation,
            "source": self.source,
            "excerpt": self.excerpt,
            "message_id": self.message_id,
        }

    @classmethod
    def from_message(cls, data: object) -> DeadLetterNotice:
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            raise ValueError(  # noqa: TRY004 - a bad message, reported as such by the actor
                "dead-letter notice must be an object with a kind"
            )

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)[:1000]

        generation = data.get("generation", 0)
        return cls(
            kind=str(data["kind"])[:64],
            reason=text("reason") or "no reason given",
            order_id=text("order_id"),
            error_code=text("error_code"),
            generation=generation if isinstance(generation, int) else 0,
            source=text("source") or "unknown",
            excerpt=text("excerpt"),
            message_id=text("message_id"),
        )


@dataclass(frozen=True, slots=True)
class FulfilDeps:
    store: Store
    #: network -> its vendor connection, for every network this process serves
    routes: Mapping[str, VendorConnection]
    policy: RetryPolicy
    enabled: bool
    claim_ttl_s: float
    worker: str
    #: enqueue fulfill_order(order_id) after a delay in seconds
    publish_retry: Callable[[str, float], None]
    publish_dead_letter: Callable[[DeadLetterNotice], None]
    #: store and send an admin alert (kind, message, error code, vendor: credentials,
    #: balance); deduplicated per kind and vendor
    alert: Callable[[str, str, str, str], None]
    #: a pause or open circuit ending within this is waited out in place (no deferral)
    wait_in_place_s: float = 0.0
    #: what each network sells (None: the shipped default)
    catalogue: Catalogue | None = None
    #: a message for a network another host serves comes back after about this long
    elsewhere_delay_s: float = 10.0
    #: after an order's final outcome committed: enqueue its SMS and event now (unset: the
    #: reconciler's outbox sweep sends them after OUTBOX_GRACE_S)
    announce: Callable[[str], None] = field(default=lambda _order_id: None)

    @property
    def networks(self) -> tuple[str, ...]:
        """The networks this process serves."""
        return tuple(sorted(self.routes))


class Outcome(StrEnum):
    SUCCESS = "success"
    PENDING = "pending"  # the vendor is still working on it; a status check is scheduled
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD_LETTERED = "dead_lettered"
    NOT_DUE = "not_due"  # a duplicate or early message: someone else has it or it is done
    DISABLED = "disabled"
    CLAIM_LOST = "claim_lost"
    #: the circuit is open: the order waits, no vendor call, no attempt spent
    DEFERRED = "deferred"
    #: its network or the whole fleet is paused (fleet_pauses): the order waits untouched,
    #: nothing re-published; the resume re-enqueues it
    PAUSED = "paused"
    #: another host serves its network (a rolling change of NETWORKS_ENABLED): the message
    #: was sent again, delayed, for one of them; the order untouched
    ELSEWHERE = "elsewhere"
