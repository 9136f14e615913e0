"""Vendor isolation (bulkheads): AT-iShare's deliveries while the aggregator is slow or down.

One group (P processes x T threads, as the Procfile runs them) serves every network:
AT-iShare through the AT-iShare API, MTN, Telecel and AT-BigTime through the aggregator,
both at the simulator. Each vendor may hold only its share of a process's threads
(AT_ISHARE_THREAD_SHARE, AGGREGATOR_THREAD_SHARE; fulfillment/fleet/bulkhead.py); an order
whose vendor's share is taken is handed back with a delay, and no thread waits for it.

First the group's capacity for AT-iShare orders at --latency-ms (200) is measured in the same
run: a burst of --capacity-orders drained by a group of the same shape that serves AT-iShare
alone (all its threads, no bulkhead). Then, in the group of every network, AT-iShare orders
are published open loop at --load (0.5) of that capacity for --duration seconds, in four
phases of the aggregator:

- alone: no aggregator orders (the baseline);
- aggregator healthy: it answers in --latency-ms too, and its orders are offered beside;
- aggregator slow: it answers in --slow-ms (10,000);
- aggregator down: it answers 503 (the simulator's outage, POST /aggregator/_sim/down).

The aggregator's orders (MTN, Telecel and AT-BigTime in turn) are offered at
--aggregator-ratio of the AT-iShare rate: by default the ratio of the two thread shares
(0.25 / 0.75), so that each vendor is offered the same fraction of its share. Its read
timeout is set above --slow-ms (AGGREGATOR_READ_TIMEOUT_S = slow + 5 s unless --env says
otherwise), so that a slow answer arrives and holds its thread for the whole call: the
bulkhead, not the circuit breaker, is what protects the other threads.

Orders are inserted beforehand, as the purchase path commits before it publishes; each
message's send time is kept, and latency is the order's fulfilled_at minus it (this host's
clock). Throughput is the AT-iShare orders fulfilled from 1 s after the first publish to the
end of the publishing, per second, as a share of the offered rate. The group's metrics are
read meanwhile: the most threads seen in aggregator calls at once (all processes), and the
orders each vendor's full share handed back (fulfillment_vendor_busy_total). Targets (the
issue): with the aggregator slow or down, AT-iShare's throughput >= 90 % of the offered rate
and its p95 <= 1.5 x the alone p95.

    .venv/bin/python -m bench.isolation [--duration 25] [--processes 2] [--threads 8]
        [--latency-ms 200] [--load 0.5] [--slow-ms 10000] [--aggregator-ratio R]
        [--capacity-orders 1000] [--env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.common import (
    Sandbox,
    Workers,
    drain_orders,
    install_sigterm,
    machine,
    percentile,
    pipeline_workers,
    sandbox,
    show,
    wait_until,
)
from fulfillment.dev.simulator.server import DEFAULT_AGGREGATOR_TOKEN
from fulfillment.domain.constants import FULFILL_ACTOR, FULFILLMENT_QUEUE
from fulfillment.fleet.bulkhead import thread_limit
from fulfillment.runtime.settings import Settings

TICK_S = 0.005
SAMPLE_S = 0.25
#: throughput is counted from this long after the first publish (the first orders' latency)
RAMP_S = 1.0
THROUGHPUT_TARGET = 0.90
P95_TARGET = 1.5
AGGREGATOR = "aggregator"
AT_ISHARE = "at-ishare"
#: the aggregator's networks, each with a size it sells and a number of its own prefix
AGGREGATOR_ORDERS = (
    ("mtn", "+233241234567", 1),
    ("telecel", "+233201234567", 1),
    ("at-bigtime", "+233271234567", 15),
)
ALL_NETWORKS = "at-ishare,mtn,telecel,at-bigtime"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--latency-ms", type=float, default=200.0, help="AT-iShare's (and healthy)")
    p.add_argument("--load", type=float, default=0.5, help="AT-iShare's, fraction of capacity")
    p.add_argument("--duration", type=float, default=25.0, help="seconds of publishing a phase")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--slow-ms", type=float, default=10000.0, help="the slow aggregator's answers")
    p.add_argument(
        "--aggregator-ratio",
        type=float,
        help="aggregator orders per AT-iShare order (default: its thread share / AT-iShare's)",
    )
    p.add_argument("--capacity-orders", type=int, default=1000)
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="for the group of every network (e.g. AGGREGATOR_THREAD_SHARE=0.5)",
    )
    p.add_argument("--timeout", type=float, default=300, help="seconds allowed per wait")
    args = p.parse_args()
    install_sigterm()
    started = time.monotonic()
    extra = dict(kv.split("=", 1) for kv in args.env)
    shares = {vendor: _share(vendor, extra) for vendor in (AT_ISHARE, AGGREGATOR)}
    limits = {v: thread_limit(s, args.threads) for v, s in shares.items()}
    ratio = args.aggregator_ratio
    if ratio is None:
        ratio = shares[AGGREGATOR] / shares[AT_ISHARE]
    print(
        f"machine: {machine()}; {args.processes} x {args.threads}; AT-iShare at "
        f"{args.latency_ms:.0f} ms; thread shares {shares} -> per process {limits}"
    )
    with sandbox("isolation", sim_latency_ms=args.latency_ms) as box:
        with pipeline_workers(box, args.processes, args.threads):
            capacity = drain_orders(box, args.capacity_orders, timeout_s=args.timeout).rate
        rate = args.load * capacity
        ceiling = args.processes * args.threads * 1000 / args.latency_ms
        print(
            f"  capacity {capacity:.1f} AT-iShare orders/s (ceiling P x T / L {ceiling:.0f}/s); "
            f"publishing AT-iShare at {rate:.1f}/s, aggregator at {ratio * rate:.1f}/s",
            flush=True,
        )
        env = {
            "NETWORKS_ENABLED": ALL_NETWORKS,
            "AGGREGATOR_API_URL": f"http://127.0.0.1:{box.sim.port}/aggregator/v1",
            "AGGREGATOR_API_TOKEN": DEFAULT_AGGREGATOR_TOKEN,
            "AGGREGATOR_READ_TIMEOUT_S": str(args.slow_ms / 1000 + 5),
            "WORKER_THREADS": str(args.threads),
            **extra,
        }
        _aggregator(box, "faults", {"latency_ms": args.latency_ms})
        phases = _phases(box, env, rate, ratio * rate, args)
    _report(phases, rate, capacity, limits, args)
    print(f"total time {time.monotonic() - started:.0f} s")
    return 0


def _share(vendor: str, extra: dict[str, str]) -> float:
    """A vendor's thread share: --env's, else the setting's default."""
    name = f"{vendor.replace('-', '_')}_thread_share"
    default = Settings.model_fields[name].default
    return float(extra.get(name.upper(), default))


