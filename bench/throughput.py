"""Throughput of one worker process against the simulator at zero latency.

Prints orders/s through the whole pipeline (claim, signed vendor call over HTTP, log row,
status update, ack) and the same process/thread count draining a no-op Dramatiq actor on the
same Redis: the ratio is the figure to compare across machines (absolute times drift).

    .venv/bin/python bench/throughput.py [--orders 2000] [--processes 1] [--threads 8]

Uses DATABASE_URL / REDIS_URL when set, else the local servers on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dramatiq
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from db.migrate import migrate  # noqa: E402
from fulfillment.bootstrap import build_broker  # noqa: E402
from fulfillment.embedded import free_port  # noqa: E402

BIN = Path(sys.executable).parent


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    db_url = _fresh_db(server, "fulfillment_bench")
    migrate(db_url)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=db_url,
        REDIS_URL=redis_url,
        REDIS_NAMESPACE=namespace,
        AT_ISHARE_API_URL=f"http://127.0.0.1:{port}/v1",
        AT_ISHARE_API_KEY="bench",
        AT_ISHARE_API_SECRET="bench-secret",
        LOG_FORMAT="json",
        PYTHONPATH=str(ROOT),
        DB_POOL_MAX_SIZE=str(args.threads + 2),
    )
    sim = subprocess.Popen(
        [str(BIN / "fulfillment"), "sim", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert sim.stdout is not None
    sim.stdout.readline()  # "simulator listening on ..."
    client = redis.Redis.from_url(redis_url)
    try:
        base = _baseline(args, env, client, namespace)
        full = _pipeline(args, env, db_url, namespace)
    finally:
        os.killpg(sim.pid, signal.SIGTERM)
        sim.wait()
        for key in client.scan_iter(match=f"{namespace}*"):
            client.delete(key)
    print(
        f"\nmachine: {os.cpu_count()} cores; {args.orders} messages; "
        f"{args.processes} process(es) x {args.threads} threads"
    )
    print(f"baseline  no-op actor        {base:8.1f} msg/s")
    print(f"pipeline  fulfill_order      {full:8.1f} orders/s")
    print(f"ratio     pipeline/baseline  {full / base:8.3f}")
    return 0


def _fresh_db(server: str, name: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(server)._replace(path="/" + name))


def _worker(
    module: str, queue: str, args: argparse.Namespace, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(BIN / "dramatiq"),
            module,
            "--queues",
            queue,
            "--processes",
            str(args.processes),
            "--threads",
            str(args.threads),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def _timed(enqueue: object, done: object, n: int) -> float:
    start = time.perf_counter()
    enqueue()  # type: ignore[operator]
    while done() < n:  # type: ignore[operator]
        time.sleep(0.01)
    return n / (time.perf_counter() - start)


def _baseline(
    args: argparse.Namespace, env: dict[str, str], client: redis.Redis, namespace: str
) -> float:
    broker = build_broker(env["REDIS_URL"], namespace)
    worker = _worker("bench.noop_actors", "bench-noop", args, env)
    key = f"{namespace}:bench-done"

    def send(n: int) -> None:
        for _ in range(n):
            broker.enqueue(
                dramatiq.Message(
                    queue_name="bench-noop",
                    actor_name="noop",
                    args=(str(uuid.uuid4()),),
                    kwargs={},
                    options={},
                )
            )

    try:
        send(50)  # warm-up: the worker is up once these are done
        while int(client.get(key) or 0) < 50:
            time.sleep(0.05)
        client.set(key, 0)
        return _timed(lambda: send(args.orders), lambda: int(client.get(key) or 0), args.orders)
    finally:
        _stop(worker)


def _pipeline(args: argparse.Namespace, env: dict[str, str], db_url: str, namespace: str) -> float:
    broker = build_broker(env["REDIS_URL"], namespace)
    worker = _worker("workers.actors", "fulfillment", args, env)

    def create(n: int) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(n)]
        with psycopg.connect(db_url) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO orders (id, phone_number, network, size_gb) "
                "VALUES (%s, '+233261234567', 'at-ishare', 1)",
                [(i,) for i in ids],
            )
        return ids

    def send(ids: list[str]) -> None:
        for oid in ids:
            broker.enqueue(
                dramatiq.Message(
                    queue_name="fulfillment",
                    actor_name="fulfill_order",
                    args=(oid,),
                    kwargs={},
                    options={},
                )
            )

    def successes() -> int:
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM orders WHERE fulfillment_status = 'success'"
            ).fetchone()
            return int(row[0]) if row else 0

    try:
        send(create(50))
        while successes() < 50:
            time.sleep(0.05)
        ids = create(args.orders)
        return _timed(lambda: send(ids), lambda: successes() - 50, args.orders)
    finally:
        _stop(worker)


if __name__ == "__main__":
    sys.exit(main())
