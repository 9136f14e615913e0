"""The AT-iShare simulator over HTTP: the vendor contract of DESIGN.md plus /_sim/ control routes.

Standard library only (ThreadingHTTPServer, HTTP/1.1 keep-alive). `Simulator` runs it
in-process for tests; `main` is the command line (python -m vendor.simulator.server).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from vendor.signing import verify
from vendor.simulator.faults import Chaos, FaultConfig, FaultKind, purchase_problem
from vendor.simulator.ledger import Ledger, Outcome

MAX_BODY_BYTES: Final = 64 * 1024
POLL_INTERVAL_S: Final = 0.05  # how soon stop() is noticed
PURCHASE_PATH: Final = "/v1/data/purchase"
STATUS_PREFIX: Final = PURCHASE_PATH + "/"
BALANCE_PATH: Final = "/v1/account/balance"
GARBAGE_BODY: Final = b"<html>not json"
DEFAULT_PORT: Final = 8099
DEFAULT_KEY: Final = "sim-key"
DEFAULT_SECRET: Final = "sim-secret"  # noqa: S105 - the simulator's documented fallback

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


class Simulator:
    """A simulated AT-iShare vendor listening on host:port (0 picks a free port)."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        faults: FaultConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.ledger = Ledger(balance=faults.balance)
        self.chaos = Chaos(faults, seed=seed)
        self._stopping = threading.Event()
        self._serving = False
        self._thread: threading.Thread | None = None
        self._server = _Server((host, port), self)

    @property
    def url(self) -> str:
        """Base URL of the vendor API, e.g. http://127.0.0.1:8099/v1."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def update_faults(self, changes: Mapping[str, Any]) -> FaultConfig:
        """Apply a partial config (ValidationError if invalid); a new balance resets the account."""
        config = self.chaos.update(changes)
        if "balance" in changes:
            self.ledger.set_balance(config.balance)
        return config

    def reset(self) -> None:
        """Clear the ledger, scripts and any outage; the fault config stays."""
        self.ledger.reset()
        self.chaos.reset()

    def sleep(self, seconds: float) -> None:
        """Stall a handler; stop() wakes every sleeper so shutdown is quick."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def start(self) -> None:
        """Serve in a daemon thread; returns at once (the socket is already listening)."""
        if self._thread is not None:
            return
        self._serving = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_S},
            name="at-ishare-simulator",
            daemon=True,
        )
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in the calling thread until stop() (from another thread) or an exception."""
        self._serving = True
        try:
            self._server.serve_forever(poll_interval=POLL_INTERVAL_S)
        finally:
            self._server.server_close()

    def stop(self) -> None:
        self._stopping.set()
        if self._serving:
            self._serving = False
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # bursts of concurrent clients must not wait on SYN retries

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (e.g. after its own timeout) is normal here, not a traceback."""
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AT-iShare-Simulator/1.0"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: request lines carry references, and bodies phone numbers."""

    @property
    def sim(self) -> Simulator:
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
        self.sim.sleep(chaos.latency())
        tail = path.removeprefix(STATUS_PREFIX)
        if chaos.is_down():
            self.sim.ledger.note_fault("outage")
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

    def _purchase(self, body: bytes) -> None:
        ledger, chaos = self.sim.ledger, self.sim.chaos
        payload = _json_object(body)
        reference = payload.get("reference") if payload is not None else None
        if payload is None or not isinstance(reference, str) or not reference:
            message = "body must be a JSON object with a non-empty string reference"
            self._send_json(400, _error("VALIDATION_ERROR", message))
            return
        ledger.note_purchase_request(reference)
        fault = chaos.decide(reference)
        if fault is not None:
            ledger.note_fault(fault.value)
        if fault is FaultKind.RATE_LIMIT:  # refused at the gate: nothing recorded
            self._send_json(429, _error("RATE_LIMITED", "slow down"), {"Retry-After": "1"})
            return
        config = chaos.config
        problem = purchase_problem(payload, config)
        if problem is None and fault is FaultKind.INVALID_PHONE:
            problem = ("INVALID_PHONE", "phone_number rejected by the network")
        if problem is None and fault is FaultKind.INSUFFICIENT_BALANCE:
            problem = ("INSUFFICIENT_BALANCE", "top up the vendor account")
        if problem is not None:
            ledger.fail(reference, problem[0])
            self._send_json(402 if problem[0] == "INSUFFICIENT_BALANCE" else 400, _error(*problem))
            return
        if fault in (FaultKind.ERROR, FaultKind.TIMEOUT, FaultKind.GARBAGE):
            ledger.fail(reference, "SERVICE_UNAVAILABLE")
            self._answer_broken(fault, config)
            return
        pending_for = config.pending_seconds if fault is FaultKind.PENDING else None
        result = ledger.purchase(reference, float(payload["size_gb"]), pending_for=pending_for)
        if fault is FaultKind.DROP_AFTER_DELIVERY:
            self._drop()
        elif result.outcome is Outcome.DUPLICATE:
            reply = _error("DUPLICATE_REFERENCE", "reference already used; see transaction")
            self._send_json(409, {**reply, "transaction": result.transaction.to_json()})
        elif result.outcome is Outcome.INSUFFICIENT_BALANCE:
            self._send_json(402, _error("INSUFFICIENT_BALANCE", "top up the vendor account"))
        else:
            self._send_json(202 if pending_for is not None else 200, result.transaction.to_json())

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
        elif tx is None:
            self._send_json(404, _error("NOT_FOUND", "no transaction with that reference"))
        else:
            self._send_json(200, tx.to_json())

    # -- control routes (no auth; tests and the demo) --------------------------

    def _control(self, path: str, body: bytes) -> None:
        sim = self.sim
        routes: dict[str, dict[str, ControlAction]] = {
            "/_sim/health": {"GET": lambda _: {"ok": True}},
            "/_sim/ledger": {"GET": lambda _: sim.ledger.snapshot()},
            "/_sim/faults": {
                "GET": lambda _: sim.chaos.config.model_dump(mode="json"),
                "POST": lambda p: sim.update_faults(p).model_dump(mode="json"),
            },
            "/_sim/script": {"POST": sim.chaos.scripts.set_from_json},
            "/_sim/reset": {"POST": lambda _: sim.reset()},
            "/_sim/down": {"POST": lambda p: sim.chaos.go_down(float(p.get("seconds", "?")))},
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


# -- command line ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vendor.simulator.server",
        description="Simulated AT-iShare vendor. Each flag also reads SIM_<FLAG> (SIM_ERROR_RATE, "
        "...); credentials come from AT_ISHARE_API_KEY and AT_ISHARE_API_SECRET.",
    )
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"listen port (default {DEFAULT_PORT})")
    parser.add_argument("--seed", type=int, help="seed of the fault dice")
    for field, info in FaultConfig.model_fields.items():
        if info.annotation in (float, int):
            parser.add_argument("--" + field.replace("_", "-"), dest=field, type=float)
    parser.add_argument(
        "--invalid-phone", dest="invalid_phones", action="append", help="always INVALID_PHONE"
    )
    parser.add_argument("--invalid-phone-suffix", help='numbers ending so are invalid ("0000")')
    return parser


