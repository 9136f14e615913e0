"""`fulfillment demo`: the whole pipeline end to end on one machine, in about a minute.

Embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set; a fresh database
`fulfillment_demo` on that server; the fleet of the Procfile's process types (simulator with
faults on both vendors it speaks, and on the SMS provider and the platform's event receiver it
also plays; worker processes, dead-letter consumer, reconciler, notifier, web),
started by fulfillment.dev.launcher in the state directory, so it runs from an installed wheel
too; a few hundred orders of all four networks (AT-iShare through the AT-iShare API; MTN,
Telecel and AT-BigTime through the aggregator, whose signed callbacks reach the web process),
some with invalid numbers or ported ones; progress while it runs; a summary at the end (with
the customers' SMS and the platform's events of every final outcome). Exit status 0 only when
every order reached a terminal state and each vendor delivered each of its orders at most once,
and none of the other's, and every SMS and event settled, none sent twice (no duplicate or blind
resend at the SMS provider, no conflicting body or out-of-order event at the platform).
Embedded servers keep running afterwards:
`fulfillment dev stop` stops them.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import secrets
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from db.databases import create_database
from db.migrate import migrate
from db.store import Store, open_pool
from fulfillment.dev.embedded import free_port, resolve_urls
from fulfillment.dev.launcher import (
    DEADLETTER,
    NOTIFY,
    RECONCILER,
    SIM,
    WEB,
    WORKER,
    Proc,
    stop_all,
)
from fulfillment.dev.simulator import platform as sim_platform
from fulfillment.dev.simulator import sms as sim_sms
from fulfillment.dev.simulator.faults import VENDOR_REJECTS_SUFFIX
from fulfillment.dev.simulator.server import (
    DEFAULT_AGGREGATOR_TOKEN,
    DEFAULT_PLATFORM_SECRET,
    DEFAULT_SMS_CLIENT_ID,
    DEFAULT_SMS_CLIENT_SECRET,
)
from fulfillment.domain.errors import InvalidOrder
from fulfillment.domain.networks import DISPLAY_NAMES
from fulfillment.domain.package import Catalogue
from fulfillment.messaging.publish import build_broker
from fulfillment.runtime.settings import Settings
from fulfillment.telemetry import logs
from producers.publish import publish_fulfillment

DEMO_DB = "fulfillment_demo"
SIM_KEY, SIM_SECRET = "demo-key", "demo-secret-not-for-production"
# Refused at publish time: not Ghanaian mobile numbers. The order is committed anyway, so the
# reconciler picks it up and the worker dead-letters it with the reason.
START_TIMEOUT_S = 60.0  # every process of the fleet ready: cold interpreters, a loaded machine
MALFORMED_NUMBERS = ("12345", "+4915112345678", "0302123456", "not-a-number")
NETWORKS = "at-ishare,mtn,telecel,at-bigtime"
#: the demo's mix of networks, and the prefixes of each one's numbers (DESIGN.md)
MIX = {"at-ishare": 0.4, "mtn": 0.3, "telecel": 0.2, "at-bigtime": 0.1}
PREFIXES = {
    "at-ishare": ("026", "027", "056", "057"),
    "at-bigtime": ("026", "027", "056", "057"),
    "mtn": ("024", "054", "055", "059"),
    "telecel": ("020", "050"),
}
AGGREGATOR_SECRET = "demo-aggregator-callback-secret"  # noqa: S105 - development only
SMS_SENDER_ID = "DataShop"
#: seconds the demo waits, once every order is final, for the last SMS and events to settle
OUTBOX_SETTLE_S = 60.0
#: customer_sms statuses still to move (to send, or sent with its report not read yet)
SMS_OPEN = ("queued", "sent")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    # The demo prints progress; its own log lines are only warnings (the fleet logs to a file).
    logs.configure("console", logging.WARNING, force=True)
    settings = Settings()
    if not (settings.database_url and settings.redis_url):
        print(
            "!"
            * 78
            + "\n!! DEVELOPMENT ONLY: DATABASE_URL / REDIS_URL unset -> embedded PostgreSQL"
            " and Redis\n" + "!" * 78
        )
    server_db_url, redis_url = resolve_urls(
        settings.database_url, settings.redis_url, settings.fulfillment_dev_dir
    )
    database_url = create_database(server_db_url, DEMO_DB, replace=True)
    migrate(database_url)
    namespace = f"demo-{uuid.uuid4().hex[:8]}"
    sim_port, web_port = free_port(), free_port()
    dev_dir = settings.fulfillment_dev_dir.expanduser().resolve()
    env = _fleet_env(args, database_url, redis_url, namespace, sim_port, web_port)
    # The demo makes the admin tokens (the web process refuses to start without them).
    env.update(
        {
            "WEB_PORT": str(web_port),
            "FULFILLMENT_DEV_DIR": str(dev_dir),  # the fleet runs elsewhere: absolute
            "FULFILLMENT_DEMO": "1",
            "ADMIN_TOKEN": env.get("ADMIN_TOKEN") or secrets.token_urlsafe(18),
            "API_TOKEN": env.get("API_TOKEN") or secrets.token_urlsafe(18),
        }
    )
    dashboard = f"http://127.0.0.1:{web_port}/dashboard/admin/fulfillment"
    log_dir = dev_dir / "demo-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    print(f"\n== fulfillment demo: {args.orders} orders of {NETWORKS.replace(',', ', ')} ==")
    print(f"   database  {logs.url_without_password(database_url)}")
    print(f"   redis     {logs.url_without_password(redis_url)} (namespace {namespace})")
    print(
        f"   fleet logs {log_dir}  (sim, worker x{args.processes}, deadletter, reconciler, "
        "notify, web)"
    )
    print(f"   dashboard {dashboard}")
    print(f"             log in with any name and the admin token {env['ADMIN_TOKEN']}\n")
    fleet = _fleet(env, web_port, log_dir)
    store = Store(open_pool(database_url, min_size=1, max_size=4))
    sim_url = f"http://127.0.0.1:{sim_port}"
    try:
        _start_fleet(fleet)
        started = time.monotonic()
        refused = _publish_orders(store, redis_url, namespace, args)
        converged = _watch(store, started, args.timeout, fleet)
        settled = converged and _watch_outboxes(store, started, fleet)
        ok = _summary(store, sim_url, refused, converged, time.monotonic() - started)
        ok = _outbox_summary(store, sim_url, settled) and ok
        _metrics_scrape(
            [
                f"http://127.0.0.1:{_named(fleet, WORKER.name).env['METRICS_PORT']}/metrics",
                f"http://127.0.0.1:{web_port}/metrics",
            ],  # admin process: the live collector
            log_dir / "demo-metrics.txt",
        )
        if args.serve or (args.serve is None and sys.stdin.isatty()):
            _serve(store, sim_url, dashboard, env["ADMIN_TOKEN"], fleet)
    finally:
        stop_all(reversed(fleet))
        store.close()
        _stop_hint(settings, dev_dir)
    print(f"\nfleet logs: {log_dir}")
    print(f"inspect:    DATABASE_URL='{database_url}' fulfillment status <order id>")
    return 0 if ok else 1


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fulfillment demo", description=__doc__)
    p.add_argument("--orders", type=int, default=300)
    p.add_argument("--processes", type=int, default=2, help="worker processes")
    p.add_argument("--threads", type=int, default=8, help="threads per worker process")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for the end")
    p.add_argument("--error-rate", type=float, default=0.12, help="simulator 5xx rate")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--serve",
        dest="serve",
        action="store_true",
        default=None,
        help="keep the fleet and dashboard running after the summary (default when "
        "run from a terminal)",
    )
    p.add_argument(
        "--no-serve", dest="serve", action="store_false", help="stop everything after the summary"
    )
    return p.parse_args(argv)


def _stop_hint(settings: Settings, dev_dir: Path) -> None:
    """How to stop the embedded servers, which outlive the demo (the next one reuses them)."""
    embedded = [
        product
        for product, url in (("PostgreSQL", settings.database_url), ("Redis", settings.redis_url))
        if not url
    ]
    if not embedded:
        return
    if os.environ.get("FULFILLMENT_DEV_DIR"):
        command = f"FULFILLMENT_DEV_DIR='{dev_dir}' fulfillment dev stop"
    else:
        command = "fulfillment dev stop (make stop in the checkout)"
    print(
        f"\nembedded {' and '.join(embedded)} keep running under {dev_dir} for the next "
        f"demo; stop them: {command}"
    )


def _serve(store: Store, sim_url: str, dashboard: str, admin_token: str, fleet: list[Proc]) -> None:
    """Leave the fleet up for a look around: the vendor is healthy from now on, so a
    dead-lettered order requeued from the dashboard goes through."""
    healthy = {
        "error_rate": 0,
        "timeout_rate": 0,
        "rate_limit_rate": 0,
        "insufficient_balance_rate": 0,
        "drop_after_delivery_rate": 0,
        "pending_rate": 0,
        "pending_failed_rate": 0,
        "pending_refunded_rate": 0,
        "invalid_phone_suffix": None,
    }
    for side in ("", "/aggregator"):
        httpx.post(f"{sim_url}{side}/_sim/faults", timeout=5, json=healthy)
    quiet = {"error_rate": 0, "timeout_rate": 0, "lost_rate": 0}
    for party, changes in ((sim_sms.MOUNT, {**quiet, "rate_limit_rate": 0}),
                           (sim_platform.MOUNT, quiet)):  # fmt: skip
        httpx.post(f"{sim_url}{party}/_sim/faults", timeout=5, json=changes)
    print(
        "\n== the fleet keeps running; both simulated vendors, the SMS provider and the "
        "platform now have no faults =="
    )
    print(f"dashboard: {dashboard}")
    print(f"admin token: {admin_token}")
    dead = store.dead_lettered_orders(limit=5)
    if dead:
        print("dead-lettered demo orders to look up by phone number (demo data, shown in full):")
        for row in dead:
            print(f"   {row['phone_number']:<18} {row['dead_letter_reason']}")
    print("press Ctrl-C to stop")
    try:
        while not _dead(fleet):
            time.sleep(1)
    except KeyboardInterrupt:
        print()


def _fleet_env(
    args: argparse.Namespace,
    database_url: str,
    redis_url: str,
    namespace: str,
    sim_port: int,
    web_port: int,
) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PORT", None)  # honcho's; the web process gets the demo's own
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "REDIS_NAMESPACE": namespace,
            "AT_ISHARE_API_URL": f"http://127.0.0.1:{sim_port}/v1",
            "AT_ISHARE_API_KEY": SIM_KEY,
            "AT_ISHARE_API_SECRET": SIM_SECRET,
            "SIM_PORT": str(sim_port),
            "WORKER_PROCESSES": str(args.processes),
            "WORKER_THREADS": str(args.threads),
            # Short on purpose, so the demo ends in about a minute (production: 300,900,3600).
            "RETRY_DELAYS": "2,4,8",
            "STATUS_CHECK_DELAY_S": "1",
            "CLAIM_TTL_S": "15",
            "RECONCILE_GRACE_S": "5",
            "RECONCILE_INTERVAL_S": "2",
            "VENDOR_READ_TIMEOUT_S": "1",
            "VENDOR_CONNECT_TIMEOUT_S": "1",
            "LOG_FORMAT": "json",
            "FULFILLMENT_ENABLED": "true",
            # The simulator's faults: transient errors, lost answers, pending answers, 429s.
            "SIM_ERROR_RATE": str(args.error_rate),
            "SIM_TIMEOUT_RATE": "0.03",
            "SIM_TIMEOUT_SECONDS": "2",
            "SIM_RATE_LIMIT_RATE": "0.03",
            "SIM_INSUFFICIENT_BALANCE_RATE": "0.005",
            # Fleet-wide pauses (402, an open circuit) shortened like the retry table.
            "BALANCE_PAUSE_S": "3",
            "BREAKER_OPEN_S": "2",
            "BREAKER_MAX_OPEN_S": "8",
            "SIM_DROP_AFTER_DELIVERY_RATE": "0.05",
            "SIM_PENDING_RATE": "0.05",
            "SIM_PENDING_SECONDS": "1",
            "SIM_LATENCY_MS": "20",
            "SIM_LATENCY_JITTER_MS": "10",
            "SIM_INVALID_PHONE_SUFFIX": VENDOR_REJECTS_SUFFIX,
            # Every network; the aggregator in the same simulator process, with faults of its
            # own (and orders it fails or refunds after accepting them), calling back the web
            # process with signed callbacks.
            "NETWORKS_ENABLED": NETWORKS,
            "AGGREGATOR_API_URL": f"http://127.0.0.1:{sim_port}/aggregator/v1",
            "AGGREGATOR_API_TOKEN": DEFAULT_AGGREGATOR_TOKEN,
            "AGGREGATOR_WEBHOOK_SECRET": AGGREGATOR_SECRET,
            "SIM_AGGREGATOR_WEBHOOK_URL": f"http://127.0.0.1:{web_port}/webhooks/aggregator",
            "SIM_AGGREGATOR_ERROR_RATE": str(args.error_rate),
            "SIM_AGGREGATOR_TIMEOUT_RATE": "0.03",
            "SIM_AGGREGATOR_TIMEOUT_SECONDS": "2",
            "SIM_AGGREGATOR_RATE_LIMIT_RATE": "0.03",
            "SIM_AGGREGATOR_DROP_AFTER_DELIVERY_RATE": "0.05",
            "SIM_AGGREGATOR_PENDING_RATE": "0.2",
            "SIM_AGGREGATOR_PENDING_SECONDS": "1",
            "SIM_AGGREGATOR_PENDING_FAILED_RATE": "0.04",
            "SIM_AGGREGATOR_PENDING_REFUNDED_RATE": "0.03",
            "SIM_AGGREGATOR_LATENCY_MS": "40",
            "SIM_AGGREGATOR_LATENCY_JITTER_MS": "20",
            "SIM_AGGREGATOR_INVALID_PHONE_SUFFIX": VENDOR_REJECTS_SUFFIX,
            # The notify: process's parties, in the same simulator process: the SMS provider
            # and the platform's event receiver, each with small faults of its own (errors,
            # answers lost after the SMS went out or the event was recorded, answers later than
            # the notifier waits, 429s), and the notifier's waits shortened like the workers'.
            "SMS_API_URL": f"http://127.0.0.1:{sim_port}{sim_sms.MOUNT}/v1",
            "SMS_CLIENT_ID": DEFAULT_SMS_CLIENT_ID,
            "SMS_CLIENT_SECRET": DEFAULT_SMS_CLIENT_SECRET,
            "SMS_SENDER_ID": SMS_SENDER_ID,
            "SMS_ENABLED": "true",
            "SMS_TIMEOUT_S": "1",
            "PLATFORM_WEBHOOK_URL": f"http://127.0.0.1:{sim_port}{sim_platform.EVENTS_PATH}",
            "PLATFORM_WEBHOOK_SECRET": DEFAULT_PLATFORM_SECRET,
            "PLATFORM_WEBHOOK_TIMEOUT_S": "1",
            "NOTIFY_RETRY_DELAYS": "1,2,4",
            "SMS_REPORT_DELAYS": "1,2",
            "OUTBOX_GRACE_S": "5",
            "SIM_SMS_ERROR_RATE": "0.05",
            "SIM_SMS_LOST_RATE": "0.03",
            "SIM_SMS_TIMEOUT_RATE": "0.03",
            "SIM_SMS_TIMEOUT_SECONDS": "2",
            "SIM_SMS_RATE_LIMIT_RATE": "0.02",
            "SIM_SMS_DELIVERY_SECONDS": "1",
            "SIM_PLATFORM_ERROR_RATE": "0.05",
            "SIM_PLATFORM_LOST_RATE": "0.03",
            "SIM_PLATFORM_TIMEOUT_RATE": "0.03",
            "SIM_PLATFORM_TIMEOUT_SECONDS": "2",
        }
    )
    # the simulator reads its parties' credentials from the same variables as the fleet
    for name in ("SIM_SMS_CLIENT_ID", "SIM_SMS_CLIENT_SECRET", "SIM_PLATFORM_SECRET"):
        env.pop(name, None)
    if args.seed is not None:
        env["SIM_SEED"] = str(args.seed)
    return env


def _fleet(env: dict[str, str], web_port: int, log_dir: Path) -> list[Proc]:
    """The demo's processes, in the order they start."""
    return [
        SIM.proc(env, log_dir),
        WORKER.proc(env, log_dir),
        DEADLETTER.proc(env, log_dir),
        RECONCILER.proc(env, log_dir),
        NOTIFY.proc(env, log_dir),
        WEB.proc({**env, "PORT": str(web_port)}, log_dir),
    ]


