"""Concurrency efficiency (issue 5, benchmark 2): with the simulator answering after L ms
(200 by default), how close does the fleet come to the ceiling processes x threads / L?

Each worker thread holds one order for the whole vendor call, so P processes of T threads
cannot fulfil more than P x T / L orders per second (1 x 8 at 200 ms: 40/s; 2 x 8: 80/s).
For each configuration the script drains about --seconds worth of orders at that ceiling
and prints throughput / ceiling. As a baseline measured in the same run, the same group
shape drains the same count through a bare Dramatiq actor that only sleeps L ms
(bench/noop_actors.py `nap`): what Dramatiq alone achieves at that latency. The vendor
latency the workers saw (fulfillment_logs.latency_ms, median) and the time per order beyond
it are printed too.

    .venv/bin/python -m bench.concurrency [--latency-ms 200] [--configs 1x8,2x8]
        [--seconds 15] [--rounds 1] [--candidate PATH]

`--candidate PATH` runs each configuration a second time with the workers of another copy of
the repository (same schema), in the same run.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

from bench.common import (
    drain_noop,
    drain_orders,
    install_sigterm,
    machine,
    median,
    noop_workers,
    pipeline_workers,
    sandbox,
    show,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument(
        "--configs",
        default="1x8,2x8",
        help="PROCESSESxTHREADS[:NAME=VALUE[+NAME=VALUE]], comma-separated; the variables "
        "apply to that pipeline group (e.g. 2x32:DB_POOL_MAX_SIZE=34)",
    )
    p.add_argument("--seconds", type=float, default=15.0, help="each drain's length at the ceiling")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--candidate", type=Path, help="also run each configuration with another tree's workers"
    )
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per drain")
    args = p.parse_args()
    install_sigterm()
    configs = [_config(c) for c in args.configs.split(",")]
    latency_s = args.latency_ms / 1000
    started = time.monotonic()
    print(f"machine: {machine()}; simulator latency {args.latency_ms:.0f} ms")
    rows = []
    with sandbox("concurrency", sim_latency_ms=args.latency_ms) as box:
        trees = [None] if args.candidate is None else [None, args.candidate]
        for (processes, threads, env), tree in itertools.product(configs, trees):
            ceiling = processes * threads / latency_s
            n = max(int(ceiling * args.seconds), processes * threads)
            naps, rates = [], []
            for _ in range(args.rounds):
                with noop_workers(box, processes, threads, nap_ms=args.latency_ms):
                    naps.append(
                        drain_noop(box, n, timeout_s=args.timeout, nap_ms=args.latency_ms).rate
                    )
                with pipeline_workers(box, processes, threads, env, tree=tree):
                    since = box.scalar("SELECT coalesce(max(id), 0) FROM fulfillment_logs")
                    rates.append(drain_orders(box, n, timeout_s=args.timeout).rate)
            vendor_ms = float(
                box.scalar(
                    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) "
                    "FROM fulfillment_logs WHERE id > %s",
                    (since,),
                )
            )
            rate, nap = median(rates), median(naps)
            # each thread's time per order: P x T / throughput
            per_order_ms = processes * threads / rate * 1000
            label = f"{processes} x {threads}" + "".join(f", {k}={v}" for k, v in env.items())
            if tree is not None:
                label += f" (candidate {tree})"
            rows.append(
                [
                    label,
                    n,
                    f"{ceiling:.0f}/s",
                    f"{nap:.1f}/s ({nap / ceiling:.3f})",
                    f"{rate:.1f}/s",
                    f"**{rate / ceiling:.3f}**",
                    f"{rate / nap:.3f}",
                    f"{vendor_ms:.0f} ms",
                    f"{per_order_ms - vendor_ms:.0f} ms",
                ]
            )
            print(f"  {label}: nap {nap:.1f}/s, pipeline {rate:.1f}/s", flush=True)
    show(
        f"Concurrency efficiency, simulator at {args.latency_ms:.0f} ms "
        f"(median of {args.rounds} round(s))",
        [
            "processes x threads",
            "orders",
            "ceiling P x T / L",
            "baseline: Dramatiq nap actor (/ceiling)",
            "pipeline",
            "efficiency (/ceiling)",
            "pipeline / nap",
            "vendor latency seen (median)",
            "per order beyond it",
        ],
        rows,
    )
    print(f"total time {time.monotonic() - started:.0f} s")
    return 0


def _config(spec: str) -> tuple[int, int, dict[str, str]]:
    shape, _, variables = spec.partition(":")
    processes, threads = (int(x) for x in shape.split("x"))
    env = dict(kv.split("=", 1) for kv in variables.split("+") if kv)
    return processes, threads, env


if __name__ == "__main__":
    sys.exit(main())
