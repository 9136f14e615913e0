"""The simulated SMS provider (DESIGN.md "Customer SMS"), mounted at /sms/v1.

HTTP Basic auth (client id and secret); POST /sms/v1/messages/send, GET
/sms/v1/messages?clientReference=<id>, GET /sms/v1/messages/{messageId}; control routes under
/sms/_sim/ (health, ledger, faults, script, reset, down), as the vendors have.

A message is "Pending" for `delivery_seconds` after it was sent, then "Delivered", or
"Undeliverable" (a To ending with `undeliverable_suffix`), or "Failed" (`failed_rate`). Like the
real provider this one does not deduplicate: the same ClientReference sent twice is two
messages, and the ledger lists it in `duplicate_sends`, which the exactly-once guarantee forbids.
It also lists `blind_resends`: a ClientReference sent again after a send whose answer the client
could not read (timeout, lost, garbage: the message went out all the same) with no lookup by
clientReference in between.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Final
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field

from fulfillment.dev.simulator.api import GARBAGE_BODY
from fulfillment.dev.simulator.faults import NonNegative, PartyFaults, Rate
from fulfillment.dev.simulator.handler import JsonBody, error, json_object
from fulfillment.dev.simulator.party import SimulatedParty
from fulfillment.domain.phone import mask_phone

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from fulfillment.dev.simulator.handler import Handler

MOUNT: Final = "/sms"
SEND_PATH: Final = MOUNT + "/v1/messages/send"
MESSAGES_PATH: Final = MOUNT + "/v1/messages"
#: the prefix of the SMS provider's fault variables (SIM_SMS_ERROR_RATE, ...)
SMS_ENV_PREFIX: Final = "SIM_SMS_"
RECIPIENT_PATTERN: Final = re.compile(r"233\d{9}")
MAX_SENDER_CHARS: Final = 11
MAX_CONTENT_CHARS: Final = 612
MAX_REFERENCE_CHARS: Final = 64

PENDING: Final = "Pending"
DELIVERED: Final = "Delivered"
FAILED: Final = "Failed"
UNDELIVERABLE: Final = "Undeliverable"


class SmsFault(StrEnum):
    """One way a send can go wrong; the values are the names scripts and the ledger use."""

    RATE_LIMIT = "rate_limit"  # 429 with Retry-After, not sent
    INSUFFICIENT_CREDIT = "insufficient_credit"  # 402, not sent
    ERROR = "error"  # 500, not sent
    TIMEOUT = "timeout"  # sent, the answer held for timeout_seconds
    LOST = "lost"  # sent, the connection closed with no answer
    GARBAGE = "garbage"  # sent, a 201 whose body is not JSON


#: sent, but the client cannot read the answer
UNREADABLE: Final = frozenset({SmsFault.TIMEOUT, SmsFault.LOST, SmsFault.GARBAGE})


class SmsFaults(PartyFaults):
    """Rates (0..1) of each random fault of a send, and how messages progress."""

    rate_limit_rate: Rate = 0.0
    insufficient_credit_rate: Rate = 0.0
    error_rate: Rate = 0.0
    timeout_rate: Rate = 0.0
    lost_rate: Rate = 0.0
    garbage_rate: Rate = 0.0
    #: of the messages sent, how many end "Failed" instead of "Delivered"
    failed_rate: Rate = 0.0
    delivery_seconds: NonNegative = 1.0
    timeout_seconds: NonNegative = 15.0
    retry_after_seconds: Annotated[int, Field(ge=0)] = 1
    #: a To ending so ends "Undeliverable" (None: none does)
    undeliverable_suffix: str | None = "9999"

    def rates(self) -> tuple[tuple[str, float], ...]:
        return (
            (SmsFault.RATE_LIMIT, self.rate_limit_rate),
            (SmsFault.INSUFFICIENT_CREDIT, self.insufficient_credit_rate),
            (SmsFault.ERROR, self.error_rate),
            (SmsFault.TIMEOUT, self.timeout_rate),
            (SmsFault.LOST, self.lost_rate),
            (SmsFault.GARBAGE, self.garbage_rate),
        )


def utc_iso(timestamp: float) -> str:
    """Unix seconds as ISO-8601 UTC with Z, to the millisecond."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def send_problem(payload: Mapping[str, Any]) -> tuple[str, str] | None:
    """(error code, message) for the first refused field of a well-formed send, or None."""
    if RECIPIENT_PATTERN.fullmatch(payload["To"]) is None:
        return "INVALID_RECIPIENT", "To must be 233 and nine digits"
    if not 0 < len(payload["From"]) <= MAX_SENDER_CHARS:
        return "INVALID_SENDER", f"From must be 1 to {MAX_SENDER_CHARS} characters"
    if not 0 < len(payload["Content"]) <= MAX_CONTENT_CHARS:
        return "CONTENT_TOO_LONG", f"Content must be 1 to {MAX_CONTENT_CHARS} characters"
    return None