def _start_fleet(fleet: list[Proc]) -> None:
    """Start every process; return once each says it is ready."""
    for proc in fleet:
        proc.start()
    try:
        for proc in fleet:
            proc.wait_ready(START_TIMEOUT_S)
    except RuntimeError as exc:
        raise SystemExit(f"the fleet did not start: {exc}") from exc


def _named(fleet: list[Proc], name: str) -> Proc:
    return next(proc for proc in fleet if proc.name == name)


def _dead(fleet: list[Proc]) -> list[str]:
    return [proc.name for proc in fleet if not proc.alive]


def _random_mobile(rng: random.Random, network: str, *, rejected: bool = False) -> str:
    # Numbers of the order's network, and now and then a ported one (logged, never refused).
    prefix = rng.choice(PREFIXES[network if rng.random() > 0.05 else rng.choice(list(PREFIXES))])
    tail = f"{rng.randrange(0, 1000):03d}" + (
        VENDOR_REJECTS_SUFFIX if rejected else f"{rng.randrange(1, 10000):04d}"
    )
    if not rejected and tail.endswith(VENDOR_REJECTS_SUFFIX):
        tail = tail[:-1] + "1"
    # People type numbers in many shapes; the producer normalises them.
    number = prefix + tail
    return rng.choice(
        [
            number,
            "+233" + number[1:],
            "233" + number[1:],
            f"{number[:3]} {number[3:6]} {number[6:]}",
        ]
    )


