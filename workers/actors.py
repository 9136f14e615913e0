"""Dramatiq actors: thin entry points from a message to a service function.

Run by the standard CLI: `dramatiq workers.actors --queues fulfillment` (Procfile `worker:`),
`dramatiq workers.actors --queues fulfillment.deadletter` (Procfile `deadletter:`) and
`dramatiq workers.actors --queues fulfillment.sms fulfillment.events` (Procfile `notify:`).
"""

from __future__ import annotations

import sys
from typing import Any

from fulfillment.runtime.metrics_server import (
    in_dramatiq_process,
    prepare_multiprocess_dir,
    serve_group_metrics,
)

if in_dramatiq_process():
    # Before anything imports prometheus_client: this process writes its metrics to the
    # group's multiprocess directory, merged by the group's exposition server.
    prepare_multiprocess_dir()

import dramatiq
from dramatiq.middleware import CurrentMessage, Middleware
from dramatiq.middleware.prometheus import Prometheus

from fulfillment.domain.constants import (
    DEAD_LETTER_ACTOR,
    DEAD_LETTER_QUEUE,
    EVENT_ACTOR,
    EVENTS_QUEUE,
    EXIT_REFUSED,
    FULFILL_ACTOR,
    FULFILLMENT_QUEUE,
    GAVE_UP_ACTOR,
    SMS_ACTOR,
    SMS_QUEUE,
)
from fulfillment.domain.errors import (
    ConfigurationError,
    MalformedMessage,
    OrderNotFound,
    SchemaTooOld,
    StoreError,
)
from fulfillment.domain.order import order_id_from_message
from fulfillment.runtime import bootstrap
from fulfillment.telemetry.logs import get_logger

broker = bootstrap.install_broker()  # before any @dramatiq.actor below binds to it
log = get_logger("fulfillment.worker")


class _ReleaseResources(Middleware):
    """Close the pool and vendor connections when a worker process stops."""

    # after_, not before_: Dramatiq runs this once in-flight messages are done, so a SIGTERM
    # lets the vendor call under way finish and record its outcome.
    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        bootstrap.reset()


class _RequireSchema(Middleware):
    """A worker process refuses to start on a schema older than this code needs (the deploy
    order is migrate first, then upgrade the hosts) or on settings it cannot use. Once it may
    start, it records the networks it serves fleet-wide, and says whether the boot-time kill
    switch holds it (fulfillment_enabled)."""

    def after_process_boot(self, broker: Any) -> None:
        try:
            version = bootstrap.require_schema()
            bootstrap.routes()  # every vendor a served network routes to, its settings complete
            bootstrap.check_notifier()  # SMS and webhook settings complete, SMS texts valid
            # the networks this host serves become known fleet-wide (fleet_networks)
            bootstrap.record_networks(by=bootstrap.worker_name())
        except (SchemaTooOld, ConfigurationError) as exc:
            log.error("worker.refused_to_start", error=str(exc))
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_REFUSED) from exc
        settings = bootstrap.settings()
        log.info(
            "worker.schema_checked",
            schema_version=version,
            networks=sorted(settings.networks()),
            vendors=settings.routes(),
        )
        from fulfillment.telemetry import metrics

        metrics.ENABLED.set(1 if settings.fulfillment_enabled else 0)

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        # each vendor's share of the threads is a share of this process's
        threads = getattr(worker, "worker_threads", None)
        if isinstance(threads, int) and threads > 0:
            bootstrap.set_worker_threads(threads)


class _GroupPrometheus(Prometheus):
    """Dramatiq's own metrics, served with ours by the group's exposition server on
    METRICS_HOST:METRICS_PORT (127.0.0.1:9191 unless set) instead of 0.0.0.0, and with the
    message duration in seconds (`dramatiq_message_duration_seconds`), the Prometheus base
    unit, in place of Dramatiq's milliseconds histogram that promtool rejects."""

    @property
    def forks(self) -> list[Any]:
        return [serve_group_metrics]

    def after_process_boot(self, broker: Any) -> None:
        super().after_process_boot(broker)  # type: ignore[no-untyped-call]
        import prometheus_client as prom

        seconds = prom.Histogram(
            "dramatiq_message_duration_seconds",
            "The time spent processing messages.",
            ["queue_name", "actor_name"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 600),
            registry=prom.CollectorRegistry(),
        )
        self.message_durations = _InSeconds(seconds)  # type: ignore[assignment]


class _InSeconds:
    """Takes Dramatiq's millisecond observations and records seconds."""

    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram

    def labels(self, *labels: str) -> _SecondsChild:
        return _SecondsChild(self.histogram.labels(*labels))


class _SecondsChild:
    __slots__ = ("child",)

    def __init__(self, child: Any) -> None:
        self.child = child

    def observe(self, milliseconds: float) -> None:
        self.child.observe(milliseconds / 1000)


if not any(isinstance(m, CurrentMessage) for m in broker.middleware):
    broker.add_middleware(CurrentMessage())
    if in_dramatiq_process():
        broker.add_middleware(_RequireSchema())
        broker.add_middleware(_GroupPrometheus())
    broker.add_middleware(_ReleaseResources())


