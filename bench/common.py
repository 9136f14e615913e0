"""What the benchmarks share: a sandbox per run, worker groups, bulk orders, timed drains,
CPU and memory readings, and the tables they print.

A sandbox is one database `fulfillment_bench_<name>_<random>` (schema applied), one Redis
namespace `bench-<name>-<random>`, one simulator process and one directory for the worker
groups' metrics and logs. It is removed on the way out, whatever happened: the database is
dropped, every key of the namespace is deleted, the processes are stopped.

Every figure of a benchmark is a ratio to a baseline measured in the same run: the machines
are shared and absolute times drift. Uses DATABASE_URL / REDIS_URL when set, else the local
servers on 127.0.0.1. The code under test is the tree this file sits in (its workers run
with PYTHONPATH set to it), so a copy of the repository benchmarks its own code;
`pipeline_workers(..., tree=PATH)` runs another copy's workers next to it (a candidate
change, measured in the same run). BENCH_KEEP_LOGS=1 keeps the processes' logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

from db.migrate import migrate  # noqa: E402
from fulfillment.dev.embedded import free_port  # noqa: E402
from fulfillment.dev.launcher import SIM_READY, Proc, base_env, dramatiq_argv  # noqa: E402
from fulfillment.domain.constants import FULFILL_ACTOR, FULFILLMENT_QUEUE  # noqa: E402

SERVER_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
NOOP_QUEUE = "bench-noop"
NOOP_ACTOR = "noop"
NAP_QUEUE = "bench-nap"
NAP_ACTOR = "nap"
PHONE = "+233261234567"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60.0
#: Variables of the fleet's configuration a caller's shell may have set: the benchmarks set
#: their own and leave everything else at the code's defaults.
_FLEET_PREFIXES = ("SIM_", "DRAMATIQ_", "DB_POOL_", "VENDOR_", "RETRY_", "MAX_", "CLAIM_")


def machine() -> str:
    """One line about where the figures come from."""
    with contextlib.suppress(OSError):
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        return f"{os.cpu_count()} cores, load average {load}"
    return f"{os.cpu_count()} cores"


def install_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the sandbox is cleaned up."""

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def wait_until(
    check: Callable[[], bool], *, timeout_s: float, what: str, poll_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


# -- /proc readings ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _status(pid: int, key: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def rss_mb(pid: int) -> float:
    """Resident memory of one process (VmRSS), MB."""
    value = _status(pid, "VmRSS")
    return int(value.split()[0]) / 1024 if value else 0.0


def children(pid: int) -> list[int]:
    """Direct children of a process, oldest first."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return sorted(found)


# -- the simulator -------------------------------------------------------------------------


class Simulator:
    """`python -m fulfillment.dev.simulator.server` of the tree under test, on a free port."""

    def __init__(self, env: dict[str, str], log_dir: Path, *, latency_ms: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = Proc(
            "simulator",
            [
                sys.executable,
                "-m",
                "fulfillment.dev.simulator.server",
                "--port",
                str(self.port),
                "--balance",
                "1e12",  # the default 100,000 GHS pays for 20,000 orders of 1 GB only
                "--latency-ms",
                str(latency_ms),
            ],
            env=env,
            log_dir=log_dir,
            ready=SIM_READY,
            cwd=ROOT,
        )
        self.proc.start()
        try:
            self.proc.wait_ready(START_TIMEOUT_S)
        except BaseException:
            self.proc.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def control(self, route: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/_sim/{route}",
            data=data,
            method="POST" if data is not None else "GET",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.proc.stop()


# -- the sandbox ---------------------------------------------------------------------------


@dataclass
class Sandbox:
    name: str
    db_url: str
    namespace: str
    redis: redis.Redis
    env: dict[str, str]
    tmp: Path
    sim: Simulator
    _conn: psycopg.Connection[Any] | None = None
    _log_dirs: int = 0

    def log_dir(self, name: str) -> Path:
        """A new directory for the logs of one group of processes."""
        self._log_dirs += 1
        path = self.tmp / f"{self._log_dirs:02d}-{name}"
        path.mkdir()
        return path

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """One autocommit connection of the benchmark itself (counting, reading results)."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.db_url, autocommit=True)
        return self._conn

    def scalar(self, query: str, params: Sequence[Any] | None = None) -> Any:
        row = self.conn.execute(query.encode(), params).fetchone()
        return row[0] if row else None

    # -- orders and messages --------------------------------------------------------------

    def create_orders(self, n: int) -> list[str]:
        """n pending orders (1 GB, one valid number), by COPY, then ANALYZE: a live orders
        table has statistics, and without them the claim's plan costs 3x the CPU."""
        ids = [str(uuid.uuid4()) for _ in range(n)]
        with (
            self.conn.cursor() as cur,
            cur.copy("COPY orders (id, phone_number, network, size_gb) FROM STDIN") as copy,
        ):
            for oid in ids:
                copy.write_row((oid, PHONE, "at-ishare", 1))
        self.conn.execute("ANALYZE orders")
        return ids

    def enqueue(self, queue: str, actor: str, args: Sequence[str], *, chunk: int = 1000) -> None:
        """One message per argument, pipelined: the HSET and RPUSH Dramatiq's own enqueue runs
        (dispatch.lua "enqueue"), a thousand messages per round trip."""
        import dramatiq

        msgs_key = f"{self.namespace}:{queue}.msgs"
        queue_key = f"{self.namespace}:{queue}"
        for start in range(0, len(args), chunk):
            batch = {}
            for arg in args[start : start + chunk]:
                redis_id = str(uuid.uuid4())
                message = dramatiq.Message(
                    queue_name=queue,
                    actor_name=actor,
                    args=(arg,),
                    kwargs={},
                    options={"redis_message_id": redis_id},
                )
                batch[redis_id] = message.encode()
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(msgs_key, mapping=batch)  # type: ignore[arg-type]
            pipe.rpush(queue_key, *batch)
            pipe.execute()

    def successes(self) -> int:
        return int(self.scalar("SELECT count(*) FROM orders WHERE fulfillment_status = 'success'"))

    def last_success_at(self) -> float:
        """Epoch seconds of the newest success row (the database's clock, this host's)."""
        return float(self.scalar("SELECT extract(epoch FROM max(fulfilled_at)) FROM orders"))

    def noop_done(self) -> int:
        return int(self.redis.get(f"{self.namespace}:bench-done") or 0)

    def reset_noop(self) -> None:
        self.redis.set(f"{self.namespace}:bench-done", 0)

    def backend_pids(self) -> list[int]:
        """PostgreSQL backends connected to this sandbox's database, but the benchmark's own."""
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
        return [int(r[0]) for r in rows]

    def namespace_memory(self) -> int:
        """Bytes Redis holds for this namespace's keys (MEMORY USAGE, every element counted)."""
        total = 0
        for key in self.redis.scan_iter(match=f"{self.namespace}:*", count=1000):
            total += int(self.redis.memory_usage(key, samples=0) or 0)
        return total

    def redis_used_memory(self) -> int:
        return int(self.redis.info("memory")["used_memory"])


@contextlib.contextmanager
def sandbox(
    name: str, *, sim_latency_ms: float = 0.0, env: dict[str, str] | None = None
) -> Iterator[Sandbox]:
    suffix = uuid.uuid4().hex[:8]
    db_name = f"fulfillment_bench_{name}_{suffix}"
    db_url = urlunsplit(urlsplit(SERVER_URL)._replace(path="/" + db_name))
    namespace = f"bench-{name}-{suffix}"
    tmp = Path(tempfile.mkdtemp(prefix=f"fulfillment-bench-{name}-"))
    client = redis.Redis.from_url(REDIS_URL)
    full_env = {
        **base_env(_FLEET_PREFIXES),
        "DATABASE_URL": db_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": namespace,
        "AT_ISHARE_API_KEY": "bench",
        "AT_ISHARE_API_SECRET": "bench-secret",
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
        "METRICS_DIR": str(tmp / "metrics"),
        **(env or {}),
    }
    sim: Simulator | None = None
    box: Sandbox | None = None
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"'.encode())
    try:
        migrate(db_url)
        sim = Simulator(full_env, tmp, latency_ms=sim_latency_ms)
        full_env["AT_ISHARE_API_URL"] = sim.url
        box = Sandbox(name, db_url, namespace, client, full_env, tmp, sim)
        yield box
    finally:
        if sim is not None:
            sim.stop()
        if box is not None and box._conn is not None:
            box._conn.close()
        with psycopg.connect(SERVER_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'.encode())
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# -- worker groups -------------------------------------------------------------------------


class Workers:
    """One `dramatiq MODULE --queues QUEUE --processes P --threads T` group, as the Procfile's
    `worker:` type starts it (fulfillment.dev.launcher), with its own metrics port."""

    def __init__(
        self,
        box: Sandbox,
        module: str,
        queue: str,
        *,
        processes: int,
        threads: int,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.processes = processes
        self.threads = threads
        label = f"{module.rsplit('.', 1)[-1]}-{processes}x{threads}"
        self.proc = Proc(
            label,
            dramatiq_argv(module, queue, processes=processes, threads=threads),
            env={**box.env, **(env or {})},
            log_dir=box.log_dir(label),
            metrics=True,
            cwd=cwd,
        )
        self.proc.start()

    def worker_pids(self) -> list[int]:
        """The worker processes: the group's first children (the metrics server forks last)."""
        return children(self.proc.pid)[: self.processes]

    def all_pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def alive(self) -> bool:
        return self.proc.alive

    def stop(self) -> None:
        self.proc.stop()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- CPU accounting ------------------------------------------------------------------------


@dataclass
class CpuMeter:
    """CPU seconds spent, over one interval, by the workers, the simulator, this database's
    PostgreSQL backends and Redis (the whole server: other users of it count too)."""

    box: Sandbox
    workers: Workers
    start: dict[str, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    _t0: float = 0.0

    def _read(self) -> dict[str, float]:
        cpu = self.box.redis.info("cpu")
        return {
            "workers (Python)": sum(cpu_seconds(p) for p in self.workers.all_pids()),
            "simulator": cpu_seconds(self.box.sim.pid),
            "PostgreSQL backends": sum(cpu_seconds(p) for p in self.box.backend_pids()),
            "Redis server": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        }

    def __enter__(self) -> CpuMeter:
        self.start = self._read()
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.monotonic() - self._t0
        end = self._read()
        self.spent = {k: max(end[k] - self.start[k], 0.0) for k in end}

    def rows(self, orders: int) -> list[list[str]]:
        capacity = (os.cpu_count() or 1) * self.wall_s
        total = sum(self.spent.values())
        out = [
            [name, f"{s * 1000 / orders:.2f}", f"{100 * s / capacity:.0f} %"]
            for name, s in self.spent.items()
        ]
        out.append(["**total**", f"{total * 1000 / orders:.2f}", f"{100 * total / capacity:.0f} %"])
        return out


# -- drains --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drain:
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def drain(
    send: Callable[[], None],
    done: Callable[[], int],
    n: int,
    *,
    timeout_s: float,
    poll_s: float,
    finished_at: Callable[[], float] | None = None,
    on_poll: Callable[[int], None] | None = None,
) -> Drain:
    """Time from the first message sent to the n-th one done. `done` counts from zero at the
    start; `finished_at` (epoch seconds) replaces the poll's own clock when given."""
    start = time.time()
    send()
    deadline = time.monotonic() + timeout_s
    while (count := done()) < n:
        if on_poll is not None:
            on_poll(count)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} of {n} done after {timeout_s:.0f} s")
        time.sleep(poll_s)
    end = time.time()
    if finished_at is not None:
        end = min(end, finished_at())
    return Drain(n, end - start)


def drain_noop(box: Sandbox, n: int, *, timeout_s: float, nap_ms: float | None = None) -> Drain:
    """n messages through the no-op actor (bench/noop_actors.py): the baseline. With nap_ms,
    through the actor that sleeps that long instead."""
    box.reset_noop()
    queue, actor, arg = (
        (NOOP_QUEUE, NOOP_ACTOR, "x") if nap_ms is None else (NAP_QUEUE, NAP_ACTOR, str(nap_ms))
    )
    return drain(
        lambda: box.enqueue(queue, actor, [arg] * n),
        box.noop_done,
        n,
        timeout_s=timeout_s,
        poll_s=0.002,
    )


def drain_orders(
    box: Sandbox,
    n: int,
    *,
    timeout_s: float,
    poll_s: float = 0.05,
    on_poll: Callable[[int], None] | None = None,
) -> Drain:
    """n new orders through fulfill_order, from the first enqueue to the last success row."""
    ids = box.create_orders(n)
    before = box.successes()
    return drain(
        lambda: box.enqueue(FULFILLMENT_QUEUE, FULFILL_ACTOR, ids),
        lambda: box.successes() - before,
        n,
        timeout_s=timeout_s,
        poll_s=poll_s,
        finished_at=box.last_success_at,
        on_poll=on_poll,
    )


def noop_workers(
    box: Sandbox, processes: int, threads: int, *, nap_ms: float | None = None
) -> Workers:
    """A group of the no-op actor (or of the napping one), warmed up: its processes are up
    and consuming."""
    queue = NOOP_QUEUE if nap_ms is None else NAP_QUEUE
    workers = Workers(box, "bench.noop_actors", queue, processes=processes, threads=threads)
    try:
        drain_noop(
            box, (20 if nap_ms is None else 2) * processes * threads, timeout_s=120, nap_ms=nap_ms
        )
    except BaseException:
        workers.stop()
        raise
    return workers


def pipeline_workers(
    box: Sandbox,
    processes: int,
    threads: int,
    env: dict[str, str] | None = None,
    *,
    tree: Path | None = None,
) -> Workers:
    """A group of the real fleet (`workers.actors`, queue fulfillment), warmed up. `tree`: the
    worker code of another copy of the repository (same schema) instead of this one."""
    root = (tree or ROOT).resolve()
    workers = Workers(
        box,
        "workers.actors",
        FULFILLMENT_QUEUE,
        processes=processes,
        threads=threads,
        env={"PYTHONPATH": str(root), **(env or {})},
        cwd=root,
    )
    try:
        drain_orders(box, 10 * processes * threads, timeout_s=120)
    except BaseException:
        workers.stop()
        raise
    return workers


# -- numbers and tables --------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(int(-(-p * len(ordered) // 100)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, columns padded for the terminal (pasted as is into the docs)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def show(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(f"\n{title}\n\n{table(headers, rows)}\n", flush=True)