def _publish_orders(
    store: Store, redis_url: str, namespace: str, args: argparse.Namespace
) -> Counter[str]:
    rng = random.Random(args.seed)
    broker = build_broker(redis_url, namespace)
    catalogue = Catalogue.default()
    refused: Counter[str] = Counter()
    for i in range(args.orders):
        order_id = str(uuid.uuid4())
        network = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        roll = rng.random()
        if roll < 0.02:
            phone = MALFORMED_NUMBERS[i % len(MALFORMED_NUMBERS)]
        else:
            phone = _random_mobile(rng, network, rejected=roll < 0.05)
        label = rng.choice(catalogue.sizes(network))  # '500MB', '1.5GB', ...
        size: float | None = None
        package: str | None = f"{DISPLAY_NAMES[network]} {label}"
        if label.endswith("GB") and rng.random() < 0.5:
            size, package = float(label[:-2]), None
        store.insert_order(
            order_id, phone_number=phone, network=network, size_gb=size, package_name=package
        )  # the purchase path commits the order...
        try:  # ...then publishes it
            publish_fulfillment(
                order_id,
                phone_number=phone,
                network=network,
                size_gb=size,
                package_name=package,
                broker=broker,
                enabled=True,
                catalogue=catalogue,
            )
        except InvalidOrder as exc:
            refused[exc.code] += 1
    broker.close()
    print(
        f"published {args.orders - sum(refused.values())} orders; refused at publish "
        f"(committed, left to the reconciler): {dict(refused) or 0}"
    )
    return refused