# -- the phases ----------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    offered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    delivered_rate: float = 0.0
    aggregator_offered: int = 0
    aggregator_delivered: int = 0
    #: the most threads of the group seen in calls to the aggregator at once
    aggregator_threads_max: float = 0.0
    #: orders handed back because their vendor's share of the threads was in use
    busy: dict[str, float] = field(default_factory=dict)


def _phases(
    box: Sandbox, env: dict[str, str], rate: float, agg_rate: float, args: argparse.Namespace
) -> list[Phase]:
    phases = []
    with pipeline_workers(box, args.processes, args.threads, env) as workers:
        # the aggregator's connections warmed up too
        warm = _aggregator_orders(box, 2 * args.processes * args.threads)
        box.enqueue(FULFILLMENT_QUEUE, FULFILL_ACTOR, warm)
        wait_until(lambda: _done(box, warm) == len(warm), timeout_s=args.timeout, what="warm-up")
        phases.append(_phase(box, workers, "alone", rate, 0.0, args))
        phases.append(
            _phase(
                box, workers, f"aggregator healthy ({args.latency_ms:.0f} ms)", rate, agg_rate, args
            )
        )
        _aggregator(box, "faults", {"latency_ms": args.slow_ms})
        phases.append(
            _phase(
                box, workers, f"aggregator slow ({args.slow_ms / 1000:.0f} s)", rate, agg_rate, args
            )
        )
        # down: its answers (503) come at once; the slow calls still under way end first
        _aggregator(box, "faults", {"latency_ms": args.latency_ms})
        _aggregator(box, "down", {"seconds": 10 * args.duration + args.timeout})
        wait_until(
            lambda: not any(c["seconds"] > 1.0 for c in _aggregator(box, "inflight")["purchases"]),
            timeout_s=args.slow_ms / 1000 + 10,
            what="the slow aggregator calls",
            poll_s=0.2,
        )
        phases.append(_phase(box, workers, "aggregator down (503)", rate, agg_rate, args))
    return phases