def simulator_from_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Simulator:
    """Build (not start) a Simulator from flags, falling back to SIM_* and AT_ISHARE_* env."""
    env = os.environ if environ is None else environ
    parser = _parser()
    args = vars(parser.parse_args(argv))
    flags = {k: v for k, v in args.items() if k in FaultConfig.model_fields and v is not None}
    try:
        faults = FaultConfig.from_env(env).updated(flags)
        port = args["port"] if args["port"] is not None else int(env.get("SIM_PORT", DEFAULT_PORT))
        seed_env = env.get("SIM_SEED")
        seed = args["seed"] if args["seed"] is not None else int(seed_env) if seed_env else None
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        parser.error(str(exc))
    key, secret = env.get("AT_ISHARE_API_KEY"), env.get("AT_ISHARE_API_SECRET")
    if not key or not secret:
        warning = "warning: AT_ISHARE_API_KEY/AT_ISHARE_API_SECRET unset; using the sim defaults"
        print(warning, file=sys.stderr, flush=True)
    return Simulator(
        api_key=key or DEFAULT_KEY,
        api_secret=secret or DEFAULT_SECRET,
        faults=faults,
        host=args["host"] or env.get("SIM_HOST") or "127.0.0.1",
        port=port,
        seed=seed,
    )


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    simulator = simulator_from_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    print(f"simulator listening on {simulator.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        simulator.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