def _retry_when(retries: int, exc: BaseException) -> bool:
    """Unexpected errors: a few retries. The database away: keep trying for a while."""
    return retries < (20 if isinstance(exc, StoreError | ConfigurationError) else 3)


def _message_id() -> str | None:
    message = CurrentMessage.get_current_message()
    return message.message_id if message is not None else None


@dramatiq.actor(
    actor_name=FULFILL_ACTOR,
    queue_name=FULFILLMENT_QUEUE,
    retry_when=_retry_when,
    min_backoff=1_000,
    max_backoff=60_000,
    on_retry_exhausted=GAVE_UP_ACTOR,
    time_limit=300_000,
)
def fulfill_order(*args: Any, **kwargs: Any) -> None:
    """Message contract: fulfill_order(order_id: str UUID)."""
    from fulfillment.services.delivery import fulfil
    from fulfillment.services.ports import DeadLetterNotice

    try:
        order_id = order_id_from_message(args, kwargs)
    except MalformedMessage as exc:
        log.warning("worker.malformed_message", reason=str(exc), message_id=_message_id())
        bootstrap.publish_dead_letter(
            DeadLetterNotice(
                kind="malformed_message",
                reason=str(exc),
                excerpt=repr((args, kwargs))[:300],
                message_id=_message_id(),
            )
        )
        return
    try:
        outcome = fulfil(order_id, bootstrap.fulfil_deps())
    except OrderNotFound as exc:
        log.warning("worker.unknown_order", order_id=order_id, message_id=_message_id())
        bootstrap.publish_dead_letter(
            DeadLetterNotice(
                kind="unknown_order", reason=str(exc), excerpt=order_id, message_id=_message_id()
            )
        )
        return
    log.debug("worker.message_done", order_id=order_id, outcome=outcome.value)


@dramatiq.actor(
    actor_name=DEAD_LETTER_ACTOR,
    queue_name=DEAD_LETTER_QUEUE,
    max_retries=10,
    min_backoff=1_000,
    max_backoff=60_000,
)
def dead_letter_order(notice: dict[str, Any]) -> None:
    from fulfillment.services.deadletter import handle_dead_letter
    from fulfillment.services.ports import DeadLetterNotice

    try:
        parsed = DeadLetterNotice.from_message(notice)
    except ValueError as exc:
        log.error("deadletter.malformed_notice", reason=str(exc), excerpt=repr(notice)[:300])
        return
    handle_dead_letter(parsed, bootstrap.store(), bootstrap.notifier(), bootstrap.announce_outcome)


@dramatiq.actor(
    actor_name=GAVE_UP_ACTOR,
    queue_name=DEAD_LETTER_QUEUE,
    max_retries=10,
    min_backoff=1_000,
    max_backoff=60_000,
)
def message_gave_up(message_data: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """Dramatiq's on_retry_exhausted hook for fulfill_order."""
    from fulfillment.services.deadletter import handle_gave_up, notice_for_gave_up
    from fulfillment.services.delivery import settle_for_dead_letter

    notice = notice_for_gave_up(message_data, retry_info, bootstrap.store())
    if notice is not None:
        handle_gave_up(
            notice,
            bootstrap.store(),
            bootstrap.notifier(),
            settle=lambda order_id: settle_for_dead_letter(order_id, bootstrap.fulfil_deps()),
            announce=bootstrap.announce_outcome,
        )


def _row_id(args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> int | None:
    """The one integer argument of a notifier message; None (logged) for anything else."""
    values = list(args) + list(kwargs.values())
    if len(values) == 1 and isinstance(values[0], int) and not isinstance(values[0], bool):
        return values[0]
    log.error(
        "notifier.malformed_message",
        actor=what,
        excerpt=repr((args, kwargs))[:300],
        message_id=_message_id(),
    )
    return None


@dramatiq.actor(
    actor_name=SMS_ACTOR,
    queue_name=SMS_QUEUE,
    retry_when=_retry_when,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=120_000,
)
def send_customer_sms(*args: Any, **kwargs: Any) -> None:
    """Message contract: send_customer_sms(sms_id: int), a customer_sms row. A lost or
    exhausted message loses nothing: the row is in PostgreSQL, the reconciler re-enqueues it."""
    from fulfillment.services.outbox import send_sms

    sms_id = _row_id(args, kwargs, SMS_ACTOR)
    if sms_id is not None:
        send_sms(sms_id, bootstrap.sms_deps())


@dramatiq.actor(
    actor_name=EVENT_ACTOR,
    queue_name=EVENTS_QUEUE,
    retry_when=_retry_when,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=120_000,
)
def send_platform_event(*args: Any, **kwargs: Any) -> None:
    """Message contract: send_platform_event(row_id: int), a platform_events row."""
    from fulfillment.services.outbox import send_event

    row_id = _row_id(args, kwargs, EVENT_ACTOR)
    if row_id is not None:
        send_event(row_id, bootstrap.event_deps())
