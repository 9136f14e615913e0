"""What the fulfil service needs and says: its dependencies, outcomes and dead-letter notices.

Kept apart from the state machine in fulfillment/services/delivery/ so actors, the reconciler,
the web process's webhook and the dead-letter consumer can share them without importing each
other. The adapters that satisfy these ports live in fulfillment.fleet (VendorBreaker, its
BreakerPermit; VendorGate) and fulfillment.atishare (the vendor client).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from db.store import Store
from fulfillment.domain.order import FulfillmentRequest
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


class VendorPort(Protocol):
    def purchase(self, request: FulfillmentRequest) -> VendorAnswer: ...
    def status(self, reference: str) -> VendorAnswer: ...


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
    vendor: VendorPort
    policy: RetryPolicy
    enabled: bool
    claim_ttl_s: float
    worker: str
    #: enqueue fulfill_order(order_id) after a delay in seconds
    publish_retry: Callable[[str, float], None]
    publish_dead_letter: Callable[[DeadLetterNotice], None]
    #: store and send an admin alert (vendor credentials, balance); deduplicated by key
    alert: Callable[[str, str, str], None]
    breaker: BreakerPort = field(default_factory=NoBreaker)
    gate: GatePort = field(default_factory=NoGate)
    #: how long an INSUFFICIENT_BALANCE answer pauses purchases fleet-wide
    balance_pause_s: float = 60.0
    #: a pause or open circuit ending within this is waited out in place (no deferral)
    wait_in_place_s: float = 0.0


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