def _watch(store: Store, started: float, timeout: float, fleet: list[Proc]) -> bool:
    while True:
        counts = store.status_counts()
        unfinished = store.unfinished_count()
        elapsed = time.monotonic() - started
        print(
            f"  t={elapsed:5.1f}s  "
            + "  ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            + f"  | unfinished={unfinished}",
            flush=True,
        )
        if unfinished == 0:
            return True
        if dead := _dead(fleet):
            print(f"  the fleet lost {', '.join(dead)}: see its log", flush=True)
            return False
        if elapsed > timeout:
            return False
        time.sleep(2)


def _outbox_open(store: Store) -> tuple[int, int]:
    """(SMS rows still to send or to read the report of, events not yet acknowledged)."""
    with store.pool.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM customer_sms WHERE status = ANY(%(open)s)) AS sms,"
            " (SELECT count(*) FROM platform_events WHERE status = 'pending') AS events",
            {"open": list(SMS_OPEN)},
        ).fetchone()
    assert row is not None
    return int(row["sms"]), int(row["events"])


def _watch_outboxes(store: Store, started: float, fleet: list[Proc]) -> bool:
    """Once every order is final: wait for the customers' SMS and the platform's events."""
    deadline = time.monotonic() + OUTBOX_SETTLE_S
    while True:
        sms, events = _outbox_open(store)
        elapsed = time.monotonic() - started
        print(
            f"  t={elapsed:5.1f}s  outboxes: SMS to send or report {sms}, events to deliver "
            f"{events}",
            flush=True,
        )
        if sms == 0 and events == 0:
            return True
        if dead := _dead(fleet):
            print(f"  the fleet lost {', '.join(dead)}: see its log", flush=True)
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(2)


