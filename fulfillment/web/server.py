"""`fulfillment web [--host 127.0.0.1] [--port $PORT or 8000]`: serve the admin web process.

Refuses to start (exit 2) without ADMIN_TOKEN and API_TOKEN, unless FULFILLMENT_DEMO=1: the
demo gets generated tokens, printed once with the dashboard's login URL. Tokens are never
logged. Without vendor credentials the process still serves; only the webhook answers 503.
Uvicorn's access log is off: query strings carry phone numbers typed into the search.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from fulfillment.domain.constants import EXIT_USAGE
from fulfillment.domain.errors import ConfigurationError, FulfillmentError
from fulfillment.runtime import bootstrap
from fulfillment.runtime.metrics_server import FleetCollector
from fulfillment.runtime.settings import Settings
from fulfillment.telemetry.logs import get_logger

if TYPE_CHECKING:
    from fulfillment.web.deps import WebDeps

log = get_logger("fulfillment.web")

DEFAULT_PORT: Final = 8000
DASHBOARD_PATH: Final = "/dashboard/admin/fulfillment"


@dataclass(frozen=True, slots=True)
class Tokens:
    admin: str
    api: str
    #: names of the variables that were unset and got a generated token (demo only)
    generated: tuple[str, ...] = ()


def resolve_tokens(admin: str | None, api: str | None, *, demo: bool) -> Tokens | list[str]:
    """The tokens to serve with, or the names of the missing variables (outside the demo)."""
    given = {"ADMIN_TOKEN": (admin or "").strip(), "API_TOKEN": (api or "").strip()}
    missing = [name for name, value in given.items() if not value]
    if missing and not demo:
        return missing
    values = {name: given[name] or secrets.token_urlsafe(24) for name in given}
    return Tokens(values["ADMIN_TOKEN"], values["API_TOKEN"], tuple(missing))


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get is not None else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fulfillment web",
        description="Serve the platform API, the admin dashboard, the vendor webhook, "
        "/metrics, /healthz and /readyz. Needs ADMIN_TOKEN and API_TOKEN.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=None, help=f"listen port (default $PORT or {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark the dashboard cookie Secure (serve behind HTTPS)",
    )
    return parser


def _port(arg: int | None, parser: argparse.ArgumentParser) -> int:
    if arg is not None:
        port = arg
    else:
        raw = os.environ.get("PORT", "").strip()
        if not raw:
            return DEFAULT_PORT
        if not raw.isdigit():
            parser.error(f"PORT must be a number, got {raw[:20]!r}")
        port = int(raw)
    if not 0 < port < 65536:
        parser.error(f"port {port} out of range")
    return port


def build_deps(settings: Settings, tokens: Tokens, *, secure_cookies: bool) -> WebDeps:
    """WebDeps wired from fulfillment.runtime.bootstrap (connects to PostgreSQL)."""
    import redis

    from fulfillment.web.deps import WebDeps

    try:
        _, vendor_key, vendor_secret = settings.vendor_credentials()
    except ConfigurationError as exc:
        log.warning("web.vendor_not_configured", error=str(exc), effect="webhook answers 503")
        vendor_key = vendor_secret = ""
    bootstrap.install_broker()
    client = redis.Redis.from_url(bootstrap.redis_url(), socket_connect_timeout=2, socket_timeout=2)
    return WebDeps(
        service=bootstrap.admin_service(),
        pauses=bootstrap.pause_service(),
        dlq=bootstrap.dead_message_queue(),
        store=bootstrap.store(),
        api_token=tokens.api,
        admin_token=tokens.admin,
        vendor_key=vendor_key,
        vendor_secret=vendor_secret,
        aggregator_secret=(
            settings.aggregator_webhook_secret.get_secret_value()
            if settings.aggregator_webhook_secret
            else ""
        ),
        fulfil_deps=bootstrap.fulfil_deps,
        ping_redis=client.ping,
        secure_cookies=secure_cookies,
        ping_vendor=bootstrap.vendor().balance if vendor_key else None,
        fulfillment_enabled=settings.fulfillment_enabled,
        collector=FleetCollector(
            bootstrap.store(), client, settings.redis_namespace, bootstrap.breakers()
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    port = _port(args.port, parser)
    try:
        settings = bootstrap.settings()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    demo = os.environ.get("FULFILLMENT_DEMO", "").strip() == "1"
    tokens = resolve_tokens(_secret(settings.admin_token), _secret(settings.api_token), demo=demo)
    if not isinstance(tokens, Tokens):
        print(
            f"error: refusing to start the admin web process: set {' and '.join(tokens)} "
            "(bearer tokens of the admin routes and of the platform API); "
            "FULFILLMENT_DEMO=1 generates them for a local demo",
            file=sys.stderr,
        )
        return EXIT_USAGE

    import uvicorn

    from fulfillment.web.app import create_app

    try:
        bootstrap.require_schema()  # SchemaTooOld: run `fulfillment migrate` first
        bootstrap.record_networks(by=f"web@{bootstrap.worker_name()}")  # known fleet-wide
        deps = build_deps(settings, tokens, secure_cookies=args.secure_cookies)
    except FulfillmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if demo:
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host  # noqa: S104
        lines = [f"dashboard: http://{shown}:{port}{DASHBOARD_PATH}"]
        if "ADMIN_TOKEN" in tokens.generated:
            lines.append(f"ADMIN_TOKEN (generated, log in with it): {tokens.admin}")
        if "API_TOKEN" in tokens.generated:
            lines.append(f"API_TOKEN (generated): {tokens.api}")
        print("\n".join(lines), flush=True)
    log.info("web.starting", host=args.host, port=port, demo=demo)
    uvicorn.run(
        create_app(deps),
        host=args.host,
        port=port,
        access_log=False,
        server_header=False,
        log_level="info",
    )
    return 0
