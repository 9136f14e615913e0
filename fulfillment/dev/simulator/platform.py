"""The simulated purchase platform's receiver of outcome events (DESIGN.md "What the platform
is told"), at POST /platform/events; control routes under /platform/_sim/ (health, ledger,
faults, script, reset, down), as the vendors have.

Each event must carry X-Fulfillment-Timestamp and X-Fulfillment-Signature (`verify_signature`):
a bad or missing one is a 401, counted in `bad_signatures`; a body that is not the event JSON is
a 400, counted in `malformed`. The receiver deduplicates on event_id, as the platform does: a
known event_id is acknowledged again (a redelivery, allowed), but one that comes back with a
different body is listed in `conflicting_bodies` (forbidden: a retry resends the same body).
`out_of_order` lists the orders whose events arrived with an occurred_at earlier than one
already received for the order.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fulfillment.dev.simulator.faults import NonNegative, PartyFaults, Rate
from fulfillment.dev.simulator.handler import JsonBody, error
from fulfillment.dev.simulator.party import SimulatedParty
from fulfillment.notify import platform_webhook

if TYPE_CHECKING:
    from fulfillment.dev.simulator.handler import Handler

MOUNT: Final = "/platform"
EVENTS_PATH: Final = MOUNT + "/events"
#: the prefix of the platform receiver's fault variables (SIM_PLATFORM_ERROR_RATE, ...)
PLATFORM_ENV_PREFIX: Final = "SIM_PLATFORM_"
TIMESTAMP_HEADER: Final = "X-Fulfillment-Timestamp"
SIGNATURE_HEADER: Final = "X-Fulfillment-Signature"
SIGNATURE_TOLERANCE_S: Final = 300.0


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:
    """Whether an outcome event really comes from the fulfillment fleet, and is recent.

    `timestamp` and `signature` are the X-Fulfillment-Timestamp (unix seconds) and
    X-Fulfillment-Signature headers, `body` the raw request body as received (check it before
    parsing it), `now` the receiver's clock (time.time()). The signature must be
    hex(HMAC-SHA256(secret, "<timestamp>.<raw body>")), and the timestamp within `tolerance_s`
    of now, so that a captured request cannot be replayed later. The rule is the fleet's own,
    fulfillment.notify.platform_webhook.verify: the receiver checks what the client signs.
    """
    return platform_webhook.verify(
        secret, timestamp, body, signature, now=now, tolerance_s=tolerance_s
    )


class PlatformEvent(BaseModel):
    """The event JSON, as the contract draws it (no other field)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    event_id: str
    type: Literal["order.fulfilled", "order.failed", "order.resolved"]
    order_id: str = Field(min_length=1)
    network: str = Field(min_length=1)
    occurred_at: str
    attempts: int = Field(ge=0)
    transaction_id: str | None = None
    reason: str | None = None
    refund_advised: bool

    @field_validator("event_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        uuid.UUID(value)  # ValueError: not a UUID
        return value

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: str) -> str:
        if not value.endswith("Z"):
            raise ValueError("occurred_at must be ISO-8601 UTC with Z")
        datetime.fromisoformat(value)  # ValueError: not ISO-8601
        return value

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.occurred_at)


class PlatformFault(StrEnum):
    """One way the receiver can go wrong; the values are the names scripts and the ledger use."""

    ERROR = "error"  # 500, the event not recorded
    TIMEOUT = "timeout"  # recorded, the answer held for timeout_seconds
    LOST = "lost"  # recorded, the connection closed with no answer


class PlatformFaults(PartyFaults):
    """Rates (0..1) of each random fault of an event delivery."""

    error_rate: Rate = 0.0
    timeout_rate: Rate = 0.0
    lost_rate: Rate = 0.0
    timeout_seconds: NonNegative = 15.0

    def rates(self) -> tuple[tuple[str, float], ...]:
        return (
            (PlatformFault.ERROR, self.error_rate),
            (PlatformFault.TIMEOUT, self.timeout_rate),
            (PlatformFault.LOST, self.lost_rate),
        )


@dataclass
class _Received:
    event: PlatformEvent
    receipts: int = 1


