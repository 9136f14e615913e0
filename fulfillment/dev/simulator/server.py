"""The AT-iShare simulator over HTTP: the vendor contract of DESIGN.md plus /_sim/ control routes.

Standard library only (ThreadingHTTPServer, HTTP/1.1 keep-alive). `Simulator` runs it
in-process for tests; `main` is the command line (python -m fulfillment.dev.simulator.server). The
requests themselves are answered by fulfillment.dev.simulator.handler.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType
from typing import Any, Final

from fulfillment.dev.simulator.faults import Chaos, FaultConfig
from fulfillment.dev.simulator.handler import JsonBody, VendorHTTPServer
from fulfillment.dev.simulator.ledger import Ledger

POLL_INTERVAL_S: Final = 0.05  # how soon stop() is noticed
DEFAULT_PORT: Final = 8099
DEFAULT_KEY: Final = "sim-key"
DEFAULT_SECRET: Final = "sim-secret"  # noqa: S105 - the simulator's documented fallback


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
        self._inflight_lock = threading.Lock()
        self._inflight: dict[int, JsonBody] = {}
        self._thread: threading.Thread | None = None
        self._server = VendorHTTPServer((host, port), self)

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

    @contextlib.contextmanager
    def purchase_in_flight(self, ticket: int, reference: str, client_port: int) -> Iterator[None]:
        """List a purchase in GET /_sim/inflight while it is being answered."""
        entry = {"reference": reference, "client_port": client_port, "since": time.monotonic()}
        with self._inflight_lock:
            self._inflight[ticket] = entry
        try:
            yield
        finally:
            with self._inflight_lock:
                self._inflight.pop(ticket, None)

    def purchases_in_flight(self) -> JsonBody:
        """{"purchases": [{"reference", "client_port", "seconds"}...]}: purchases not answered
        yet, each with the client's port and how long ago it arrived."""
        now = time.monotonic()
        with self._inflight_lock:
            entries = list(self._inflight.values())
        return {
            "purchases": [
                {
                    "reference": e["reference"],
                    "client_port": e["client_port"],
                    "seconds": round(now - e["since"], 3),
                }
                for e in entries
            ]
        }

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


# -- command line ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fulfillment.dev.simulator.server",
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
