"""The vendor simulator over HTTP: AT-iShare, the data aggregator, the SMS provider and the
platform's event receiver in one process.

AT-iShare's contract (DESIGN.md "AT-iShare vendor API") is served at /v1 with its control
routes at /_sim/; the aggregator's (DESIGN.md "Other networks") at /aggregator/v1 with its
own at /aggregator/_sim/; the SMS provider's (DESIGN.md "Customer SMS") at /sms/v1 and
/sms/_sim/; the platform's receiver (DESIGN.md "What the platform is told") at
/platform/events and /platform/_sim/. Each party has its own ledger, faults, scripts and
outages. Standard library only (ThreadingHTTPServer, HTTP/1.1 keep-alive). `Simulator` runs it
in-process for tests; `main` is the command line (python -m fulfillment.dev.simulator.server).
The protocols are fulfillment.dev.simulator.atishare, .aggregator, .sms and .platform.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any, Final

from fulfillment.dev.simulator import aggregator, platform, sms
from fulfillment.dev.simulator.aggregator import AggregatorVendor
from fulfillment.dev.simulator.atishare import AtIshareVendor
from fulfillment.dev.simulator.faults import AGGREGATOR_ENV_PREFIX, Chaos, FaultConfig
from fulfillment.dev.simulator.handler import JsonBody, Mounted, VendorHTTPServer
from fulfillment.dev.simulator.ledger import Ledger
from fulfillment.dev.simulator.platform import (
    PLATFORM_ENV_PREFIX,
    PlatformFaults,
    PlatformReceiver,
)
from fulfillment.dev.simulator.sms import SMS_ENV_PREFIX, SmsFaults, SmsProvider

POLL_INTERVAL_S: Final = 0.05  # how soon stop() is noticed
DEFAULT_PORT: Final = 8099
DEFAULT_KEY: Final = "sim-key"
DEFAULT_SECRET: Final = "sim-secret"  # noqa: S105 - the simulator's documented fallback
DEFAULT_AGGREGATOR_TOKEN: Final = "sim-aggregator-token"  # noqa: S105 - documented fallback
DEFAULT_SMS_CLIENT_ID: Final = "sim-sms-id"
DEFAULT_SMS_CLIENT_SECRET: Final = "sim-sms-secret"  # noqa: S105 - documented fallback
DEFAULT_PLATFORM_SECRET: Final = "sim-platform-secret"  # noqa: S105 - documented fallback
#: the line after the ready line (launcher.SIM_READY): where the aggregator is
AGGREGATOR_READY: Final = "aggregator listening on "
#: the lines after that one: where the SMS provider and the platform receiver are
SMS_READY: Final = "sms listening on "
PLATFORM_READY: Final = "platform receiver listening on "


class Simulator:
    """Every simulated party listening on host:port (0 picks a free port).

    `ledger`, `chaos`, `update_faults`, `reset` and the in-flight list are AT-iShare's (as they
    always were: `atishare` is the same vendor); `aggregator` has the same of its own, and
    `sms` (the SMS provider) and `platform` (the platform's event receiver) their own ledger,
    chaos, update_faults and reset.
    """

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        faults: FaultConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        aggregator_token: str = DEFAULT_AGGREGATOR_TOKEN,
        aggregator_faults: FaultConfig | None = None,
        aggregator_webhook_url: str | None = None,
        aggregator_webhook_secret: str | None = None,
        sms_client_id: str = DEFAULT_SMS_CLIENT_ID,
        sms_client_secret: str = DEFAULT_SMS_CLIENT_SECRET,
        sms_faults: SmsFaults | None = None,
        platform_secret: str = DEFAULT_PLATFORM_SECRET,
        platform_faults: PlatformFaults | None = None,
    ) -> None:
        self._stopping = threading.Event()
        self.atishare = AtIshareVendor(
            api_key=api_key,
            api_secret=api_secret,
            faults=faults,
            seed=seed,
            stopping=self._stopping,
        )
        self.aggregator = AggregatorVendor(
            token=aggregator_token,
            faults=FaultConfig() if aggregator_faults is None else aggregator_faults,
            seed=None if seed is None else seed + 1,  # dice of its own
            stopping=self._stopping,
            webhook_url=aggregator_webhook_url,
            webhook_secret=aggregator_webhook_secret,
        )
        self.sms = SmsProvider(
            client_id=sms_client_id,
            client_secret=sms_client_secret,
            faults=SmsFaults() if sms_faults is None else sms_faults,
            seed=None if seed is None else seed + 2,
            stopping=self._stopping,
        )
        self.platform = PlatformReceiver(
            secret=platform_secret,
            faults=PlatformFaults() if platform_faults is None else platform_faults,
            seed=None if seed is None else seed + 3,
            stopping=self._stopping,
        )
        self.ledger: Ledger = self.atishare.ledger
        self.chaos: Chaos = self.atishare.chaos
        self._serving = False
        self._thread: threading.Thread | None = None
        mounts: dict[str, Mounted] = {
            "": self.atishare,
            aggregator.MOUNT: self.aggregator,
            sms.MOUNT: self.sms,
            platform.MOUNT: self.platform,
        }
        self._server = VendorHTTPServer((host, port), mounts, api_prefixes={platform.MOUNT: "/"})

    @property
    def api_key(self) -> str:
        return self.atishare.api_key

    @property
    def api_secret(self) -> str:
        return self.atishare.api_secret

    @property
    def _base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        """Base URL of the AT-iShare API, e.g. http://127.0.0.1:8099/v1."""
        return f"{self._base}/v1"

    @property
    def aggregator_url(self) -> str:
        """Base URL of the aggregator API, e.g. http://127.0.0.1:8099/aggregator/v1."""
        return f"{self._base}{aggregator.MOUNT}/v1"

    @property
    def sms_url(self) -> str:
        """Base URL of the SMS provider's API, e.g. http://127.0.0.1:8099/sms/v1."""
        return f"{self._base}{sms.MOUNT}/v1"

    @property
    def platform_url(self) -> str:
        """Where the platform receives events, e.g. http://127.0.0.1:8099/platform/events."""
        return f"{self._base}{platform.EVENTS_PATH}"

    def update_faults(self, changes: Mapping[str, Any]) -> FaultConfig:
        """AT-iShare's: apply a partial config (ValidationError if invalid); a new balance
        resets the account."""
        return self.atishare.update_faults(changes)

    def reset(self) -> None:
        """AT-iShare's: clear the ledger, scripts and any outage; the fault config stays."""
        self.atishare.reset()

    def purchase_in_flight(
        self, ticket: int, reference: str, client_port: int
    ) -> contextlib.AbstractContextManager[None]:
        """List an AT-iShare purchase in GET /_sim/inflight while it is being answered."""
        return self.atishare.purchase_in_flight(ticket, reference, client_port)

    def purchases_in_flight(self) -> JsonBody:
        """AT-iShare's purchases not answered yet (GET /_sim/inflight)."""
        return self.atishare.purchases_in_flight()

    def sleep(self, seconds: float) -> None:
        """Stall a handler; stop() wakes every sleeper so shutdown is quick."""
        self.atishare.sleep(seconds)

    def start(self) -> None:
        """Serve in a daemon thread; returns at once (the socket is already listening)."""
        if self._thread is not None:
            return
        self._serving = True
        self.aggregator.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_S},
            name="vendor-simulator",
            daemon=True,
        )
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in the calling thread until stop() (from another thread) or an exception."""
        self._serving = True
        self.aggregator.start()
        try:
            self._server.serve_forever(poll_interval=POLL_INTERVAL_S)
        finally:
            self._stopping.set()
            self.aggregator.stop()
            self._server.server_close()

    def stop(self) -> None:
        self._stopping.set()
        if self._serving:
            self._serving = False
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.aggregator.stop()
        self._server.server_close()

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- command line ----------------------------------------------------------------

#: the dest prefix of the aggregator's fault flags (--aggregator-error-rate: aggregator_error_rate)
_AGGREGATOR_DEST: Final = "aggregator_"


def _add_fault_flags(parser: argparse.ArgumentParser, dest_prefix: str) -> None:
    """--<field> for every number of FaultConfig, --invalid-phone, --invalid-phone-suffix."""
    flag = "--" + dest_prefix.replace("_", "-")
    for field, info in FaultConfig.model_fields.items():
        if info.annotation in (float, int):
            name = flag + field.replace("_", "-")
            parser.add_argument(name, dest=dest_prefix + field, type=float)
    parser.add_argument(
        flag + "invalid-phone",
        dest=dest_prefix + "invalid_phones",
        action="append",
        help="always refused (AT-iShare INVALID_PHONE, the aggregator INVALID_RECIPIENT)",
    )
    parser.add_argument(
        flag + "invalid-phone-suffix",
        dest=dest_prefix + "invalid_phone_suffix",
        help='numbers ending so are refused ("0000")',
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fulfillment.dev.simulator.server",
        description="Simulated AT-iShare vendor (/v1) and data aggregator (/aggregator/v1). Each "
        "AT-iShare fault flag also reads SIM_<FLAG> (SIM_ERROR_RATE, ...), each aggregator one "
        "SIM_<FLAG> too (SIM_AGGREGATOR_ERROR_RATE, ...); credentials come from "
        "AT_ISHARE_API_KEY, AT_ISHARE_API_SECRET, AGGREGATOR_API_TOKEN and "
        "AGGREGATOR_WEBHOOK_SECRET, the callback URL from SIM_AGGREGATOR_WEBHOOK_URL. The SMS "
        "provider (/sms/v1) reads SIM_SMS_CLIENT_ID and SIM_SMS_CLIENT_SECRET (else SMS_CLIENT_ID "
        "and SMS_CLIENT_SECRET), its faults SIM_SMS_<FIELD> (SIM_SMS_ERROR_RATE, ...); the "
        "platform receiver (/platform/events) SIM_PLATFORM_SECRET (else PLATFORM_WEBHOOK_SECRET), "
        "its faults SIM_PLATFORM_<FIELD>.",
    )
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"listen port (default {DEFAULT_PORT})")
    parser.add_argument("--seed", type=int, help="seed of the fault dice")
    _add_fault_flags(parser, "")
    parser.add_argument("--aggregator-token", help="the aggregator's bearer token")
    parser.add_argument("--aggregator-webhook-url", help="where the aggregator sends callbacks")
    parser.add_argument("--aggregator-webhook-secret", help="the secret that signs them")
    _add_fault_flags(parser, _AGGREGATOR_DEST)
    return parser


def _faults(
    args: Mapping[str, Any], env: Mapping[str, str], *, dest_prefix: str, env_prefix: str
) -> FaultConfig:
    """One vendor's FaultConfig: its env variables, overridden by its flags."""
    flags = {
        field: args[dest_prefix + field]
        for field in FaultConfig.model_fields
        if args.get(dest_prefix + field) is not None
    }
    return FaultConfig.from_env(env, prefix=env_prefix).updated(flags)


