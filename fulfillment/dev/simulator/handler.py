"""The simulator's HTTP handler: the vendor API of DESIGN.md and the /_sim/ control routes.

Each /v1 request takes a ticket from the ledger as it arrives; a purchase's answer tells the
ledger what the client could learn from it (Ledger.note_outcome), which is how the ledger
counts blind re-purchases: an answer lost, a 5xx, an unreadable body, or one the client did
not wait for (it hung up, or client_timeout_seconds passed) is an unknown outcome; a
readable status answer, or a purchase's 200, 202 or 409, is a known one.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import socket
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol
from urllib.parse import unquote, urlsplit

from fulfillment.dev.simulator.faults import Chaos, FaultConfig, FaultKind, purchase_problem
from fulfillment.dev.simulator.ledger import Ledger, Outcome
from fulfillment.vendors.atishare_signing import verify

MAX_BODY_BYTES: Final = 64 * 1024
PURCHASE_PATH: Final = "/v1/data/purchase"
STATUS_PREFIX: Final = PURCHASE_PATH + "/"
BALANCE_PATH: Final = "/v1/account/balance"
GARBAGE_BODY: Final = b"<html>not json"

JsonBody = dict[str, Any]
ControlAction = Callable[[JsonBody], JsonBody | None]


def _error(code: str, message: str) -> JsonBody:
    return {"error": {"code": code, "message": message}}


def _json_object(body: bytes) -> JsonBody | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def _reference(payload: JsonBody | None) -> str | None:
    """The purchase body's reference, when it is a non-empty string."""
    reference = payload.get("reference") if payload is not None else None
    return reference if isinstance(reference, str) and reference else None


class SimulatedVendor(Protocol):
    """What the handler needs of the simulator (server.Simulator is the one)."""

    api_key: str
    api_secret: str
    ledger: Ledger
    chaos: Chaos

    def update_faults(self, changes: Mapping[str, Any]) -> FaultConfig: ...
    def reset(self) -> None: ...
    def purchase_in_flight(
        self, ticket: int, reference: str, client_port: int
    ) -> AbstractContextManager[None]: ...
    def purchases_in_flight(self) -> JsonBody: ...
    def sleep(self, seconds: float) -> None: ...


class VendorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # bursts of concurrent clients must not wait on SYN retries

    def __init__(self, address: tuple[str, int], simulator: SimulatedVendor) -> None:
        self.simulator = simulator
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (e.g. after its own timeout) is normal here, not a traceback."""
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AT-iShare-Simulator/1.0"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: VendorHTTPServer
    _ticket = 0  # the ledger's number of the /v1 request being answered (Ledger.ticket)
    _arrived = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: request lines carry references, and bodies phone numbers."""

    @property
    def sim(self) -> SimulatedVendor:
        return self.server.simulator

    def _dispatch(self) -> None:
        try:
            path = urlsplit(self.path).path
            body = self._read_body()
            if body is None:
                pass
            elif path.startswith("/_sim/"):
                self._control(path, body)
            elif path.startswith("/v1/"):
                self._api(path, body)
            else:
                self._send_json(404, _error("NOT_FOUND", "no such route"))
        except ConnectionError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch  # noqa: N815 - stdlib names

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 400/413 (and closing: it went unread)."""
        raw = self.headers.get("Content-Length", "0").strip()
        if "Transfer-Encoding" in self.headers or not raw.isdigit():
            self.close_connection = True
            self._send_json(400, _error("VALIDATION_ERROR", "invalid Content-Length"))
            return None
        if int(raw) > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(413, _error("PAYLOAD_TOO_LARGE", f"body over {MAX_BODY_BYTES} bytes"))
            return None
        return self.rfile.read(int(raw))

    def _send_json(
        self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send(
        self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _client_gone(self) -> bool:
        """Whether the client hung up (its end closed or reset) while we worked on its answer.

        The client sends nothing while it waits for an answer, so anything readable is its
        end of the connection: EOF or a reset."""
        try:
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return peeked == b""

    def _missed(self) -> bool:
        """Whether the client cannot read the answer about to be sent: it hung up, or it has
        waited longer than clients wait (client_timeout_seconds)."""
        limit = self.sim.chaos.config.client_timeout_seconds
        if limit > 0 and time.monotonic() - self._arrived >= limit:
            return True
        return self._client_gone()

    def _drop(self) -> None:
        """Close the connection without a byte of response, as a lost reply looks."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _allow(self, methods: Mapping[str, Callable[[], None]]) -> None:
        """Run the handler of this request's method, or answer 405."""
        handler = methods.get(self.command)
        if handler is not None:
            handler()
            return
        allow = ", ".join(sorted(methods))
        message = f"{self.command} not allowed; use {allow}"
        self._send_json(405, _error("METHOD_NOT_ALLOWED", message), {"Allow": allow})

    # -- vendor API ------------------------------------------------------------

    def _api(self, path: str, body: bytes) -> None:
        chaos = self.sim.chaos
        self._ticket = self.sim.ledger.ticket()
        self._arrived = time.monotonic()
        self.sim.sleep(chaos.latency())
        tail = path.removeprefix(STATUS_PREFIX)
        purchased = _reference(_json_object(body)) if path == PURCHASE_PATH else None
        if chaos.is_down(purchased):
            self.sim.ledger.note_fault("outage")
            if purchased is not None and self.command == "POST" and self._authorized(path, body):
                self._note_refused_purchase(purchased)
            self._send_json(503, _error("SERVICE_UNAVAILABLE", "vendor is down"))
        elif not self._authorized(path, body):
            self._send_json(401, _error("UNAUTHORIZED", "bad API key, signature or timestamp"))
        elif path == PURCHASE_PATH:
            self._allow({"POST": lambda: self._purchase(body)})
        elif path.startswith(STATUS_PREFIX) and tail and "/" not in tail:
            self._allow({"GET": lambda: self._status(unquote(tail))})
        elif path == BALANCE_PATH:
            balance = {"balance": round(self.sim.ledger.balance, 2), "currency": "GHS"}
            self._allow({"GET": lambda: self._send_json(200, balance)})
        else:
            self._send_json(404, _error("NOT_FOUND", "no such route"))

    def _authorized(self, path: str, body: bytes) -> bool:
        key = self.headers.get("X-API-Key", "")
        if not hmac.compare_digest(key.encode(), self.sim.api_key.encode()):
            return False
        return verify(
            self.sim.api_secret,
            timestamp=self.headers.get("X-Timestamp"),
            signature=self.headers.get("X-Signature"),
            method=self.command,
            path=path,
            body=body,
            now=time.time(),
        )

    def _note_refused_purchase(self, reference: str) -> None:
        """A signed purchase answered 503 by an outage: an unknown outcome to the client,
        and a blind re-purchase if it is one (the books never see it)."""
        self.sim.ledger.note_refused_purchase(reference, self._ticket)
        self.sim.ledger.note_outcome(reference, self._ticket, known=False)

    def _purchase(self, body: bytes) -> None:
        payload = _json_object(body)
        reference = _reference(payload)
        if payload is None or reference is None:
            message = "body must be a JSON object with a non-empty string reference"
            self._send_json(400, _error("VALIDATION_ERROR", message))
            return
        with self.sim.purchase_in_flight(self._ticket, reference, int(self.client_address[1])):
            self._purchase_of(reference, payload)

    def _answer_purchase(
        self,
        reference: str,
        status: int,
        payload: Mapping[str, Any],
        *,
        reveals: bool,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a purchase's answer, noting what the client learns from it: nothing when it
        can no longer read it (an unknown outcome); the reference's state when `reveals`."""
        if self._missed():
            self.sim.ledger.note_outcome(reference, self._ticket, known=False)
        elif reveals:
            self.sim.ledger.note_outcome(reference, self._ticket, known=True)
        self._send_json(status, payload, headers)

    def _purchase_of(self, reference: str, payload: JsonBody) -> None:
        ledger, chaos = self.sim.ledger, self.sim.chaos
        ledger.note_purchase_request(reference, self._ticket)
        fault = chaos.decide(reference)
        if fault is not None:
            ledger.note_fault(fault.value)
        if fault is FaultKind.RATE_LIMIT:  # refused at the gate: nothing recorded
            reply, retry_after = _error("RATE_LIMITED", "slow down"), {"Retry-After": "1"}
            self._answer_purchase(reference, 429, reply, reveals=False, headers=retry_after)
            return
        config = chaos.config
        problem = purchase_problem(payload, config)
        if problem is None and fault is FaultKind.INVALID_PHONE:
            problem = ("INVALID_PHONE", "phone_number rejected by the network")
        if problem is None and fault is FaultKind.INSUFFICIENT_BALANCE:
            problem = ("INSUFFICIENT_BALANCE", "top up the vendor account")
        if problem is not None:
            ledger.fail(reference, problem[0])
            code = 402 if problem[0] == "INSUFFICIENT_BALANCE" else 400
            self._answer_purchase(reference, code, _error(*problem), reveals=False)
            return
        if fault in (FaultKind.ERROR, FaultKind.TIMEOUT, FaultKind.GARBAGE):
            ledger.fail(reference, "SERVICE_UNAVAILABLE")
            ledger.note_outcome(reference, self._ticket, known=False)
            self._answer_broken(fault, config)
            return
        pending_for = config.pending_seconds if fault is FaultKind.PENDING else None
        result = ledger.purchase(reference, float(payload["size_gb"]), pending_for=pending_for)
        if fault is FaultKind.DROP_AFTER_DELIVERY:
            ledger.note_outcome(reference, self._ticket, known=False)
            self._drop()
            return
        if fault is FaultKind.STALL_AFTER_DELIVERY:
            self.sim.sleep(config.timeout_seconds)
        if result.outcome is Outcome.DUPLICATE:
            reply = _error("DUPLICATE_REFERENCE", "reference already used; see transaction")
            body = {**reply, "transaction": result.transaction.to_json()}
            self._answer_purchase(reference, 409, body, reveals=True)
        elif result.outcome is Outcome.INSUFFICIENT_BALANCE:
            reply = _error("INSUFFICIENT_BALANCE", "top up the vendor account")
            self._answer_purchase(reference, 402, reply, reveals=False)
        else:
            code = 202 if pending_for is not None else 200
            self._answer_purchase(reference, code, result.transaction.to_json(), reveals=True)

    def _answer_broken(self, fault: FaultKind, config: FaultConfig) -> None:
        """The transient failures after which a client cannot know what happened."""
        if fault is FaultKind.TIMEOUT:
            self.sim.sleep(config.timeout_seconds)
            self._send_json(504, _error("GATEWAY_TIMEOUT", "upstream timed out"))
        elif fault is FaultKind.GARBAGE:
            self._send(200, GARBAGE_BODY, "text/html")
        else:
            self._send_json(503, _error("SERVICE_UNAVAILABLE", "try again later"))

    def _status(self, reference: str) -> None:
        tx = self.sim.ledger.lookup(reference)
        fault = self.sim.chaos.scripts.next_status(reference)
        if fault is not None:
            self.sim.ledger.note_fault(f"status_{fault.value}")
            self._answer_broken(fault, self.sim.chaos.config)
        else:
            if not self._missed():  # a readable answer: the client knows the state now
                self.sim.ledger.note_outcome(reference, self._ticket, known=True)
            if tx is None:
                self._send_json(404, _error("NOT_FOUND", "no transaction with that reference"))
            else:
                self._send_json(200, tx.to_json())

    # -- control routes (no auth; tests and the demo) --------------------------

    def _control(self, path: str, body: bytes) -> None:
        sim = self.sim
        routes: dict[str, dict[str, ControlAction]] = {
            "/_sim/health": {"GET": lambda _: {"ok": True}},
            "/_sim/ledger": {"GET": lambda _: sim.ledger.snapshot()},
            "/_sim/inflight": {"GET": lambda _: sim.purchases_in_flight()},
            "/_sim/faults": {
                "GET": lambda _: sim.chaos.config.model_dump(mode="json"),
                "POST": lambda p: sim.update_faults(p).model_dump(mode="json"),
            },
            "/_sim/script": {"POST": sim.chaos.scripts.set_from_json},
            "/_sim/reset": {"POST": lambda _: sim.reset()},
            "/_sim/down": {"POST": sim.chaos.down_from_json},
        }
        if path not in routes:
            self._send_json(404, _error("NOT_FOUND", "no such route"))
            return
        payload = _json_object(body or b"{}")
        self._allow({m: partial(self._run_control, a, payload) for m, a in routes[path].items()})

    def _run_control(self, action: ControlAction, payload: JsonBody | None) -> None:
        """Run a control action: its JSON reply, or {"ok": true}; ValueError answers 400."""
        if payload is None:
            self._send_json(400, _error("VALIDATION_ERROR", "body must be a JSON object"))
            return
        try:
            reply = action(payload)
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError included
            self._send_json(400, _error("VALIDATION_ERROR", str(exc)))
            return
        self._send_json(200, {"ok": True} if reply is None else reply)