class PlatformLedger:
    """Thread-safe record of the events received, per event_id and per order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, _Received] = {}
        self._orders: dict[str, list[str]] = {}
        self._latest: dict[str, datetime] = {}  # per order, the latest occurred_at received
        self._received = 0
        self._bad_signatures = 0
        self._malformed = 0
        self._conflicting: list[str] = []
        self._out_of_order: list[str] = []
        self._faults: Counter[str] = Counter()

    def receive(self, event: PlatformEvent) -> bool:
        """Record one receipt of `event`; True when its event_id is new."""
        with self._lock:
            self._received += 1
            known = self._events.get(event.event_id)
            if known is not None:
                known.receipts += 1
                if known.event != event and event.event_id not in self._conflicting:
                    self._conflicting.append(event.event_id)
                return False
            self._events[event.event_id] = _Received(event)
            self._orders.setdefault(event.order_id, []).append(event.type)
            latest = self._latest.get(event.order_id)
            if latest is not None and event.moment < latest:
                if event.order_id not in self._out_of_order:
                    self._out_of_order.append(event.order_id)
            else:
                self._latest[event.order_id] = event.moment
            return True

    def note_bad_signature(self) -> None:
        with self._lock:
            self._bad_signatures += 1

    def note_malformed(self) -> None:
        with self._lock:
            self._malformed += 1

    def note_fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def snapshot(self) -> JsonBody:
        """GET /platform/_sim/ledger: per event_id, per order, and totals."""
        with self._lock:
            events = {
                event_id: {
                    "order_id": r.event.order_id,
                    "type": r.event.type,
                    "receipts": r.receipts,
                    "refund_advised": r.event.refund_advised,
                    "occurred_at": r.event.occurred_at,
                }
                for event_id, r in self._events.items()
            }
            totals = {
                "received": self._received,
                "distinct": len(self._events),
                "redeliveries": self._received - len(self._events),
                "bad_signatures": self._bad_signatures,
                "malformed": self._malformed,
                "conflicting_bodies": list(self._conflicting),
                "out_of_order": list(self._out_of_order),
                "faults": dict(self._faults),
            }
            orders = {order_id: list(types) for order_id, types in self._orders.items()}
        return {"events": events, "orders": orders, "totals": totals}

    def reset(self) -> None:
        with self._lock:
            self._events.clear()
            self._orders.clear()
            self._latest.clear()
            self._faults.clear()
            self._conflicting.clear()
            self._out_of_order.clear()
            self._received = self._bad_signatures = self._malformed = 0


class PlatformReceiver(SimulatedParty[PlatformFaults, PlatformLedger]):
    """The simulated platform receiver: its signing secret, ledger, faults and control routes."""

    script_key = "event_id"

    def __init__(
        self,
        *,
        secret: str,
        faults: PlatformFaults,
        seed: int | None,
        stopping: threading.Event,
    ) -> None:
        super().__init__(
            PlatformLedger(),
            faults,
            kinds=frozenset(PlatformFault),
            seed=seed,
            stopping=stopping,
        )
        self.secret = secret

    def answer(self, http: Handler, path: str, body: bytes) -> None:
        if path != EVENTS_PATH:
            http.reply_json(404, error("NOT_FOUND", "no such route"))
            return
        http.allow({"POST": lambda: self._event(http, body)})

    def _event(self, http: Handler, body: bytes) -> None:
        if self.chaos.is_down():
            self.ledger.note_fault("outage")
            http.reply_json(503, error("SERVICE_UNAVAILABLE", "the platform is down"))
            return
        timestamp = http.headers.get(TIMESTAMP_HEADER, "")
        signature = http.headers.get(SIGNATURE_HEADER, "")
        if not verify_signature(self.secret, timestamp, body, signature, now=time.time()):
            self.ledger.note_bad_signature()
            http.reply_json(401, error("BAD_SIGNATURE", "bad or missing signature or timestamp"))
            return
        try:
            event = PlatformEvent.model_validate_json(body)
        except ValidationError as exc:
            self.ledger.note_malformed()
            http.reply_json(400, error("VALIDATION_ERROR", str(exc)))
            return
        fault = self.chaos.decide(event.event_id)
        if fault is not None:
            self.ledger.note_fault(fault)
        if fault == PlatformFault.ERROR:
            http.reply_json(500, error("INTERNAL_ERROR", "try again later"))
            return
        new = self.ledger.receive(event)
        if fault == PlatformFault.LOST:
            http.drop()
            return
        timeout = self.chaos.config.timeout_seconds
        if fault == PlatformFault.TIMEOUT and timeout > 0:
            self._stopping.wait(timeout)
        http.reply_json(200, {"ok": True, "event_id": event.event_id, "duplicate": not new})
