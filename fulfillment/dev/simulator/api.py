"""What both simulated vendor APIs do alike: faults, outages, the books, and what the client learns.

`VendorApi` answers one request to one vendor; AT-iShare (atishare.AtIshareApi) and the
aggregator (aggregator.AggregatorApi) fill in their credentials, routes and wire forms.

Each API request takes a ticket from the vendor's ledger as it arrives; a purchase's answer
tells the ledger what the client could learn from it (Ledger.note_outcome), which is how the
ledger counts blind re-purchases: an answer lost, a 5xx, an unreadable body, or one the client
did not wait for (it hung up, or client_timeout_seconds passed) is an unknown outcome; a
readable status answer, or a purchase's acceptance or duplicate answer, is a known one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final
from urllib.parse import unquote

from fulfillment.dev.simulator.faults import FaultConfig, FaultKind
from fulfillment.dev.simulator.handler import JsonBody, error, json_object, string_field
from fulfillment.dev.simulator.ledger import Ending, Outcome, Transaction

if TYPE_CHECKING:
    from fulfillment.dev.simulator.handler import Handler
    from fulfillment.dev.simulator.vendor import Vendor

GARBAGE_BODY: Final = b"<html>not json"
RETRY_AFTER: Final = {"Retry-After": "1"}
#: answers after which the client cannot know what happened; nothing reaches the books
BROKEN: Final = frozenset({FaultKind.ERROR, FaultKind.TIMEOUT, FaultKind.GARBAGE})
#: how a purchase accepted as pending settles
ENDINGS: Final = {
    FaultKind.PENDING: Ending.DELIVERED,
    FaultKind.PENDING_THEN_FAILED: Ending.FAILED,
    FaultKind.PENDING_THEN_REFUNDED: Ending.REFUNDED,
}

#: (status, error code, message) of a refused purchase
Problem = tuple[int, str, str]


@dataclass(frozen=True)
class Reply:
    """A JSON answer; `reveals`: the client learns the reference's state from it."""

    status: int
    body: JsonBody
    reveals: bool = False
    headers: Mapping[str, str] | None = None