def well_formed(payload: JsonBody | None) -> bool:
    """A send body: string From, To, Content and a ClientReference of 1 to 64 characters."""
    if payload is None or not all(
        isinstance(payload.get(name), str) for name in ("From", "To", "Content", "ClientReference")
    ):
        return False
    return 0 < len(payload["ClientReference"]) <= MAX_REFERENCE_CHARS


@dataclass(frozen=True)
class Message:
    """One message sent; `sent_at` on the ledger's clock, `sent_wall` in unix seconds."""

    message_id: str
    client_reference: str
    to: str
    content: str
    sent_at: float
    sent_wall: float
    pending_for: float
    ending: str

    def status(self, now: float) -> str:
        return self.ending if now >= self.sent_at + self.pending_for else PENDING

    def to_json(self, now: float) -> JsonBody:
        """{"messageId", "clientReference", "status", "updateTime"} at `now` (ledger clock)."""
        settled = now >= self.sent_at + self.pending_for
        return {
            "messageId": self.message_id,
            "clientReference": self.client_reference,
            "status": self.ending if settled else PENDING,
            "updateTime": utc_iso(self.sent_wall + (self.pending_for if settled else 0.0)),
        }


@dataclass
class _Entry:
    sends: int = 0
    lookups: int = 0
    messages: list[Message] = field(default_factory=list)
    #: the latest send's answer could not be read, and no lookup came after it
    unknown: bool = False


