"""Backlog drain (issue 5, benchmark 3): N orders enqueued at once, then the workers start.

The orders are inserted with COPY and their messages pushed with a Redis pipeline (the two
commands of Dramatiq's enqueue, a thousand messages per round trip), with no worker running.
Then one group of P processes x T threads starts (`dramatiq workers.actors`, simulator at
zero latency) and the clock runs until the N-th success row. Every --sample-s seconds the
resident memory (VmRSS) of each worker process is read: it must not grow with the backlog
(prefetch bounds what a process holds; orders are read one by one from PostgreSQL). Redis
memory is read before and after the enqueue and after the drain, both as the server's
used_memory (other users of the server count too) and as MEMORY USAGE summed over this run's
keys. The baseline, measured in the same run, is the same count of messages drained from a
full queue by the no-op actor with the same processes and threads.

    .venv/bin/python -m bench.backlog [--orders 100000] [--processes 2] [--threads 8]
        [--sample-s 5] [--no-baseline]
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import (
    FULFILL_ACTOR,
    FULFILLMENT_QUEUE,
    NOOP_ACTOR,
    NOOP_QUEUE,
    Sandbox,
    Workers,
    install_sigterm,
    machine,
    rss_mb,
    sandbox,
    show,
    wait_until,
)

MB = 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--orders", type=int, default=100_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--timeout", type=float, default=1800, help="drain limit, s")
    args = p.parse_args()
    install_sigterm()
    n, started = args.orders, time.monotonic()
    print(f"machine: {machine()}; {n:,} orders; {args.processes} x {args.threads}")
    with sandbox("backlog") as box:
        base_s = None if args.no_baseline else _baseline(box, args)
        mem: dict[str, tuple[int, int]] = {"before enqueue": _memory(box)}
        t0 = time.monotonic()
        ids = box.create_orders(n)
        insert_s = time.monotonic() - t0
        t0 = time.monotonic()
        box.enqueue(FULFILLMENT_QUEUE, FULFILL_ACTOR, ids)
        enqueue_s = time.monotonic() - t0
        mem["after enqueue"] = _memory(box)
        print(f"  inserted in {insert_s:.1f} s, enqueued in {enqueue_s:.1f} s", flush=True)
        del ids
        drain_s, samples = _drain(box, args)
        mem["after drain"] = _memory(box)
    rate = n / drain_s
    rows = [
        ["insert (COPY)", f"{insert_s:.1f} s", f"{n / insert_s:,.0f} orders/s", ""],
        ["enqueue (pipelined)", f"{enqueue_s:.1f} s", f"{n / enqueue_s:,.0f} msg/s", ""],
    ]
    if base_s is not None:
        rows.append(
            ["baseline: no-op actor drains", f"{base_s:.1f} s", f"{n / base_s:,.0f} msg/s", ""]
        )
    rows.append(
        [
            "**pipeline drains**",
            f"**{drain_s:.1f} s**",
            f"**{rate:,.0f} orders/s**",
            f"**{base_s / drain_s:.3f}**" if base_s else "",
        ]
    )
    show(
        f"Backlog of {n:,} orders, {args.processes} x {args.threads}",
        ["step", "time", "rate", "rate / no-op"],
        rows,
    )
    _memory_tables(samples, mem, n)
    print(f"total time {time.monotonic() - started:.0f} s")
    return 0


def _memory(box: Sandbox) -> tuple[int, int]:
    return box.redis_used_memory(), box.namespace_memory()


def _baseline(box: Sandbox, args: argparse.Namespace) -> float:
    """The same count through the no-op actor, from a full queue."""
    box.reset_noop()
    box.enqueue(NOOP_QUEUE, NOOP_ACTOR, ["x"] * args.orders)
    t0 = time.monotonic()
    with Workers(
        box, "bench.noop_actors", NOOP_QUEUE, processes=args.processes, threads=args.threads
    ):
        wait_until(
            lambda: box.noop_done() >= args.orders,
            timeout_s=args.timeout,
            what="the no-op backlog",
            poll_s=0.01,
        )
        seconds = time.monotonic() - t0
    print(f"  baseline: no-op drained {args.orders:,} in {seconds:.1f} s", flush=True)
    return seconds


def _drain(
    box: Sandbox, args: argparse.Namespace
) -> tuple[float, dict[int, list[tuple[float, int, float]]]]:
    """Start the workers on the full queue; (seconds to drain, per worker pid the samples
    (seconds since start, orders done, RSS MB))."""
    n = args.orders
    samples: dict[int, list[tuple[float, int, float]]] = {}
    start_epoch, t0 = time.time(), time.monotonic()
    with Workers(
        box, "workers.actors", FULFILLMENT_QUEUE, processes=args.processes, threads=args.threads
    ) as workers:
        next_sample = 0.0
        while True:
            done = box.successes()
            now = time.monotonic() - t0
            if done >= n or now >= next_sample:
                for pid in workers.worker_pids():
                    samples.setdefault(pid, []).append((now, done, rss_mb(pid)))
                next_sample = now + args.sample_s
                print(f"  {now:6.0f} s  {done:>9,} done", flush=True)
            if done >= n:
                break
            if not workers.alive():
                raise RuntimeError("the worker group exited")
            if now > args.timeout:
                raise TimeoutError(f"{done:,} of {n:,} done after {args.timeout:.0f} s")
            time.sleep(0.5)
        end = min(box.last_success_at(), time.time())
    return end - start_epoch, samples


def _memory_tables(
    samples: dict[int, list[tuple[float, int, float]]], mem: dict[str, tuple[int, int]], n: int
) -> None:
    rows = []
    for i, (pid, points) in enumerate(sorted(samples.items()), 1):
        # "start": the first reading once the process had work done (its imports, pools and
        # first messages); then the largest and the last.
        warm = next((p for p in points if p[1] > 0), points[0])
        peak = max(points, key=lambda p: p[2])
        last = points[-1]
        rows.append(
            [
                f"worker {i} (pid {pid})",
                f"{warm[2]:.1f} MB at {warm[1]:,} done",
                f"{peak[2]:.1f} MB at {peak[1]:,} done",
                f"{last[2]:.1f} MB at {last[1]:,} done",
                f"{last[2] - warm[2]:+.1f} MB",
            ]
        )
    show(
        "Worker memory (VmRSS) while draining",
        ["process", "start", "peak", "end", "end - start"],
        rows,
    )
    first_used = mem["before enqueue"][0]
    rows = [
        [
            step,
            f"{used / MB:.1f} MB",
            f"{(used - first_used) / MB:+.1f} MB",
            f"{ns / MB:.1f} MB",
            f"{ns / n:.0f} B" if step == "after enqueue" else "",
        ]
        for step, (used, ns) in mem.items()
    ]
    show(
        "Redis memory",
        ["when", "used_memory (whole server)", "change", "this run's keys", "per message"],
        rows,
    )


if __name__ == "__main__":
    sys.exit(main())