def _phase(
    box: Sandbox,
    workers: Workers,
    name: str,
    rate: float,
    agg_rate: float,
    args: argparse.Namespace,
) -> Phase:
    """Publish AT-iShare orders at `rate` and aggregator ones at `agg_rate` for args.duration,
    open loop; wait for the AT-iShare ones to succeed."""
    phase = Phase(name)
    ours = box.create_orders(int(rate * args.duration))
    theirs = _aggregator_orders(box, int(agg_rate * args.duration))
    phase.offered, phase.aggregator_offered = len(ours), len(theirs)
    sampler = _Sampler(int(workers.proc.env["METRICS_PORT"]))
    sampler.start()
    try:
        t0, sent = _publish(box, [(ours, rate), (theirs, agg_rate)])
        try:
            wait_until(
                lambda: _done(box, ours) == len(ours),
                timeout_s=args.timeout,
                what=f"the AT-iShare orders of phase {name!r}",
                poll_s=0.1,
            )
        except TimeoutError as exc:
            print(f"  {exc}: figures of those delivered", flush=True)
    finally:
        sampler.stop()
    end = t0 + args.duration
    done = _fulfilled(box, ours)
    phase.latencies_ms = [(at - sent[oid]) * 1000 for oid, at in done.items()]
    in_window = sum(1 for at in done.values() if t0 + RAMP_S <= at <= end)
    phase.delivered_rate = in_window / (args.duration - RAMP_S)
    phase.aggregator_delivered = sum(1 for at in _fulfilled(box, theirs).values() if at <= end)
    phase.aggregator_threads_max = sampler.threads_max.get(AGGREGATOR, 0.0)
    phase.busy = sampler.busy_delta()
    p95 = percentile(phase.latencies_ms, 95) if phase.latencies_ms else float("nan")
    print(
        f"  {name}: {len(done)}/{len(ours)} AT-iShare orders, "
        f"{phase.delivered_rate:.1f}/s delivered, p95 {p95:.0f} ms; aggregator "
        f"{phase.aggregator_delivered}/{len(theirs)} delivered by the end, at most "
        f"{phase.aggregator_threads_max:.0f} threads in its calls; handed back {phase.busy}",
        flush=True,
    )
    return phase


def _publish(
    box: Sandbox, streams: Sequence[tuple[list[str], float]]
) -> tuple[float, dict[str, float]]:
    """Send each stream's messages at its rate, open loop, in one schedule; (the epoch second
    of the first send, each order's send time)."""
    sent: dict[str, float] = {}
    cursors = [0] * len(streams)
    start, t0 = time.monotonic(), time.time()
    while any(i < len(ids) for i, (ids, _) in zip(cursors, streams, strict=True)):
        elapsed = time.monotonic() - start
        batch: list[str] = []
        for k, (ids, stream_rate) in enumerate(streams):
            due = min(int(elapsed * stream_rate) + 1, len(ids))
            if due > cursors[k]:
                batch += ids[cursors[k] : due]
                cursors[k] = due
        if batch:
            box.enqueue(FULFILLMENT_QUEUE, FULFILL_ACTOR, batch)
            now = time.time()
            sent.update((oid, now) for oid in batch)
        time.sleep(TICK_S)
    return t0, sent


# -- orders and the simulator -------------------------------------------------------------


def _aggregator_orders(box: Sandbox, n: int) -> list[str]:
    """n pending orders of the aggregator's networks, in turn (the group that serves them
    must be up: the insert trigger marks an order pending only for a network served)."""
    rows = [
        (str(uuid.uuid4()), phone, network, size)
        for (network, phone, size), _ in zip(itertools.cycle(AGGREGATOR_ORDERS), range(n))
    ]
    with box.conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO orders (id, phone_number, network, size_gb) VALUES (%s, %s, %s, %s)",
            rows,
        )
    return [row[0] for row in rows]


def _done(box: Sandbox, ids: list[str]) -> int:
    return int(
        box.scalar(
            "SELECT count(*) FROM orders WHERE id = ANY(%s::uuid[]) "
            "AND fulfillment_status = 'success'",
            (ids,),
        )
    )


def _fulfilled(box: Sandbox, ids: list[str]) -> dict[str, float]:
    """Order id -> epoch second of its success, for those fulfilled."""
    rows = box.conn.execute(
        "SELECT id::text, extract(epoch FROM fulfilled_at)::float8 FROM orders "
        "WHERE id = ANY(%s::uuid[]) AND fulfillment_status = 'success'",
        (ids,),
    ).fetchall()
    return {oid: float(at) for oid, at in rows}


def _aggregator(box: Sandbox, route: str, payload: dict[str, Any] | None = None) -> Any:
    """One of the simulated aggregator's control routes (/aggregator/_sim/ROUTE)."""
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{box.sim.port}/aggregator/_sim/{route}",
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


# -- the group's metrics -------------------------------------------------------------------