class SmsLedger:
    """Thread-safe record of the messages sent, per ClientReference."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._by_id: dict[str, Message] = {}
        self._blind: list[str] = []  # references resent blind, first one first
        self._faults: Counter[str] = Counter()

    def now(self) -> float:
        return self._clock()

    def send(
        self, reference: str, to: str, content: str, *, pending_for: float, ending: str, read: bool
    ) -> Message:
        """Send a message (never deduplicated); read=False: the client cannot read the answer."""
        message = Message(
            message_id=str(uuid.uuid4()),
            client_reference=reference,
            to=to,
            content=content,
            sent_at=self._clock(),
            sent_wall=time.time(),
            pending_for=pending_for,
            ending=ending,
        )
        with self._lock:
            entry = self._entries.setdefault(reference, _Entry())
            if entry.unknown and reference not in self._blind:
                self._blind.append(reference)
            entry.sends += 1
            entry.messages.append(message)
            entry.unknown = not read
            self._by_id[message.message_id] = message
        return message

    def lookup(self, reference: str) -> list[Message]:
        """Answer a lookup by clientReference: count it; the client knows the state now."""
        with self._lock:
            entry = self._entries.setdefault(reference, _Entry())
            entry.lookups += 1
            entry.unknown = False
            return list(entry.messages)

    def message(self, message_id: str) -> Message | None:
        with self._lock:
            return self._by_id.get(message_id)

    def note_fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def duplicate_sends(self) -> list[str]:
        """The ClientReferences sent more than once (the guarantee says none)."""
        with self._lock:
            return [r for r, e in self._entries.items() if e.sends > 1]

    def blind_resends(self) -> list[str]:
        with self._lock:
            return list(self._blind)

    def snapshot(self) -> JsonBody:
        """GET /sms/_sim/ledger: per ClientReference, and totals."""
        now = self._clock()
        with self._lock:
            references = {
                reference: {
                    "sends": entry.sends,
                    "lookups": entry.lookups,
                    "message_ids": [m.message_id for m in entry.messages],
                    "statuses": [m.status(now) for m in entry.messages],
                    "to": mask_phone(entry.messages[0].to) if entry.messages else None,
                    "content": entry.messages[0].content if entry.messages else None,
                }
                for reference, entry in self._entries.items()
            }
            totals = {
                "sends": sum(e.sends for e in self._entries.values()),
                "lookups": sum(e.lookups for e in self._entries.values()),
                "duplicate_sends": [r for r, e in self._entries.items() if e.sends > 1],
                "blind_resends": list(self._blind),
                "faults": dict(self._faults),
            }
        return {"references": references, "totals": totals}

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_id.clear()
            self._blind.clear()
            self._faults.clear()


class SmsProvider(SimulatedParty[SmsFaults, SmsLedger]):
    """The simulated SMS provider: its credentials, ledger, faults and control routes."""

    script_key = "client_reference"

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        faults: SmsFaults,
        seed: int | None,
        stopping: threading.Event,
    ) -> None:
        super().__init__(
            SmsLedger(), faults, kinds=frozenset(SmsFault), seed=seed, stopping=stopping
        )
        self.client_id = client_id
        self.client_secret = client_secret

    def authorized(self, http: Handler) -> bool:
        scheme, _, encoded = http.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(decoded, f"{self.client_id}:{self.client_secret}".encode())

    def answer(self, http: Handler, path: str, body: bytes) -> None:
        if self.chaos.is_down():
            self.ledger.note_fault("outage")
            http.reply_json(503, error("SERVICE_UNAVAILABLE", "the SMS provider is down"))
            return
        if not self.authorized(http):
            unauthorized = error("UNAUTHORIZED", "bad or missing client id and secret")
            http.reply_json(401, unauthorized, {"WWW-Authenticate": 'Basic realm="sms"'})
            return
        tail = path.removeprefix(MESSAGES_PATH + "/")
        if path == SEND_PATH:
            http.allow({"POST": lambda: self._send(http, body)})
        elif path == MESSAGES_PATH:
            http.allow({"GET": lambda: self._lookup(http)})
        elif path.startswith(MESSAGES_PATH + "/") and tail and "/" not in tail:
            http.allow({"GET": lambda: self._message(http, unquote(tail))})
        else:
            http.reply_json(404, error("NOT_FOUND", "no such route"))

    def _send(self, http: Handler, body: bytes) -> None:
        payload = json_object(body)
        if payload is None or not well_formed(payload):
            message = "body must be a JSON object with string From, To, Content, ClientReference"
            http.reply_json(400, error("VALIDATION_ERROR", message))
            return
        reference = payload["ClientReference"]
        fault = self.chaos.decide(reference)
        if fault is not None:
            self.ledger.note_fault(fault)
        config = self.chaos.config
        if fault == SmsFault.RATE_LIMIT:
            retry_after = {"Retry-After": str(config.retry_after_seconds)}
            http.reply_json(429, error("RATE_LIMITED", "slow down"), retry_after)
            return
        if fault == SmsFault.INSUFFICIENT_CREDIT:
            http.reply_json(402, error("INSUFFICIENT_CREDIT", "top up the SMS account"))
            return
        problem = send_problem(payload)
        if problem is not None:
            http.reply_json(400, error(*problem))
            return
        if fault == SmsFault.ERROR:
            http.reply_json(500, error("INTERNAL_ERROR", "try again later"))
            return
        sent = self.ledger.send(
            reference,
            payload["To"],
            payload["Content"],
            pending_for=config.delivery_seconds,
            ending=self._ending(payload["To"], config),
            read=fault not in UNREADABLE,
        )
        if fault == SmsFault.LOST:
            http.drop()
            return
        if fault == SmsFault.GARBAGE:
            http.reply(201, GARBAGE_BODY, "application/json")
            return
        if fault == SmsFault.TIMEOUT and config.timeout_seconds > 0:
            self._stopping.wait(config.timeout_seconds)
        http.reply_json(201, {"messageId": sent.message_id, "status": 0})

    def _ending(self, to: str, config: SmsFaults) -> str:
        suffix = config.undeliverable_suffix
        if suffix and to.endswith(suffix):
            return UNDELIVERABLE
        return FAILED if self.chaos.chance(config.failed_rate) else DELIVERED

    def _lookup(self, http: Handler) -> None:
        values = parse_qs(urlsplit(http.path).query).get("clientReference", [])
        if len(values) != 1 or not values[0]:
            message = "one clientReference query parameter required"
            http.reply_json(400, error("VALIDATION_ERROR", message))
            return
        messages = self.ledger.lookup(values[0])
        now = self.ledger.now()
        http.reply_json(200, {"messages": [m.to_json(now) for m in messages]})

    def _message(self, http: Handler, message_id: str) -> None:
        found = self.ledger.message(message_id)
        if found is None:
            http.reply_json(404, error("NOT_FOUND", "no message with that id"))
        else:
            http.reply_json(200, found.to_json(self.ledger.now()))
