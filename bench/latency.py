"""End-to-end latency (issue 5, benchmark 4): from publish to success row at half of the
measured capacity, versus the simulator's latency.

The simulator answers after --latency-ms (50 by default). First the capacity of one group
(P processes x T threads, as the Procfile runs them) is measured in the same run: a burst of
orders drained as fast as it goes. Then orders are published at --load (0.5) of that rate
for --seconds (30), open loop: each order's message is sent at its scheduled time, whether
or not the workers keep up, and the time it was sent is kept. The orders are inserted
beforehand, as the purchase path commits its order before it publishes. Latency is the
order's fulfilled_at (set by the statement that writes its success row) minus its publish
time, both on this host's clock. The vendor latency the workers saw (fulfillment_logs) is
printed next to it: the rest is queueing, the claim, the two other statements and the ack.

`--candidate PATH` (another tree's workers, same schema) and/or `--candidate-env NAME=VALUE`
(e.g. dramatiq_worker_timeout=100) also publish the same schedule to such a group, in the
same run, after the current tree.

    .venv/bin/python -m bench.latency [--latency-ms 50] [--load 0.5] [--seconds 30]
        [--processes 2] [--threads 8] [--capacity-orders 3000]
        [--candidate PATH] [--candidate-env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.common import (
    FULFILL_ACTOR,
    FULFILLMENT_QUEUE,
    Sandbox,
    drain_orders,
    install_sigterm,
    machine,
    percentile,
    pipeline_workers,
    sandbox,
    show,
    wait_until,
)

TICK_S = 0.005


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--load", type=float, default=0.5, help="fraction of the measured capacity")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--capacity-orders", type=int, default=3000)
    p.add_argument("--candidate", type=Path, help="another tree's workers, same schedule")
    p.add_argument("--candidate-env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per drain")
    args = p.parse_args()
    install_sigterm()
    cand_env = dict(kv.split("=", 1) for kv in args.candidate_env)
    started = time.monotonic()
    shape = f"{args.processes} x {args.threads}"
    print(f"machine: {machine()}; simulator latency {args.latency_ms:.0f} ms; {shape}")
    runs: dict[str, dict[str, float]] = {}
    with sandbox("latency", sim_latency_ms=args.latency_ms) as box:
        with pipeline_workers(box, args.processes, args.threads):
            capacity = drain_orders(box, args.capacity_orders, timeout_s=args.timeout).rate
            rate = args.load * capacity
            print(f"  capacity {capacity:.0f} orders/s; publishing at {rate:.0f}/s", flush=True)
            runs["current tree"] = _run(box, rate, args)
        if cand_env or args.candidate:
            label = " ".join([str(args.candidate or ""), str(cand_env or "")]).strip()
            with pipeline_workers(box, args.processes, args.threads, cand_env, tree=args.candidate):
                runs[f"candidate {label}"] = _run(box, rate, args)
    rows = []
    for label, r in runs.items():
        rows.append(
            [
                label,
                f"{r['count']:.0f}",
                f"{r['vendor_p50']:.0f} ms",
                f"{r['beyond_p50']:.0f} / {r['beyond_p99']:.0f} ms",
                *(
                    f"{r[k]:.0f} ms ({r[k] / args.latency_ms:.2f})"
                    for k in ("p50", "p95", "p99", "p99.9", "max")
                ),
            ]
        )
    show(
        f"Publish to success row at {100 * args.load:.0f} % of capacity ({capacity:.0f} "
        f"orders/s measured, so {rate:.0f}/s for {args.seconds:.0f} s), simulator at "
        f"{args.latency_ms:.0f} ms; in brackets: / simulator latency",
        [
            "workers",
            "orders",
            "vendor call seen (p50)",
            "beyond the vendor call (p50 / p99)",
            "p50",
            "p95",
            "p99",
            "p99.9",
            "max",
        ],
        rows,
    )
    print(f"total time {time.monotonic() - started:.0f} s")
    return 0


def _run(box: Sandbox, rate: float, args: argparse.Namespace) -> dict[str, float]:
    """Publish at `rate` for args.seconds, open loop; the latency figures, ms."""
    n = int(rate * args.seconds)
    ids = box.create_orders(n)
    since = box.scalar("SELECT coalesce(max(id), 0) FROM fulfillment_logs")
    before = box.successes()
    sent: dict[str, float] = {}
    start = time.monotonic()
    i = 0
    while i < n:
        due = min(int((time.monotonic() - start) * rate) + 1, n)
        if due > i:
            batch = ids[i:due]
            box.enqueue(FULFILLMENT_QUEUE, FULFILL_ACTOR, batch)
            now = time.time()
            sent.update((oid, now) for oid in batch)
            i = due
        time.sleep(TICK_S)
    wait_until(
        lambda: box.successes() - before >= n, timeout_s=args.timeout, what="the published orders"
    )
    rows = box.conn.execute(
        "SELECT o.id::text, extract(epoch FROM o.fulfilled_at)::float8, l.latency_ms "
        "FROM orders o JOIN fulfillment_logs l ON l.order_id = o.id AND l.status = 'success' "
        "WHERE o.id = ANY(%s) AND l.id > %s",
        (ids, since),
    ).fetchall()
    latencies = [(done - sent[oid]) * 1000 for oid, done, _ in rows]
    # what the order waited for besides the vendor: queueing, claim, statements, GIL
    beyond = [(done - sent[oid]) * 1000 - vendor_ms for oid, done, vendor_ms in rows]
    quantiles = (("p50", 50), ("p95", 95), ("p99", 99), ("p99.9", 99.9))
    result = {p: percentile(latencies, q) for p, q in quantiles}
    result |= {
        "max": max(latencies),
        "count": len(latencies),
        "vendor_p50": percentile([float(r[2]) for r in rows], 50),
        "beyond_p50": percentile(beyond, 50),
        "beyond_p99": percentile(beyond, 99),
    }
    print(
        f"  {len(latencies)} orders: p50 {result['p50']:.0f} ms, p99 {result['p99']:.0f} ms",
        flush=True,
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
