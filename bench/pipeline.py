"""Pipeline overhead (issue 5, benchmark 1): orders/s through the whole pipeline versus a bare
Dramatiq no-op actor on the same Redis, with the same processes and threads; then a profile
of the hot path in one worker process.

For each process count, each round drains N no-op messages (bench/noop_actors.py) and then N
orders through `dramatiq workers.actors` (claim, begin_purchase, HMAC-signed vendor call to
the simulator at zero latency, log row and order update in one statement, ack), each group
warmed up first; time runs from the first enqueue to the last success row. The figure is the
median over rounds of pipeline/baseline, each ratio taken from adjacent drains. The CPU
table splits where the machine's CPU went during the pipeline drains, per order.

The profile samples one worker process (1 x threads) with py-spy while it drains: once with
--gil (the thread holding the GIL: where the Python CPU goes) and once with --idle (every
worker thread, running or waiting: where a message's time goes).

`--candidate PATH` also drains each round through the worker code of another tree (a copy
of the repository with a change; same database schema) and prints it next to the current
tree: candidate/current is the change's effect, measured in the same run. `--candidate-env`
sets environment for that group only (e.g. DB_POOL_MAX_SIZE=16); with no path, the candidate
is the current tree under that environment.

    .venv/bin/python -m bench.pipeline [--orders 2000] [--rounds 3] [--processes 1,2]
        [--threads 8] [--profile-orders 4000 | --no-profile]
        [--candidate PATH] [--candidate-env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench import profiling
from bench.common import (
    ROOT,
    CpuMeter,
    Sandbox,
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
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--processes", default="1,2", help="comma-separated process counts")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--profile-orders", type=int, default=4000)
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--candidate", type=Path, help="another tree's workers, drained each round")
    p.add_argument("--candidate-env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per drain")
    args = p.parse_args()
    install_sigterm()
    counts = [int(x) for x in args.processes.split(",")]
    cand_env = dict(kv.split("=", 1) for kv in args.candidate_env)
    has_candidate = args.candidate is not None or bool(cand_env)
    started = time.monotonic()
    print(f"machine: {machine()}; {args.orders} messages per drain, {args.rounds} rounds")
    with sandbox("pipeline") as box:
        rows, cpu_rows, cand_rows = [], [], []
        for processes in counts:
            result = _measure(box, processes, args, has_candidate, cand_env)
            shape = f"{processes} x {args.threads}"
            ratios = _ratios(result.current, result.noop)
            rows.append(
                [
                    shape,
                    f"{median(result.noop):.0f} msg/s",
                    f"{median(result.current):.0f} orders/s",
                    f"**{median(ratios):.3f}**",
                    f"{min(ratios):.3f}-{max(ratios):.3f}",
                ]
            )
            for name, per_order in result.cpu.items():
                row = [shape, name, f"{median(per_order):.2f}"]
                if has_candidate:
                    cand = median(result.cand_cpu[name])
                    row += [f"{cand:.2f}", f"{cand / median(per_order):.3f}"]
                cpu_rows.append(row)
            if has_candidate:
                effect = _ratios(result.candidate, result.current)
                cand_rows.append(
                    [
                        shape,
                        f"{median(result.current):.0f} orders/s",
                        f"{median(result.candidate):.0f} orders/s",
                        f"**{median(effect):.3f}**",
                        f"{min(effect):.3f}-{max(effect):.3f}",
                        f"{median(_ratios(result.candidate, result.noop)):.3f}",
                    ]
                )
        show(
            "Pipeline overhead (simulator at 0 ms; median of rounds)",
            ["processes x threads", "baseline no-op", "pipeline", "ratio", "ratio range"],
            rows,
        )
        show(
            "CPU per fulfilled order, ms (median of rounds; Redis counts the whole server)",
            ["processes x threads", "where", "CPU ms/order"]
            + (["candidate", "candidate/current"] if has_candidate else []),
            cpu_rows,
        )
        if has_candidate:
            label = str(args.candidate or ROOT) + (f" with {cand_env}" if cand_env else "")
            show(
                f"Candidate {label} vs current tree (same rounds)",
                [
                    "processes x threads",
                    "current",
                    "candidate",
                    "candidate/current",
                    "range",
                    "candidate/no-op",
                ],
                cand_rows,
            )
        if not args.no_profile:
            if profiling.available():
                _profile(box, args)
            else:
                print("py-spy not installed (.venv/bin/pip install py-spy): no profile")
    print(f"total time {time.monotonic() - started:.0f} s")
    return 0


@dataclass
class Rounds:
    noop: list[float] = field(default_factory=list)
    current: list[float] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)
    #: CPU ms per order during the current tree's drains, by where
    cpu: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cand_cpu: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def _add_cpu(into: dict[str, list[float]], meter: CpuMeter, orders: int) -> None:
    for name, seconds in meter.spent.items():
        into[name].append(seconds * 1000 / orders)
    into["total"].append(sum(meter.spent.values()) * 1000 / orders)


def _ratios(top: list[float], bottom: list[float]) -> list[float]:
    return [t / b for t, b in zip(top, bottom, strict=True)]


def _measure(
    box: Sandbox,
    processes: int,
    args: argparse.Namespace,
    has_candidate: bool,
    cand_env: dict[str, str],
) -> Rounds:
    result = Rounds()
    threads, n = args.threads, args.orders

    def current() -> None:
        with pipeline_workers(box, processes, threads) as workers, CpuMeter(box, workers) as cpu:
            result.current.append(drain_orders(box, n, timeout_s=args.timeout).rate)
        _add_cpu(result.cpu, cpu, n)

    def candidate() -> None:
        with (
            pipeline_workers(box, processes, threads, cand_env, tree=args.candidate) as workers,
            CpuMeter(box, workers) as cpu,
        ):
            result.candidate.append(drain_orders(box, n, timeout_s=args.timeout).rate)
        _add_cpu(result.cand_cpu, cpu, n)

    for r in range(args.rounds):
        with noop_workers(box, processes, threads):
            result.noop.append(drain_noop(box, n, timeout_s=args.timeout).rate)
        # the candidate goes first every other round, so a drift in load favours neither
        steps = [current, candidate] if has_candidate else [current]
        for step in steps if r % 2 == 0 else steps[::-1]:
            step()
        line = (
            f"  {processes}x{threads} round {r + 1}: "
            f"no-op {result.noop[-1]:.0f}/s, pipeline {result.current[-1]:.0f}/s"
        )
        if has_candidate:
            line += f", candidate {result.candidate[-1]:.0f}/s"
        print(line, flush=True)
    return result


def _profile(box: Sandbox, args: argparse.Namespace) -> None:
    n, threads = args.profile_orders, args.threads
    views: dict[str, tuple[dict[str, int], int, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, pipeline_workers(box, 1, threads) as workers:
        pid = workers.worker_pids()[0]
        for mode in ("gil", "idle"):
            out = Path(tmp) / f"{mode}.txt"
            # Longer than the drain: py-spy stops itself; it is waited for below.
            spy = profiling.start(pid, out, mode=mode, seconds=min(n / 50, args.timeout))
            time.sleep(1.0)  # py-spy attaches
            with CpuMeter(box, workers) as meter:
                drained = drain_orders(box, n, timeout_s=args.timeout)
            spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
            spy.wait(timeout=30)
            phases, others = profiling.breakdown(out)
            worker_cpu_ms = meter.spent["workers (Python)"] * 1000 / n
            views[mode] = (phases, others, worker_cpu_ms, drained.seconds)
            print(f"  profiled ({mode}): {drained.rate:.0f} orders/s", flush=True)
    gil, gil_others, cpu_ms, _ = views["gil"]
    idle, _, _, idle_s = views["idle"]
    gil_total = sum(gil.values()) + gil_others
    busy = {k: v for k, v in idle.items() if k != profiling.IDLE}
    idle_total = sum(idle.values())
    # wall ms per order one worker thread spends in a phase: threads x drain time / orders
    thread_ms = threads * idle_s * 1000 / n
    labels = sorted((set(gil) | set(busy)) - {profiling.IDLE}, key=lambda k: -gil.get(k, 0))
    rows = []
    for label in labels:
        g, w = gil.get(label, 0) / gil_total, busy.get(label, 0) / idle_total
        rows.append(
            [
                label,
                f"{100 * g:.1f} %",
                f"{g * cpu_ms:.2f}",
                f"{100 * w:.1f} %",
                f"{w * thread_ms:.2f}",
            ]
        )
    g = gil_others / gil_total
    rows.append(
        ["Dramatiq consumer and other threads", f"{100 * g:.1f} %", f"{g * cpu_ms:.2f}", "", ""]
    )
    w = idle.get(profiling.IDLE, 0) / idle_total
    rows.append([profiling.IDLE, "", "", f"{100 * w:.1f} %", f"{w * thread_ms:.2f}"])
    show(
        f"Profile of one worker process (1 x {threads}, {n} orders; py-spy, "
        f"{gil_total} GIL samples, {idle_total} worker-thread samples; "
        f"worker CPU {cpu_ms:.2f} ms/order)",
        ["phase", "Python CPU (GIL)", "CPU ms/order", "worker-thread time", "thread ms/order"],
        rows,
    )


if __name__ == "__main__":
    sys.exit(main())