class _Sampler(threading.Thread):
    """Reads the group's metrics every SAMPLE_S: the most threads seen in each vendor's
    calls, and each vendor's orders handed back (vendor_busy) from start to stop."""

    def __init__(self, port: int) -> None:
        super().__init__(name="metrics-sampler", daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.threads_max: dict[str, float] = {}
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self._stopping = threading.Event()

    def _read(self) -> tuple[dict[str, float], dict[str, float]]:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            text = response.read().decode()
        busy: dict[str, float] = {}
        threads: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                vendor = sample.labels.get("vendor", "")
                if sample.name == "fulfillment_vendor_busy_total":
                    busy[vendor] = sample.value
                elif sample.name == "fulfillment_vendor_threads_busy":
                    threads[vendor] = sample.value
        return busy, threads

    def run(self) -> None:
        while True:
            try:
                busy, threads = self._read()
            except OSError:  # the exposition server is busy: the next sample
                busy, threads = self.last, {}
            if not self.first:
                self.first = busy
            self.last = busy
            for vendor, n in threads.items():
                self.threads_max[vendor] = max(self.threads_max.get(vendor, 0.0), n)
            if self._stopping.wait(SAMPLE_S):
                return

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)

    def busy_delta(self) -> dict[str, float]:
        vendors = sorted(set(self.first) | set(self.last))
        return {v: self.last.get(v, 0.0) - self.first.get(v, 0.0) for v in vendors}


# -- the table -----------------------------------------------------------------------------


def _report(
    phases: list[Phase],
    rate: float,
    capacity: float,
    limits: dict[str, int],
    args: argparse.Namespace,
) -> None:
    alone_p95 = percentile(phases[0].latencies_ms, 95)
    agg_share = args.processes * limits[AGGREGATOR]
    rows, verdicts = [], []
    for i, ph in enumerate(phases):
        q = {k: percentile(ph.latencies_ms, k) for k in (50, 95, 99, 100)}
        share = ph.delivered_rate / rate
        ratio = q[95] / alone_p95
        rows.append(
            [
                ph.name,
                f"{len(ph.latencies_ms)}/{ph.offered}",
                f"{ph.delivered_rate:.1f}/s (**{100 * share:.0f} %**)",
                f"{q[50]:.0f} ms",
                f"{q[95]:.0f} ms (**{ratio:.2f}**)",
                f"{q[99]:.0f} / {q[100]:.0f} ms",
                f"{ph.busy.get(AT_ISHARE, 0):.0f}",
                f"{ph.aggregator_delivered}/{ph.aggregator_offered}" if i else "-",
                f"{ph.aggregator_threads_max:.0f} of {agg_share}" if i else "-",
                f"{ph.busy.get(AGGREGATOR, 0):.0f}" if i else "-",
            ]
        )
        if "slow" in ph.name or "down" in ph.name:
            met = share >= THROUGHPUT_TARGET and ratio <= P95_TARGET
            verdicts.append(
                f"{ph.name}: throughput {100 * share:.0f} % (target >= "
                f"{100 * THROUGHPUT_TARGET:.0f} %), p95 {ratio:.2f} x alone (target <= "
                f"{P95_TARGET}): {'met' if met else 'NOT MET'}"
            )
    show(
        f"AT-iShare at {100 * args.load:.0f} % of capacity ({capacity:.1f} orders/s measured, "
        f"so {rate:.1f}/s for {args.duration:.0f} s) at {args.latency_ms:.0f} ms, beside the "
        f"aggregator's orders; {args.processes} x {args.threads}, per process AT-iShare may hold "
        f"{limits[AT_ISHARE]} threads, the aggregator {limits[AGGREGATOR]}; in brackets: "
        "delivered / offered rate, p95 / alone p95",
        [
            "aggregator",
            "AT-iShare delivered",
            "AT-iShare throughput",
            "p50",
            "p95",
            "p99 / max",
            "AT-iShare handed back",
            "aggregator delivered by the end",
            "threads in aggregator calls (max seen)",
            "aggregator handed back",
        ],
        rows,
    )
    alone = phases[0]
    if alone.busy.get(AT_ISHARE, 0) or alone.delivered_rate < THROUGHPUT_TARGET * rate:
        print(
            f"warning: alone, AT-iShare's own share handed back "
            f"{alone.busy.get(AT_ISHARE, 0):.0f} orders and delivered "
            f"{100 * alone.delivered_rate / rate:.0f} % of the offered rate: the baseline is "
            "not clean, so the ratios to it say little"
        )
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    sys.exit(main())
