"""Prometheus exposition for Dramatiq process groups (multiprocess mode) and the collector
that reads the fleet's live state at scrape time.

A `dramatiq workers.actors ...` group is one main process with worker children. Each child
calls prepare_multiprocess_dir() before prometheus_client is imported: the group's directory
is `$METRICS_DIR/<main pid>`, and directories of groups that are gone are cleared, so every
start begins empty. The group's exposition server (a Dramatiq fork process of the same main
process) merges the children's files and serves them on METRICS_HOST:METRICS_PORT
(default 127.0.0.1:9191).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fulfillment.domain.constants import (
    DEAD_LETTER_QUEUE,
    EVENTS_QUEUE,
    FULFILLMENT_QUEUE,
    SMS_QUEUE,
)
from fulfillment.fleet.balance import balance_key

if TYPE_CHECKING:
    import redis

    from db.pause_store import PauseRow
    from db.store import Store
    from fulfillment.fleet.breaker import VendorBreaker

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9191


def metrics_base() -> Path:
    return Path(
        os.environ.get("METRICS_DIR") or Path(tempfile.gettempdir()) / "fulfillment-metrics"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_multiprocess_dir(group_pid: int | None = None) -> Path:
    """Point prometheus_client (and Dramatiq's middleware) at this process group's directory."""
    base = metrics_base()
    base.mkdir(parents=True, exist_ok=True)
    group = group_pid or os.getppid()
    directory = base / str(group)
    with (base / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for sibling in base.iterdir():
            if sibling.is_dir() and sibling.name.isdigit() and not _alive(int(sibling.name)):
                shutil.rmtree(sibling, ignore_errors=True)
        directory.mkdir(exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # the lower-case names are what older prometheus_client and Dramatiq's middleware read
    os.environ["prometheus_multiproc_dir"] = str(directory)  # noqa: SIM112
    os.environ["dramatiq_prom_db"] = str(directory)  # noqa: SIM112
    return directory


def in_dramatiq_process() -> bool:
    """True in the processes the `dramatiq` command starts (argv is inherited from it)."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return program.name == "dramatiq" or program.parent.name == "dramatiq"


def serve_group_metrics() -> int:
    """A Dramatiq fork function: serve the group's merged metrics until stopped."""
    directory = prepare_multiprocess_dir(os.getppid())
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    host = os.environ.get("METRICS_HOST", DEFAULT_HOST)
    port = int(os.environ.get("METRICS_PORT", DEFAULT_PORT))
    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        from fulfillment.telemetry.logs import get_logger

        get_logger("fulfillment.telemetry.metrics").error(
            "metrics.bind_failed", host=host, port=port, error=str(exc)
        )
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


#: the fleet statuses fulfillment_orders always shows (0 when none), per network
STATUSES_SHOWN = (
    "pending",
    "processing",
    "success",
    "failed",
    "dead_lettered",
    "outcome_unknown",
    "unmanaged",
)


class FleetCollector:
    """Live figures read at scrape time: queue depths, orders per status, the oldest pending
    order, orders held as outcome unknown, the runtime pauses, each vendor's circuit breaker
    and balance, live workers."""

    def __init__(
        self,
        store: Store,
        redis_client: redis.Redis,
        namespace: str,
        breakers: Mapping[str, VendorBreaker],
        queues: tuple[str, ...] = (FULFILLMENT_QUEUE, DEAD_LETTER_QUEUE, SMS_QUEUE, EVENTS_QUEUE),
    ) -> None:
        self.store = store
        self.redis = redis_client
        self.namespace = namespace
        #: vendor connection name -> its breaker (one per vendor: bulkheads)
        self.breakers = dict(breakers)
        self.queues = queues

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from db.admin_store import AdminStore
        from db.pause_store import PauseStore
        from fulfillment.domain.errors import StoreError

        depth = GaugeMetricFamily(
            "fulfillment_queue_depth",
            "Messages in Redis per queue and state.",
            labels=["queue", "state"],
        )
        up = GaugeMetricFamily(
            "fulfillment_collector_up", "1 when the source answered this scrape.", labels=["source"]
        )
        try:
            ns = self.namespace
            for queue in self.queues:
                ready = self.redis.llen(f"{ns}:{queue}")
                total = self.redis.hlen(f"{ns}:{queue}.msgs")
                depth.add_metric([queue, "ready"], ready)
                depth.add_metric([queue, "in_progress"], max(total - ready, 0))
                depth.add_metric([queue, "delayed"], self.redis.hlen(f"{ns}:{queue}.DQ.msgs"))
                depth.add_metric([queue, "dead_lettered"], self.redis.zcard(f"{ns}:{queue}.XQ"))
            beats = self.redis.zrangebyscore(
                f"{ns}:__heartbeats__", (self.redis.time()[0] - 60) * 1000, "+inf"
            )
            workers = GaugeMetricFamily(
                "fulfillment_workers_alive", "Dramatiq consumers with a heartbeat in the last 60 s."
            )
            workers.add_metric([], len(beats))
            yield depth
            yield workers
            balance = GaugeMetricFamily(
                "fulfillment_vendor_balance",
                "Last account balance read at each vendor (GHS).",
                labels=["vendor"],
            )
            circuit = GaugeMetricFamily(
                "fulfillment_circuit_state",
                "Each vendor's circuit breaker: 1 for its current state.",
                labels=["vendor", "state"],
            )
            for vendor, breaker in sorted(self.breakers.items()):
                value = self.redis.get(balance_key(ns, vendor))
                if value is not None:
                    balance.add_metric([vendor], float(value))
                state = breaker.state()["state"]
                for name in ("closed", "half_open", "open"):
                    circuit.add_metric([vendor, name], 1.0 if state == name else 0.0)
            yield balance
            yield circuit
            up.add_metric(["redis"], 1)
        except Exception:  # noqa: BLE001 - a scrape must answer even when Redis does not
            up.add_metric(["redis"], 0)
        try:
            counts = self.store.status_counts_by_network()
            oldest = self.store.oldest_pending_by_network()
            orders = GaugeMetricFamily(
                "fulfillment_orders",
                "Orders per network and fulfillment status.",
                labels=["network", "status"],
            )
            networks = sorted({network for network, _ in counts} | set(oldest))
            for network in networks:
                for status in STATUSES_SHOWN:
                    orders.add_metric([network, status], counts.get((network, status), 0))
            yield orders
            pending = GaugeMetricFamily(
                "fulfillment_oldest_pending_seconds",
                "Per served network, the age of its oldest order not yet attempted.",
                labels=["network"],
            )
            for network, age in oldest.items():
                pending.add_metric([network], age)
            yield pending
            unknown = GaugeMetricFamily(
                "fulfillment_outcome_unknown_orders",
                "Orders whose vendor outcome stayed unknown, held for a person to decide "
                "(processing, never failed).",
            )
            unknown.add_metric([], AdminStore(self.store).outcome_unknown_count())
            yield unknown
            yield from _pause_gauges(PauseStore(self.store).list())
            yield from _outbox_gauges(self.store)
            up.add_metric(["postgresql"], 1)
        except StoreError:
            up.add_metric(["postgresql"], 0)
        yield up


#: every status of each outbox, shown even at 0 (an alert on one must see it go back to 0)
SMS_STATUSES = ("queued", "sent", "delivered", "failed", "undeliverable", "skipped")
EVENT_STATUSES = ("pending", "delivered", "failed")


def _outbox_gauges(store: Store) -> Iterator[Any]:
    """fulfillment_customer_sms{kind,status} and fulfillment_platform_events{type,status}:
    the outboxes' rows, from PostgreSQL."""
    from prometheus_client.core import GaugeMetricFamily

    from db.outbox_store import OutboxStore

    counts = OutboxStore(store).counts()
    sms = GaugeMetricFamily(
        "fulfillment_customer_sms",
        "Customer SMS rows by kind (delivered, failed: the outcome told) and status.",
        labels=["kind", "status"],
    )
    for kind in ("delivered", "failed"):
        for status in SMS_STATUSES:
            sms.add_metric([kind, status], counts.get(("sms", kind, status), 0))
    events = GaugeMetricFamily(
        "fulfillment_platform_events",
        "Outcome events for the platform by type and status (failed: given up, an admin resends).",
        labels=["type", "status"],
    )
    for event_type in ("order.fulfilled", "order.failed", "order.resolved"):
        for status in EVENT_STATUSES:
            events.add_metric([event_type, status], counts.get(("event", event_type, status), 0))
    yield sms
    yield events


def _pause_gauges(pauses: list[PauseRow]) -> Iterator[Any]:
    """fulfillment_paused{scope} (1 per paused scope; scope="*" is always there, 0 when the
    whole fleet is not paused) and fulfillment_pause_age_seconds{scope}, one per pause."""
    from prometheus_client.core import GaugeMetricFamily

    from fulfillment.domain.pause import FLEET

    paused = GaugeMetricFamily(
        "fulfillment_paused",
        'Runtime pauses in force: 1 per paused scope ("*" the whole fleet, or a network).',
        labels=["scope"],
    )
    age = GaugeMetricFamily(
        "fulfillment_pause_age_seconds",
        "Seconds since each runtime pause in force was set.",
        labels=["scope"],
    )
    if not any(p.scope == FLEET for p in pauses):
        paused.add_metric([FLEET], 0.0)
    for pause in pauses:
        paused.add_metric([pause.scope], 1.0)
        age.add_metric([pause.scope], pause.age_s)
    yield paused
    yield age