class VendorApi:
    """One request to a simulated vendor's API (subclasses: one per protocol)."""

    #: the refusals a fault (or the books) can cause: RATE_LIMIT, INVALID_PHONE,
    #: INSUFFICIENT_BALANCE -> (status, error code, message)
    REFUSALS: ClassVar[Mapping[FaultKind, Problem]]
    UNAUTHORIZED: ClassVar[JsonBody]
    #: POST to buy, GET PURCHASE_PATH/<reference> to look one up, GET BALANCE_PATH
    PURCHASE_PATH: ClassVar[str]
    BALANCE_PATH: ClassVar[str]
    #: the purchase body's field that names the reference
    REFERENCE_FIELD: ClassVar[str]

    def __init__(self, http: Handler, vendor: Vendor) -> None:
        self.http = http
        self.vendor = vendor
        self.ticket = vendor.ledger.ticket()  # the ledger's number of this request
        self.arrived = time.monotonic()

    # -- what each protocol says ------------------------------------------------

    def authorized(self, path: str, body: bytes) -> bool:
        raise NotImplementedError

    def purchase_request(self, reference: str, payload: JsonBody) -> None:
        """Answer a purchase whose body names a reference (default: `purchase`)."""
        self.purchase(reference, payload)

    def balance(self) -> JsonBody:
        raise NotImplementedError

    def problem(self, payload: JsonBody, config: FaultConfig) -> Problem | None:
        """Why the purchase body is refused (an invalid field), or None."""
        raise NotImplementedError

    def size_gb(self, payload: JsonBody) -> float:
        raise NotImplementedError

    def accepted(self, tx: Transaction) -> Reply:
        raise NotImplementedError

    def duplicate(self, tx: Transaction) -> Reply:
        raise NotImplementedError

    def found(self, tx: Transaction) -> JsonBody:
        """The status answer's body of a known reference."""
        raise NotImplementedError

    def not_found(self) -> JsonBody:
        return error("NOT_FOUND", "never received")

    def keep(self, reply: Reply) -> None:
        """An answer that came from the books (the aggregator replays it to the same key)."""

    # -- the shared flow ----------------------------------------------------------

    def purchased(self, path: str, body: bytes) -> str | None:
        """The reference a purchase request names (None: not a purchase)."""
        if path != self.PURCHASE_PATH:
            return None
        return string_field(json_object(body), self.REFERENCE_FIELD)

    def route(self, path: str, body: bytes) -> None:
        """Answer an authorized request while the vendor is up."""
        status_prefix = self.PURCHASE_PATH + "/"
        tail = path.removeprefix(status_prefix)
        if path == self.PURCHASE_PATH:
            self.http.allow({"POST": lambda: self._purchase_body(body)})
        elif path.startswith(status_prefix) and tail and "/" not in tail:
            self.http.allow({"GET": lambda: self.status(unquote(tail))})
        elif path == self.BALANCE_PATH:
            self.http.allow({"GET": lambda: self.http.reply_json(200, self.balance())})
        else:
            self.http.reply_json(404, error("NOT_FOUND", "no such route"))

    def _purchase_body(self, body: bytes) -> None:
        payload = json_object(body)
        reference = string_field(payload, self.REFERENCE_FIELD)
        if payload is None or reference is None:
            message = f"body must be a JSON object with a non-empty string {self.REFERENCE_FIELD}"
            self.http.reply_json(400, error("VALIDATION_ERROR", message))
            return
        self.purchase_request(reference, payload)

    def answer(self, path: str, body: bytes) -> None:
        vendor = self.vendor
        vendor.sleep(vendor.chaos.latency())
        purchased = self.purchased(path, body)
        if vendor.chaos.is_down(purchased):
            vendor.ledger.note_fault("outage")
            if (
                purchased is not None
                and self.http.command == "POST"
                and self.authorized(path, body)
            ):
                self.note_refused_purchase(purchased, body)
            self.http.reply_json(503, error("SERVICE_UNAVAILABLE", "vendor is down"))
        elif not self.authorized(path, body):
            self.http.reply_json(401, self.UNAUTHORIZED)
        else:
            self.route(path, body)

    def note_refused_purchase(self, reference: str, body: bytes) -> None:
        """An authorized purchase answered 503 by an outage: an unknown outcome to the client,
        and a blind re-purchase if it is one (the books never see it)."""
        self.vendor.ledger.note_refused_purchase(reference, self.ticket)
        self.vendor.ledger.note_outcome(reference, self.ticket, known=False)

    def send(self, reply: Reply) -> None:
        self.http.reply_json(reply.status, reply.body, reply.headers)

    def missed(self) -> bool:
        """Whether the client cannot read the answer about to be sent: it hung up, or it has
        waited longer than clients wait (client_timeout_seconds)."""
        limit = self.vendor.chaos.config.client_timeout_seconds
        if limit > 0 and time.monotonic() - self.arrived >= limit:
            return True
        return self.http.client_gone()

    def answer_purchase(self, reference: str, reply: Reply) -> None:
        """Send a purchase's answer, noting what the client learns from it: nothing when it
        can no longer read it (an unknown outcome); the reference's state when it reveals it."""
        if self.missed():
            self.vendor.ledger.note_outcome(reference, self.ticket, known=False)
        elif reply.reveals:
            self.vendor.ledger.note_outcome(reference, self.ticket, known=True)
        self.send(reply)

    def refusal(self, fault: FaultKind) -> Reply:
        status, code, message = self.REFUSALS[fault]
        return Reply(status, error(code, message), headers=RETRY_AFTER if status == 429 else None)

    def purchase(self, reference: str, payload: JsonBody, *, new_attempt: bool = True) -> None:
        """Answer a purchase of `reference` (new_attempt False: a repeated HTTP request of
        an attempt, never a blind re-purchase), listed in flight meanwhile."""
        port = int(self.http.client_address[1])
        with self.vendor.purchase_in_flight(self.ticket, reference, port):
            self._purchase(reference, payload, new_attempt=new_attempt)

    def _purchase(self, reference: str, payload: JsonBody, *, new_attempt: bool) -> None:
        ledger, chaos = self.vendor.ledger, self.vendor.chaos
        ledger.note_purchase_request(reference, self.ticket, new_attempt=new_attempt)
        fault = chaos.decide(reference)
        if fault is not None:
            ledger.note_fault(fault.value)
        if fault is FaultKind.RATE_LIMIT:  # refused at the gate: nothing recorded
            self.answer_purchase(reference, self.refusal(fault))
            return
        config = chaos.config
        problem = self.problem(payload, config)
        if problem is None and fault in (FaultKind.INVALID_PHONE, FaultKind.INSUFFICIENT_BALANCE):
            problem = self.REFUSALS[fault]
        if problem is not None:
            ledger.fail(reference, problem[1])
            reply = Reply(problem[0], error(problem[1], problem[2]))
            self.keep(reply)
            self.answer_purchase(reference, reply)
            return
        if fault in BROKEN:
            ledger.fail(reference, "SERVICE_UNAVAILABLE")
            ledger.note_outcome(reference, self.ticket, known=False)
            self.answer_broken(fault, config)
            return
        ending = ENDINGS.get(fault) if fault is not None else None
        result = ledger.purchase(
            reference,
            self.size_gb(payload),
            pending_for=None if ending is None else config.pending_seconds,
            ending=ending or Ending.DELIVERED,
        )
        if result.outcome is Outcome.DUPLICATE:
            reply = self.duplicate(result.transaction)
        elif result.outcome is Outcome.INSUFFICIENT_BALANCE:
            reply = self.refusal(FaultKind.INSUFFICIENT_BALANCE)
        else:
            reply = self.accepted(result.transaction)
        self.keep(reply)
        if fault is FaultKind.DROP_AFTER_DELIVERY:
            ledger.note_outcome(reference, self.ticket, known=False)
            self.http.drop()
            return
        if fault is FaultKind.STALL_AFTER_DELIVERY:
            self.vendor.sleep(config.timeout_seconds)
        self.answer_purchase(reference, reply)

    def answer_broken(self, fault: FaultKind | None, config: FaultConfig) -> None:
        """The transient failures after which a client cannot know what happened."""
        if fault is FaultKind.TIMEOUT:
            self.vendor.sleep(config.timeout_seconds)
            self.http.reply_json(504, error("GATEWAY_TIMEOUT", "upstream timed out"))
        elif fault is FaultKind.GARBAGE:
            self.http.reply(200, GARBAGE_BODY, "text/html")
        else:
            self.http.reply_json(503, error("SERVICE_UNAVAILABLE", "try again later"))

    def status(self, reference: str) -> None:
        """Answer a status lookup (its scripted fault, if any)."""
        ledger, chaos = self.vendor.ledger, self.vendor.chaos
        tx = ledger.lookup(reference)
        fault = chaos.scripts.next_status(reference)
        if fault is not None:
            ledger.note_fault(f"status_{fault.value}")
            self.answer_broken(fault, chaos.config)
            return
        if not self.missed():  # a readable answer: the client knows the state now
            ledger.note_outcome(reference, self.ticket, known=True)
        if tx is None:
            self.http.reply_json(404, self.not_found())
        else:
            self.http.reply_json(200, self.found(tx))