def _outbox_summary(store: Store, sim_url: str, settled: bool) -> bool:
    """The customers' SMS and the platform's events of the run, and the simulator's witness:
    none sent twice, none resent blind, none changed or out of order."""
    with store.pool.connection() as conn:
        sms = {
            r["status"]: int(r["n"])
            for r in conn.execute(
                "SELECT status, count(*) AS n FROM customer_sms GROUP BY status"
            ).fetchall()
        }
        provider = conn.execute(
            "SELECT count(*) AS n FROM customer_sms WHERE provider_message_id IS NOT NULL"
        ).fetchone()
        skipped = conn.execute(
            "SELECT coalesce(skip_reason, '?') AS reason, count(*) AS n FROM customer_sms"
            " WHERE status = 'skipped' GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        events = conn.execute(
            "SELECT type, status, count(*) AS n FROM platform_events GROUP BY type, status"
            " ORDER BY type, status"
        ).fetchall()
        delivered_ids = {
            str(r["event_id"])
            for r in conn.execute(
                "SELECT event_id FROM platform_events WHERE status = 'delivered'"
            ).fetchall()
        }
        # one text of each kind first (delivered, failed with a refund, failed without)
        samples = conn.execute(
            "SELECT kind, status, content FROM ("
            " SELECT DISTINCT ON (kind, refund_advised) id, kind, status, content"
            " FROM customer_sms WHERE content IS NOT NULL ORDER BY kind, refund_advised, id"
            ") first_of_kind UNION ALL ("
            " SELECT kind, status, content FROM customer_sms WHERE content IS NOT NULL"
            " ORDER BY id LIMIT 3) LIMIT 6"
        ).fetchall()
    sent = int(provider["n"]) if provider else 0
    print("\ncustomer SMS (one per final outcome; outcome unknown: none):")
    print(
        f"   {sum(sms.values())} rows: sent to the provider {sent}; delivered "
        f"{sms.get('delivered', 0)}, failed {sms.get('failed', 0)}, undeliverable "
        f"{sms.get('undeliverable', 0)}, skipped {sms.get('skipped', 0)}"
        + (
            f", still open {sum(sms.get(s, 0) for s in SMS_OPEN)}"
            if any(sms.get(s) for s in SMS_OPEN)
            else ""
        )
    )
    for row in skipped[:3]:
        print(f"   skipped {int(row['n']):4d}  {str(row['reason'])[:80]}")
    by_type: dict[str, dict[str, int]] = {}
    for row in events:
        by_type.setdefault(row["type"], {})[row["status"]] = int(row["n"])
    print("platform events by type: " + (", ".join(
        f"{t} " + " ".join(f"{s}={n}" for s, n in sorted(c.items()))
        for t, c in sorted(by_type.items())
    ) or "none"))  # fmt: skip
    seen: set[str] = set()
    shown = 0
    print("sample SMS texts (masked, as stored):")
    for row in samples:
        if row["content"] in seen or shown == 3:
            continue
        seen.add(row["content"])
        shown += 1
        print(f"   [{row['kind']}, {row['status']}] {row['content']}")
    base = sim_url.removesuffix("/v1")
    sms_ledger = httpx.get(f"{base}{sim_sms.MOUNT}/_sim/ledger", timeout=10).json()
    platform_ledger = httpx.get(f"{base}{sim_platform.MOUNT}/_sim/ledger", timeout=10).json()
    sms_totals, platform_totals = sms_ledger["totals"], platform_ledger["totals"]
    forbidden = {
        "duplicate sends": len(sms_totals.get("duplicate_sends", [])),
        "blind resends": len(sms_totals.get("blind_resends", [])),
        "conflicting bodies": len(platform_totals.get("conflicting_bodies", [])),
        "out-of-order events": len(platform_totals.get("out_of_order", [])),
        "bad signatures": int(platform_totals.get("bad_signatures", 0)),
    }
    received = set(platform_ledger.get("events", {}))
    missing, strangers = delivered_ids - received, received - delivered_ids
    print(
        f"SMS provider: {sms_totals.get('sends', 0)} sends, {sms_totals.get('lookups', 0)} "
        f"lookups by reference; faults injected {sms_totals.get('faults', {})}"
    )
    print(
        f"platform: {platform_totals.get('received', 0)} POSTs of "
        f"{platform_totals.get('distinct', 0)} events ({platform_totals.get('redeliveries', 0)} "
        f"redeliveries); faults injected {platform_totals.get('faults', {})}"
    )
    print(
        "   must be 0: "
        + ", ".join(f"{what} {n}" for what, n in forbidden.items())
        + f", delivered but not at the platform {len(missing)}, at the platform but not "
        f"delivered {len(strangers)}"
    )
    ok = settled and not any(forbidden.values()) and not missing and not strangers
    if not ok:
        bad = [f"{what} {n}" for what, n in forbidden.items() if n]
        if missing or strangers:
            bad.append(f"events delivered != events at the platform ({len(missing)}, "
                       f"{len(strangers)})")  # fmt: skip
        if not settled:
            bad.append("SMS or events left unsettled")
        print("!" * 78)
        print(f"!! OUTBOX INVARIANTS BROKEN: {'; '.join(bad)}")
        print("!" * 78)
    state = "every SMS and event settled" if settled else "SMS or events left unsettled"
    print(f"\nRESULT (SMS and events): {'OK' if ok else 'FAILED'} ({state})")
    return ok


