"""The simulator's HTTP transport: one server, each party mounted at a prefix of its own.

A vendor mounted at `prefix` answers `prefix/v1/...` (its API: `Mounted.answer`, see
fulfillment.dev.simulator.api) and `prefix/_sim/...` (its control routes, no auth: tests and
the demo). AT-iShare is mounted at "" (/v1, /_sim), the aggregator at /aggregator
(/aggregator/v1, /aggregator/_sim), the SMS provider at /sms (/sms/v1, /sms/_sim); the
platform receiver, mounted at /platform, answers every path under it but /platform/_sim/ (its
API prefix is "/"). This module knows no protocol: it reads bodies, sends answers, drops
connections and notices clients that hung up.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from collections.abc import Callable, Mapping
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

MAX_BODY_BYTES: Final = 64 * 1024
API_PREFIX: Final = "/v1/"
CONTROL_PREFIX: Final = "/_sim/"

JsonBody = dict[str, Any]
ControlAction = Callable[[JsonBody], JsonBody | None]
ControlRoutes = Mapping[str, Mapping[str, ControlAction]]


def error(code: str, message: str) -> JsonBody:
    return {"error": {"code": code, "message": message}}


def json_object(body: bytes) -> JsonBody | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def string_field(payload: JsonBody | None, name: str) -> str | None:
    """payload[name] when it is a non-empty string (a reference, a request_id)."""
    value = payload.get(name) if payload is not None else None
    return value if isinstance(value, str) and value else None


class Mounted(Protocol):
    """A simulated party as the transport sees it (simulator.vendor.Vendor is one)."""

    def answer(self, http: Handler, path: str, body: bytes) -> None:
        """Answer a request to the vendor API (the full path, mount prefix included)."""

    def control_routes(self) -> ControlRoutes:
        """{"/_sim/<name>": {method: action}}, relative to the mount prefix."""


class VendorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # bursts of concurrent clients must not wait on SYN retries

    def __init__(
        self,
        address: tuple[str, int],
        mounts: Mapping[str, Mounted],
        api_prefixes: Mapping[str, str] | None = None,
    ) -> None:
        # the longest prefix first, so that "" (AT-iShare) comes last
        self.mounts = sorted(mounts.items(), key=lambda item: -len(item[0]))
        #: where a mount's API starts under its prefix, when not at API_PREFIX (/v1/)
        self.api_prefixes = dict(api_prefixes or {})
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (e.g. after its own timeout) is normal here, not a traceback."""
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Vendor-Simulator/1.0"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: VendorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: request lines carry references, and bodies phone numbers."""

    def _dispatch(self) -> None:
        try:
            path = urlsplit(self.path).path
            body = self._read_body()
            if body is not None:
                self._route(path, body)
        except ConnectionError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch  # noqa: N815 - stdlib names

    def _route(self, path: str, body: bytes) -> None:
        for prefix, vendor in self.server.mounts:
            rest = path.removeprefix(prefix) if path.startswith(prefix + "/") else ""
            if rest.startswith(CONTROL_PREFIX):
                self._control(vendor.control_routes(), rest, body)
                return
            if rest.startswith(self.server.api_prefixes.get(prefix, API_PREFIX)):
                vendor.answer(self, path, body)
                return
        self.reply_json(404, error("NOT_FOUND", "no such route"))

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 400/413 (and closing: it went unread)."""
        raw = self.headers.get("Content-Length", "0").strip()
        if "Transfer-Encoding" in self.headers or not raw.isdigit():
            self.close_connection = True
            self.reply_json(400, error("VALIDATION_ERROR", "invalid Content-Length"))
            return None
        if int(raw) > MAX_BODY_BYTES:
            self.close_connection = True
            self.reply_json(413, error("PAYLOAD_TOO_LARGE", f"body over {MAX_BODY_BYTES} bytes"))
            return None
        return self.rfile.read(int(raw))

    # -- answering (the vendor APIs use these) -----------------------------------

    def reply_json(
        self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        self.reply(status, json.dumps(payload).encode(), "application/json", headers)

    def reply(
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

    def client_gone(self) -> bool:
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

    def drop(self) -> None:
        """Close the connection without a byte of response, as a lost reply looks."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def allow(self, methods: Mapping[str, Callable[[], None]]) -> None:
        """Run the handler of this request's method, or answer 405."""
        handler = methods.get(self.command)
        if handler is not None:
            handler()
            return
        allow = ", ".join(sorted(methods))
        message = f"{self.command} not allowed; use {allow}"
        self.reply_json(405, error("METHOD_NOT_ALLOWED", message), {"Allow": allow})

    # -- control routes (no auth; tests and the demo) --------------------------

    def _control(self, routes: ControlRoutes, path: str, body: bytes) -> None:
        if path not in routes:
            self.reply_json(404, error("NOT_FOUND", "no such route"))
            return
        payload = json_object(body or b"{}")
        self.allow({m: partial(self._run_control, a, payload) for m, a in routes[path].items()})

    def _run_control(self, action: ControlAction, payload: JsonBody | None) -> None:
        """Run a control action: its JSON reply, or {"ok": true}; ValueError answers 400."""
        if payload is None:
            self.reply_json(400, error("VALIDATION_ERROR", "body must be a JSON object"))
            return
        try:
            reply = action(payload)
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError included
            self.reply_json(400, error("VALIDATION_ERROR", str(exc)))
            return
        self.reply_json(200, {"ok": True} if reply is None else reply)
