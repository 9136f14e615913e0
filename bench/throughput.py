"""Throughput of one worker process against the simulator at zero latency.

Prints orders/s through the whole pipeline (claim, signed vendor call over HTTP, log row,
status update, ack) and the same process/thread count draining a no-op Dramatiq actor on the
same Redis: the ratio is the figure to compare across machines (absolute times drift).
bench/pipeline.py runs the same measurement over several rounds and process counts, with the
CPU split and a profile; this is its quick single drain.

    .venv/bin/python -m bench.throughput [--orders 2000] [--processes 1] [--threads 8]

Uses DATABASE_URL / REDIS_URL when set, else the local servers on 127.0.0.1; its database
and Redis keys are removed at the end (bench/common.py).
"""

from __future__ import annotations

import argparse
import sys

from bench.common import (
    drain_noop,
    drain_orders,
    install_sigterm,
    machine,
    noop_workers,
    pipeline_workers,
    sandbox,
)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per drain")
    args = p.parse_args()
    install_sigterm()
    with sandbox("throughput") as box:
        with noop_workers(box, args.processes, args.threads):
            base = drain_noop(box, args.orders, timeout_s=args.timeout).rate
        with pipeline_workers(box, args.processes, args.threads):
            full = drain_orders(box, args.orders, timeout_s=args.timeout).rate
    print(
        f"\nmachine: {machine()}; {args.orders} messages; "
        f"{args.processes} process(es) x {args.threads} threads"
    )
    print(f"baseline  no-op actor        {base:8.1f} msg/s")
    print(f"pipeline  fulfill_order      {full:8.1f} orders/s")
    print(f"ratio     pipeline/baseline  {full / base:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