def simulator_from_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Simulator:
    """Build (not start) a Simulator from flags, falling back to SIM_*, AT_ISHARE_*,
    AGGREGATOR_*, SMS_CLIENT_* and PLATFORM_WEBHOOK_SECRET env."""
    env = os.environ if environ is None else environ
    parser = _parser()
    args = vars(parser.parse_args(argv))
    try:
        faults = _faults(args, env, dest_prefix="", env_prefix="SIM_")
        aggregator_faults = _faults(
            args, env, dest_prefix=_AGGREGATOR_DEST, env_prefix=AGGREGATOR_ENV_PREFIX
        )
        sms_faults = SmsFaults.from_env(env, prefix=SMS_ENV_PREFIX)
        platform_faults = PlatformFaults.from_env(env, prefix=PLATFORM_ENV_PREFIX)
        port = args["port"] if args["port"] is not None else int(env.get("SIM_PORT", DEFAULT_PORT))
        seed_env = env.get("SIM_SEED")
        seed = args["seed"] if args["seed"] is not None else int(seed_env) if seed_env else None
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        parser.error(str(exc))
    key, secret = env.get("AT_ISHARE_API_KEY"), env.get("AT_ISHARE_API_SECRET")
    if not key or not secret:
        warning = "warning: AT_ISHARE_API_KEY/AT_ISHARE_API_SECRET unset; using the sim defaults"
        print(warning, file=sys.stderr, flush=True)
    token = args["aggregator_token"] or env.get("AGGREGATOR_API_TOKEN")
    webhook_url = args["aggregator_webhook_url"] or env.get("SIM_AGGREGATOR_WEBHOOK_URL")
    webhook_secret = args["aggregator_webhook_secret"] or env.get("AGGREGATOR_WEBHOOK_SECRET")
    sms_id = env.get("SIM_SMS_CLIENT_ID") or env.get("SMS_CLIENT_ID")
    sms_secret = env.get("SIM_SMS_CLIENT_SECRET") or env.get("SMS_CLIENT_SECRET")
    platform_secret = env.get("SIM_PLATFORM_SECRET") or env.get("PLATFORM_WEBHOOK_SECRET")
    try:
        return Simulator(
            api_key=key or DEFAULT_KEY,
            api_secret=secret or DEFAULT_SECRET,
            faults=faults,
            host=args["host"] or env.get("SIM_HOST") or "127.0.0.1",
            port=port,
            seed=seed,
            aggregator_token=token or DEFAULT_AGGREGATOR_TOKEN,
            aggregator_faults=aggregator_faults,
            aggregator_webhook_url=webhook_url or None,
            aggregator_webhook_secret=webhook_secret or None,
            sms_client_id=sms_id or DEFAULT_SMS_CLIENT_ID,
            sms_client_secret=sms_secret or DEFAULT_SMS_CLIENT_SECRET,
            sms_faults=sms_faults,
            platform_secret=platform_secret or DEFAULT_PLATFORM_SECRET,
            platform_faults=platform_faults,
        )
    except ValueError as exc:  # a callback URL that is not http(s)
        parser.error(str(exc))


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    simulator = simulator_from_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    print(f"simulator listening on {simulator.url}", flush=True)  # launcher.SIM_READY
    print(f"{AGGREGATOR_READY}{simulator.aggregator_url}", flush=True)
    print(f"{SMS_READY}{simulator.sms_url}", flush=True)
    print(f"{PLATFORM_READY}{simulator.platform_url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        simulator.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