def _summary(
    store: Store, sim_url: str, refused: Counter[str], converged: bool, elapsed: float
) -> bool:
    counts = store.status_counts()
    print(f"\n== summary after {elapsed:.1f}s ==")
    print("orders by status:   " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    dist: dict[str, dict[int, int]] = {}
    for row in store.attempts_distribution():
        dist.setdefault(row["status"], {})[row["attempts"]] = int(row["n"])
    print("purchase attempts per order:")
    for status, by_attempts in sorted(dist.items()):
        print(
            f"   {status:<10} "
            + ", ".join(f"{a} attempt(s): {n}" for a, n in sorted(by_attempts.items()))
        )
    dead = store.dead_lettered_orders(limit=10_000)
    reasons = Counter(_reason_kind(r["dead_letter_reason"]) for r in dead)
    print(f"dead-lettered orders: {len(dead)}")
    for reason, n in reasons.most_common():
        print(f"   {n:4d}  {reason}")
    for row in dead[:5]:
        print(f"   e.g. {row['id']}  {row['dead_letter_reason']}")
    notifications = store.notifications(limit=10_000)
    kinds = Counter(n["kind"] for n in notifications)
    print(f"admin notifications: {dict(kinds)}")
    by_network = store.status_counts_by_network()
    for net in MIX:
        mine = {s: n for (nn, s), n in sorted(by_network.items()) if nn == net}
        print(f"   {DISPLAY_NAMES[net]:<11} " + ", ".join(f"{s}={n}" for s, n in mine.items()))
    ledgers = {
        "AT-iShare": httpx.get(f"{sim_url}/_sim/ledger", timeout=10).json(),
        "aggregator": httpx.get(f"{sim_url}/aggregator/_sim/ledger", timeout=10).json(),
    }
    ok = converged and _check_ledgers(store, ledgers)
    state = "every order reached a terminal state" if converged else "orders left unfinished"
    print(f"\nRESULT: {'OK' if ok else 'FAILED'} ({state})")
    return ok


_SHOWN = (
    "fulfillment_outcomes_total",
    "fulfillment_attempts_total",
    "fulfillment_retries_scheduled_total",
    "fulfillment_pause_waits_total",
    "fulfillment_dead_letters_total",
    "fulfillment_time_to_success_seconds_count",
    "fulfillment_orders",
    "fulfillment_queue_depth",
    "fulfillment_circuit_state",
    "fulfillment_workers_alive",
    "dramatiq_messages_total",
)


def _metrics_scrape(urls: list[str], out: Path) -> None:
    """Print the headline series of the fleet's metrics; keep the whole scrape in a file."""
    texts = []
    for url in urls:
        try:
            texts.append(f"# {url}\n" + httpx.get(url, timeout=5).text)
        except httpx.HTTPError as exc:
            texts.append(f"# {url}: {type(exc).__name__}")
    out.write_text("\n".join(texts), encoding="utf-8")
    print(f"\nmetrics after the run (all of it: {out}):")
    for text in texts:
        for line in text.splitlines():
            if line.startswith(_SHOWN) and not line.endswith(" 0.0"):
                print(f"   {line}")


def _reason_kind(reason: str | None) -> str:
    text = reason or "unknown"
    return text.split(";")[0].split(": +")[0][:90]


def _check_ledgers(store: Store, ledgers: dict[str, dict[str, Any]]) -> bool:
    """Each order delivered at most once, at the vendor of its network and never the other;
    a success always delivered, a delivery always a success."""
    with store.pool.connection() as conn:
        rows = conn.execute(
            "SELECT id::text AS id, network, fulfillment_status AS s FROM orders"
        ).fetchall()
    ok = True
    for vendor, ledger in ledgers.items():
        refs: dict[str, Any] = ledger.get("references", {})
        deliveries = {ref: int(info.get("deliveries", 0)) for ref, info in refs.items()}
        mine = [r for r in rows if (r["network"] == "at-ishare") == (vendor == "AT-iShare")]
        over = [ref for ref, n in deliveries.items() if n > 1]
        wrong = ({r["id"] for r in rows} - {r["id"] for r in mine}) & set(deliveries)
        success_missing = [
            r["id"] for r in mine if r["s"] == "success" and deliveries.get(r["id"]) != 1
        ]
        delivered_not_success = [
            r["id"] for r in mine if r["s"] != "success" and deliveries.get(r["id"], 0) > 0
        ]
        print(
            f"{vendor}: {sum(deliveries.values())} deliveries for {len(mine)} orders; "
            f"max per order {max(deliveries.values(), default=0)}; "
            f"faults injected {ledger.get('totals', {}).get('faults', {})}"
        )
        print(
            f"   delivered more than once: {len(over)}; success without a delivery: "
            f"{len(success_missing)}; delivered but not success: {len(delivered_not_success)}; "
            f"another network's order: {len(wrong)}"
        )
        ok = ok and not (over or wrong or success_missing or delivered_not_success)
    return ok
