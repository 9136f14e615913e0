"""Admin queries at scale: list, filter, phone search, stats, detail and CSV export.

Builds (or reuses) the database fulfillment_bench_admin with N orders and 3N fulfillment_logs
rows generated server-side (INSERT ... SELECT FROM generate_series), then times the admin
service (services/admin.py, the code the dashboard, API and CLI call) against it. Every figure
is printed in ms and as a ratio to a primary-key lookup measured in the same run (absolute
times drift on shared machines), with EXPLAIN (ANALYZE, BUFFERS) summaries proving index use.

    .venv/bin/python -m bench.admin_queries [--orders 1000000] [--runs 5] [--reuse] [--keep]

--reuse skips the load when the database already holds at least --orders orders (it exists
only after a run with --keep: the database, about 1.6 GB at 1M orders, is dropped otherwise).
Uses DATABASE_URL's server when set, else postgresql://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from db.admin_store import Keyset, OrderFilter
from db.migrate import migrate
from db.queries import q
from db.store import Store, open_pool
from fulfillment.services.admin import AdminService, decode_cursor, encode_cursor, search_key

DB_NAME = "fulfillment_bench_admin"
TABLES = ("orders", "fulfillment_logs")
VIEWS = ("pending", "processing", "success", "failed", "dead_lettered", "open_dead_letters")
PAGE = 50
DEEP_PAGES = 200

# -- data ----------------------------------------------------------------------------------
# One statement per table, all server-side. Orders: created_at spread evenly over 90 days;
# status ~93 % success, 2 % failed waiting for a retry, 1 % pending, 1 % processing, 3 %
# dead-lettered (a fifth of those dismissed); one customer in five places ~5 orders, the
# number stored in a different format each time ('0241234567', '+233241234567',
# '233241234567', '024 123 4567'); successes fulfilled a few seconds after creation (30 s
# more per retry). OFFSET 0 keeps each random() draw evaluated once per row.
LOAD_ORDERS = """
INSERT INTO orders (
    id, phone_number, network, size_gb, package_name, created_at, updated_at,
    fulfillment_status, fulfillment_attempts, fulfillment_in_flight_attempt,
    fulfillment_status_checks, next_attempt_at, last_enqueued_at, claim_token, claim_expires_at,
    last_error_code, last_error_message, dead_letter_reason, dead_letter_requested_at,
    dead_lettered_at, dead_letter_dismissed_at, dead_letter_dismissed_by, fulfilled_at,
    vendor_transaction_id)
SELECT
    md5('bench-order-' || d.i)::uuid,
    CASE WHEN d.r_fmt < 0.40 THEN '0' || d.msisdn9
         WHEN d.r_fmt < 0.75 THEN '+233' || d.msisdn9
         WHEN d.r_fmt < 0.90 THEN '233' || d.msisdn9
         ELSE '0' || substr(d.msisdn9, 1, 2) || ' ' || substr(d.msisdn9, 3, 3) || ' '
              || substr(d.msisdn9, 6) END,
    'at-ishare', d.size_gb, d.size_gb || 'GB data bundle', d.created_at,
    coalesce(d.fulfilled_at, d.dead_lettered_at, d.created_at + interval '5 seconds'),
    CASE d.kind WHEN 'dead' THEN 'failed' ELSE d.kind END,
    d.attempts,
    CASE WHEN d.kind = 'processing' AND d.r_att < 0.5 THEN 1 END,
    CASE WHEN d.kind = 'processing' AND d.r_att >= 0.5 THEN 1
         WHEN d.kind = 'dead' AND d.r_err >= 0.9 THEN 5 ELSE 0 END,
    CASE WHEN d.kind = 'failed' THEN d.created_at + d.attempts * interval '30 seconds'
         WHEN d.kind = 'processing' AND d.r_att >= 0.5 THEN d.created_at + interval '60 seconds'
    END,
    d.created_at,
    CASE WHEN d.kind = 'processing' AND d.r_att < 0.5 THEN md5('claim-' || d.i)::uuid END,
    CASE WHEN d.kind = 'processing' AND d.r_att < 0.5 THEN d.created_at + interval '60 seconds'
    END,
    d.error_code,
    CASE d.error_code
         WHEN 'TIMEOUT' THEN 'vendor did not answer within 10 s'
         WHEN 'SERVICE_UNAVAILABLE' THEN 'vendor answered 503 Service Unavailable'
         WHEN 'VENDOR_ERROR' THEN 'vendor answered 500 Internal Server Error'
         WHEN 'INSUFFICIENT_BALANCE' THEN 'reseller wallet balance too low for this bundle'
         WHEN 'INVALID_PHONE' THEN 'recipient is not an AirtelTigo number' END,
    CASE WHEN d.kind <> 'dead' THEN NULL
         WHEN d.r_err < 0.6 THEN '3 attempts used up; last error ' || d.error_code
         WHEN d.r_err < 0.9 THEN 'vendor rejected the order: ' || d.error_code
         ELSE 'vendor outcome still unknown after 5 status checks; check by hand' END,
    d.dead_lettered_at - interval '1 second',
    d.dead_lettered_at,
    CASE WHEN d.kind = 'dead' AND d.r_dur < 0.2
         THEN least(now(), d.dead_lettered_at + interval '1 day') END,
    CASE WHEN d.kind = 'dead' AND d.r_dur < 0.2 THEN 'ops@example.com' END,
    d.fulfilled_at,
    CASE WHEN d.kind = 'success'
              OR (d.kind = 'processing' AND d.r_att >= 0.5)
         THEN 'ATX' || upper(substr(md5('tx-' || d.i), 1, 16)) END
FROM (
    SELECT c.*,
           CASE WHEN c.kind = 'success'
                THEN c.created_at
                     + make_interval(secs => 1.5 - ln(1 - c.r_dur) * 2.5 + (c.attempts - 1) * 30)
           END AS fulfilled_at,
           CASE WHEN c.kind = 'dead' THEN c.created_at + interval '2 minutes' END
               AS dead_lettered_at,
           CASE WHEN c.kind = 'failed' OR (c.kind = 'dead' AND c.r_err < 0.6) THEN
                    CASE WHEN c.r_dur < 0.5 THEN 'TIMEOUT'
                         WHEN c.r_dur < 0.8 THEN 'SERVICE_UNAVAILABLE'
                         ELSE 'VENDOR_ERROR' END
                WHEN c.kind = 'dead' AND c.r_err < 0.8 THEN 'INSUFFICIENT_BALANCE'
                WHEN c.kind = 'dead' AND c.r_err < 0.9 THEN 'INVALID_PHONE'
           END AS error_code
    FROM (
        SELECT b.*,
               CASE WHEN b.kind = 'success'
                         THEN CASE WHEN b.r_att < 0.85 THEN 1 WHEN b.r_att < 0.96 THEN 2 ELSE 3 END
                    WHEN b.kind = 'failed' THEN CASE WHEN b.r_att < 0.5 THEN 1 ELSE 2 END
                    WHEN b.kind = 'processing' THEN 1
                    WHEN b.kind = 'dead' THEN CASE WHEN b.r_err < 0.6 THEN 3 ELSE 1 END
                    ELSE 0 END AS attempts
        FROM (
            SELECT a.*,
                   CASE WHEN a.r_status < 0.93 THEN 'success'
                        WHEN a.r_status < 0.95 THEN 'failed'
                        WHEN a.r_status < 0.96 THEN 'pending'
                        WHEN a.r_status < 0.97 THEN 'processing'
                        ELSE 'dead' END AS kind,
                   ('{24,54,55,59,20,50,26,27,56,57}'::text[])[1 + mod(a.customer, 10)]
                       || lpad(mod(a.customer * 7919 + 104729, 10000000)::text, 7, '0')
                       AS msisdn9,
                   CASE WHEN a.r_size < 0.30 THEN 1 WHEN a.r_size < 0.55 THEN 2
                        WHEN a.r_size < 0.70 THEN 3 WHEN a.r_size < 0.85 THEN 5
                        WHEN a.r_size < 0.93 THEN 10 WHEN a.r_size < 0.97 THEN 20
                        ELSE 50 END::numeric AS size_gb
            FROM (
                SELECT i,
                       now() - interval '90 days'
                           + (i - random()) / %(n)s::float8 * interval '90 days' AS created_at,
                       random() AS r_status, random() AS r_att, random() AS r_err,
                       random() AS r_dur, random() AS r_fmt, random() AS r_size,
                       floor(random() * %(customers)s)::bigint AS customer
                FROM generate_series(1, %(n)s) AS i
                OFFSET 0
            ) a
            OFFSET 0
        ) b
        OFFSET 0
    ) c
    OFFSET 0
) d
"""

# Three log rows per order: purchases 1..A (earlier ones failed), then status checks of
# attempt A; the third row carries the order's outcome.
LOAD_LOGS = """
INSERT INTO fulfillment_logs (
    order_id, network, phone_number, action, status, attempt_number, max_attempts,
    http_status, api_response, error_code, error_message, latency_ms, retry_after,
    fulfilled_at, vendor_transaction_id, worker, created_at)
SELECT l.order_id, 'at-ishare', l.phone_number,
       CASE WHEN l.k <= l.a THEN 'purchase' ELSE 'status_check' END,
       l.status, least(l.k, l.a), 3,
       CASE WHEN l.status = 'success' THEN 200 WHEN l.status = 'pending' THEN 202
            WHEN l.error_code = 'TIMEOUT' THEN NULL
            WHEN l.error_code = 'SERVICE_UNAVAILABLE' THEN 503
            WHEN l.error_code = 'INSUFFICIENT_BALANCE' THEN 402
            WHEN l.error_code = 'INVALID_PHONE' THEN 422 ELSE 500 END,
       CASE WHEN l.error_code IS DISTINCT FROM 'TIMEOUT' THEN
            jsonb_build_object('status', l.status, 'reference', l.order_id,
                               'transactionId', l.txid, 'code', l.error_code,
                               'message', coalesce(l.error_message, 'accepted')) END,
       l.error_code, l.error_message,
       CASE WHEN l.error_code = 'TIMEOUT' THEN 10000 ELSE 80 + (random() * 400)::int END,
       CASE WHEN l.status = 'failed' AND l.k < 3 THEN l.created_at + interval '30 seconds' END,
       CASE WHEN l.status = 'success' THEN l.fulfilled_at END,
       CASE WHEN l.status IN ('success', 'pending') THEN l.txid END,
       'worker-' || mod(l.k + get_byte(decode(md5(l.order_id::text), 'hex'), 0), 8),
       l.created_at
FROM (
    SELECT s.*,
           CASE WHEN s.status = 'failed' THEN coalesce(s.last_error_code, 'TIMEOUT') END
               AS error_code,
           CASE WHEN s.status = 'failed'
                THEN coalesce(s.last_error_message, 'vendor did not answer within 10 s') END
               AS error_message
    FROM (
        SELECT o.id AS order_id, o.phone_number, g.k,
               greatest(o.fulfillment_attempts, 1) AS a,
               o.vendor_transaction_id AS txid, o.fulfilled_at,
               o.last_error_code, o.last_error_message,
               CASE WHEN g.k < greatest(o.fulfillment_attempts, 1) THEN 'failed'
                    WHEN g.k < 3 THEN 'pending'
                    WHEN o.fulfillment_status = 'success' THEN 'success'
                    WHEN o.fulfillment_status = 'failed' THEN 'failed'
                    ELSE 'pending' END AS status,
               CASE WHEN g.k = 3
                    THEN coalesce(o.fulfilled_at, o.dead_lettered_at - interval '2 seconds',
                                  o.created_at + interval '6 seconds')
                    ELSE o.created_at + g.k * interval '2 seconds' END AS created_at
        FROM orders o
        CROSS JOIN LATERAL (SELECT k FROM generate_series(1, 3) AS k OFFSET 0) g
    ) s
    OFFSET 0
) l
"""


# -- database ------------------------------------------------------------------------------


def _db_url(server: str, name: str) -> str:
    return urlunsplit(urlsplit(server)._replace(path="/" + name))


def _existing_orders(server: str, db_url: str) -> int | None:
    """Orders in the bench database, None when it (or its orders table) does not exist."""
    with psycopg.connect(server, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
    if not found:
        return None
    with psycopg.connect(db_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('orders')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
        return int(row[0]) if row else 0


def _create_db(server: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def _drop_db(server: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def load(db_url: str, n: int) -> dict[str, float]:
    """Fill the freshly migrated tables; secondary indexes are dropped and rebuilt around the
    load (a bulk build is several times faster than maintaining them row by row)."""
    steps: dict[str, float] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("SET work_mem = '64MB'")
        conn.execute("SELECT setseed(0.42)")
        indexes = conn.execute(
            """
            SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
            FROM pg_index i
            WHERE i.indrelid IN ('orders'::regclass, 'fulfillment_logs'::regclass)
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
            ORDER BY 1
            """
        ).fetchall()
        for name, _ in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        t0 = time.perf_counter()
        conn.execute(LOAD_ORDERS.encode(), {"n": n, "customers": max(n // 5, 1)})
        steps["orders"] = time.perf_counter() - t0
        print(f"  orders            {n:>10,} rows  {steps['orders']:7.1f} s", flush=True)
        t0 = time.perf_counter()
        cur = conn.execute(LOAD_LOGS.encode())
        steps["fulfillment_logs"] = time.perf_counter() - t0
        print(
            f"  fulfillment_logs  {cur.rowcount:>10,} rows  {steps['fulfillment_logs']:7.1f} s",
            flush=True,
        )
        t0 = time.perf_counter()
        for _, ddl in indexes:
            conn.execute(ddl.encode())
        steps["indexes"] = time.perf_counter() - t0
        print(
            f"  {len(indexes)} secondary indexes rebuilt      {steps['indexes']:7.1f} s", flush=True
        )
        t0 = time.perf_counter()
        for table in TABLES:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        steps["vacuum analyze"] = time.perf_counter() - t0
        print(f"  VACUUM ANALYZE                    {steps['vacuum analyze']:7.1f} s", flush=True)
    return steps


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Figure:
    label: str
    rows: int
    samples: list[float]  # seconds
    note: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.samples)
        return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)] * 1000


def _time(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    """One untimed warm-up call, then `runs` timed calls; the last result is returned."""
    result = fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t0)
    return samples, result


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _Sink:
    """Where the CSV goes: counted, not kept (the web streams it to the client)."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


@dataclass
class Export:
    label: str
    rows: int = 0
    chars: int = 0
    samples: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)  # current RSS every 100k rows (last run)
    maxrss_growth_mb: float = 0.0
    traced_peak_mb: float = 0.0


def _export_once(svc: AdminService, flt: OrderFilter, export: Export, traced: bool) -> None:
    sink = _Sink()
    writer = csv.writer(sink)
    rss: list[float] = [_rss_mb()]
    if traced:
        tracemalloc.start()
    t0 = time.perf_counter()
    rows = -1  # the header is not a row
    for rows, line in enumerate(svc.export_rows(flt)):
        writer.writerow(line)
        if rows % 100_000 == 0 and rows:
            rss.append(_rss_mb())
    elapsed = time.perf_counter() - t0
    if traced:
        export.traced_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        return
    rss.append(_rss_mb())
    export.samples.append(elapsed)
    export.rows, export.chars, export.rss_mb = rows, sink.chars, rss


def measure_export(svc: AdminService, flt: OrderFilter, label: str, runs: int) -> Export:
    export = Export(label)
    before = _maxrss_mb()
    for _ in range(runs):
        _export_once(svc, flt, export, traced=False)
    export.maxrss_growth_mb = _maxrss_mb() - before
    _export_once(svc, flt, export, traced=True)  # untimed: tracemalloc slows Python down
    return export


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def explain(store: Store, query: sql.Composable, params: dict[str, Any]) -> str:
    """One line: top node, scans (index or sequential), execution time, buffers."""
    with store.pool.connection() as conn:
        row = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}").format(query), params
        ).fetchone()
    assert row is not None
    doc = next(iter(row.values()))[0]
    plan = doc["Plan"]
    scans = []
    for node in _walk(plan):
        kind = ("Parallel " if node.get("Parallel Aware") else "") + node["Node Type"]
        if "Index Name" in node:
            scans.append(f"{kind} using {node['Index Name']}")
        elif node["Node Type"] == "Seq Scan":
            scans.append(f"{kind} on {node['Relation Name']}")
        elif "Workers Launched" in node:
            scans.append(f"{kind} ({node['Workers Launched']} workers)")
    buffers = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    seq = any("Seq Scan" in s for s in scans)
    index = any("Index" in s for s in scans)
    indexed = ("partly (seq scan)" if seq else "yes") if index else "NO (seq scan)"
    return (
        f"{plan['Node Type']} | {'; '.join(scans)} | {indexed} | "
        f"{doc['Execution Time']:.2f} ms | {buffers} buffers"
    )


class Bench:
    def __init__(self, svc: AdminService, runs: int) -> None:
        self.svc = svc
        self.store = svc.store
        self.runs = runs
        self.figures: list[Figure] = []
        self.plans: list[tuple[str, str]] = []

    def add(self, label: str, fn: Callable[[], Any], *, note: str = "") -> Any:
        samples, result = _time(fn, self.runs)
        rows = _rows(result)
        self.figures.append(Figure(label, rows, samples, note))
        return result

    def plan(self, label: str, query: sql.Composable, params: dict[str, Any]) -> None:
        self.plans.append((label, explain(self.store, query, params)))

    def plan_list(self, label: str, flt: OrderFilter, after: Keyset | None = None) -> None:
        query, params = self.svc.admin._compose(flt, after, PAGE + 1)
        self.plan(label, query, params)

    def raw(self, query: sql.Composable, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self.store.pool.connection() as conn:
            rows: list[dict[str, Any]] = conn.execute(query, params).fetchall()
            return rows


def _rows(result: Any) -> int:
    if hasattr(result, "rows"):
        return len(result.rows)
    if isinstance(result, dict) and "attempts" in result:
        return len(result["attempts"])
    if isinstance(result, list):
        return len(result)
    return 1


def run(bench: Bench, n_orders: int, export_runs: int) -> dict[str, Any]:
    svc, store, runs = bench.svc, bench.store, bench.runs
    out: dict[str, Any] = {}
    ids = [
        str(r["id"]) for r in bench.raw(sql.SQL("SELECT id FROM orders ORDER BY id LIMIT 500"), {})
    ]
    reps = max(runs * 40, 200)
    samples, _ = _time(store.ping, reps)
    out["select1"] = Figure("baseline: `SELECT 1` round trip", 1, samples)
    pk = iter(ids * (reps // len(ids) + 2))
    samples, _ = _time(lambda: store.order_row(next(pk)), reps)
    out["pk"] = Figure("baseline: `SELECT * FROM orders WHERE id = $1`", 1, samples)

    everything = svc.make_filter()
    first = bench.add("list, first page (all, 50 rows)", lambda: svc.list(everything, limit=PAGE))
    bench.plan_list("list, first page (all)", everything)
    assert len(first.rows) == PAGE

    cursor = None
    t0 = time.perf_counter()
    for _ in range(DEEP_PAGES):
        cursor = svc.list(everything, cursor=cursor, limit=PAGE).next_cursor
    out["walk_ms_per_page"] = (time.perf_counter() - t0) / DEEP_PAGES * 1000
    assert cursor is not None
    depth = DEEP_PAGES * PAGE
    bench.add(
        f"list, page {DEEP_PAGES + 1} by keyset cursor ({depth:,} rows deep)",
        lambda: svc.list(everything, cursor=cursor, limit=PAGE),
    )
    bench.plan_list(f"list, page {DEEP_PAGES + 1} (keyset)", everything, decode_cursor(cursor))
    half = n_orders // 2
    mid_row = bench.raw(
        sql.SQL(
            "SELECT created_at, id FROM orders WHERE fulfillment_status IS NOT NULL "
            "ORDER BY created_at DESC, id DESC OFFSET %(o)s LIMIT 1"
        ),
        {"o": half - 1},
    )[0]
    mid = encode_cursor(mid_row)
    bench.add(
        f"list, page at {half:,} rows deep by keyset cursor",
        lambda: svc.list(everything, cursor=mid, limit=PAGE),
    )
    for offset in (depth, half):
        query, params = svc.admin._compose(everything, None, PAGE + 1)
        by_offset = sql.Composed([query, sql.SQL(" OFFSET %(offset)s")])
        params = {**params, "limit": PAGE, "offset": offset}
        bench.add(
            f"(contrast, not used) the same page by OFFSET {offset:,}",
            partial(bench.raw, by_offset, params),
        )

    for view in VIEWS:
        flt = svc.make_filter(view=view)
        bench.add(f"filter `{view}`, first page", partial(svc.list, flt, limit=PAGE))
        bench.plan_list(f"filter `{view}`", flt)

    msisdn, stored = _searchable_number(bench)
    local = "0" + msisdn[3:]
    typed = (f"{local[:3]} {local[3:6]} {local[6:]}", "+" + msisdn, msisdn)
    found = []
    for text in typed:
        flt = svc.make_filter(phone=text)
        keep = next(p for p in ("+233", "233", "0") if text.startswith(p))
        shape = keep + "".join("N" if c.isdigit() else c for c in text[len(keep) :])
        page = bench.add(f"phone search typed `{shape}`", partial(svc.list, flt, limit=PAGE))
        found.append([r["id"] for r in page.rows])
    assert found[0], "the sampled number has no orders"
    assert found[0] == found[1] == found[2], "the three spellings disagree"
    out["phone"] = (msisdn, len(found[0]), stored)
    bench.plan_list("phone search", svc.make_filter(phone=typed[0]))
    dead_phone = bench.raw(
        sql.SQL(
            "SELECT phone_number FROM orders WHERE dead_lettered_at IS NOT NULL "
            "ORDER BY created_at DESC LIMIT 1"
        ),
        {},
    )[0]["phone_number"]
    flt = svc.make_filter(view="dead_lettered", phone=dead_phone)
    bench.add(
        "phone search + filter `dead_lettered`",
        lambda: svc.list(flt, limit=PAGE),
    )
    bench.plan_list("phone search + dead_lettered", flt)
    missing = svc.make_filter(phone="020 000 0001")
    bench.add("phone search, number with no orders", lambda: svc.list(missing, limit=PAGE))

    stats = bench.add("stats() (dashboard cards)", svc.stats)
    out["stats"] = stats
    bench.plan("stats (order_stats)", sql.SQL(q("order_stats")), {})

    dead = svc.list(svc.make_filter(view="dead_lettered"), limit=1).rows[0]["id"]
    bench.add("order detail (order, attempts, audit, notifications)", lambda: svc.detail(dead))
    bench.plan("detail: order_logs", sql.SQL(q("order_logs")), {"order_id": dead})

    print("  exporting ...", flush=True)
    out["exports"] = [
        measure_export(svc, svc.make_filter(view="dead_lettered"), "dead_lettered", runs),
        measure_export(svc, everything, "all", export_runs),
    ]
    return out


def _searchable_number(bench: Bench) -> tuple[str, int]:
    """A number with several orders stored in different formats: (msisdn, formats)."""
    best = ("", -1, -1)
    sample = bench.raw(sql.SQL("SELECT phone_number FROM orders ORDER BY id LIMIT 40"), {})
    for row in sample:
        msisdn = search_key(row["phone_number"]) or ""
        counts = bench.raw(
            sql.SQL(
                "SELECT count(*) AS n, count(DISTINCT phone_number) AS formats "
                "FROM orders WHERE ghana_msisdn(phone_number) = %(m)s"
            ),
            {"m": msisdn},
        )[0]
        key = (msisdn, int(counts["formats"]), int(counts["n"]))
        if (key[1], key[2]) > (best[1], best[2]):
            best = key
    return best[0], best[1]


# -- a candidate fix, tried in the bench database only -------------------------------------
# order_stats reads every order (parallel seq scan of the heap). An index holding exactly the
# columns it counts lets it run as an index-only scan; B-tree deduplication keeps it small
# (most rows are ('success', NULL, NULL)). It leads with fulfillment_status, so it can replace
# orders_fulfillment_status_idx rather than add a write.
CANDIDATE_DROP = "DROP INDEX IF EXISTS orders_fulfillment_status_idx"
CANDIDATE_ADD = (
    "CREATE INDEX IF NOT EXISTS orders_status_counts_idx "
    "ON orders (fulfillment_status, dead_lettered_at, dead_letter_dismissed_at)"
)
RESTORE_DROP = "DROP INDEX IF EXISTS orders_status_counts_idx"
RESTORE_ADD = (
    "CREATE INDEX IF NOT EXISTS orders_fulfillment_status_idx ON orders (fulfillment_status)"
)


def _ddl(db_url: str, *statements: str) -> float:
    t0 = time.perf_counter()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        for stmt in statements:
            conn.execute(stmt.encode())
    return time.perf_counter() - t0


def try_stats_index(bench: Bench, db_url: str) -> dict[str, Any]:
    """stats() just before, with the candidate, and again after restoring schema.sql's
    indexes (A/B/A: the machine is shared, so the before figure is taken twice)."""
    svc = bench.svc
    trial = Bench(svc, bench.runs)
    trial.add("stats(), schema.sql indexes (just before)", svc.stats)
    build_s = _ddl(db_url, CANDIDATE_ADD, CANDIDATE_DROP, "VACUUM ANALYZE orders")
    try:
        with bench.store.pool.connection() as conn:
            size = conn.execute(
                "SELECT pg_size_pretty(pg_relation_size('orders_status_counts_idx')) AS s"
            ).fetchone()
        trial.add("stats() with orders_status_counts_idx", svc.stats)
        trial.plan("stats (order_stats)", sql.SQL(q("order_stats")), {})
        for view in VIEWS:
            flt = svc.make_filter(view=view)
            trial.add(f"filter `{view}`, first page", partial(svc.list, flt, limit=PAGE))
            trial.plan_list(f"filter `{view}`", flt)
        trial.plan("unfinished_count", sql.SQL(q("unfinished_count")), {})
    finally:
        _ddl(db_url, RESTORE_ADD, RESTORE_DROP, "ANALYZE orders")
    trial.add("stats(), schema.sql indexes (just after)", svc.stats)
    return {"build_s": build_s, "size": size["s"] if size else "?", "bench": trial}


# -- report --------------------------------------------------------------------------------


def _table(figures: list[Figure], pk_ms: float) -> None:
    print("| query | rows | median ms | p95 ms | x PK lookup |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for f in figures:
        print(
            f"| {f.label} | {f.rows:,} | {f.median_ms:.2f} | {f.p95_ms:.2f} "
            f"| {f.median_ms / pk_ms:,.1f} |"
        )


def _plans(plans: list[tuple[str, str]]) -> None:
    print("| query | top node | scans | index? | execution | buffers |")
    print("| --- | --- | --- | --- | ---: | ---: |")
    for label, line in plans:
        print(f"| {label} | {line} |")


def report(bench: Bench, out: dict[str, Any], trial: dict[str, Any], context: str) -> None:
    pk: Figure = out["pk"]
    pk_ms = pk.median_ms
    print(f"\n## Results\n\n{context}\n")
    _table([out["select1"], pk], pk_ms)
    print()
    _table(bench.figures, pk_ms)
    print(
        f"\nWalking {DEEP_PAGES} pages by cursor from the top: "
        f"{out['walk_ms_per_page']:.2f} ms per page on average."
    )
    msisdn, rows, formats = out["phone"]
    print(
        f"Phone search: {msisdn[:5]}*****{msisdn[-2:]} has {rows} orders stored in {formats} "
        "different formats; all three spellings found the same rows."
    )
    stats = out["stats"]
    print("stats():", ", ".join(f"{k}={v}" for k, v in stats.items()))
    print("\n### CSV export (AdminService.export_rows through csv.writer)\n")
    print(
        "| export | rows | CSV | median s | p95 s | rows/s | x PK lookup "
        "| peak RSS growth | RSS every 100k rows (MB) | tracemalloc peak |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for e in out["exports"]:
        med = statistics.median(e.samples)
        p95 = sorted(e.samples)[max(math.ceil(0.95 * len(e.samples)) - 1, 0)]
        rss = " → ".join(f"{v:.0f}" for v in e.rss_mb)
        print(
            f"| {e.label} ({len(e.samples)} runs) | {e.rows:,} | {e.chars / 2**20:.0f} MB "
            f"| {med:.2f} | {p95:.2f} | {e.rows / med:,.0f} | {med * 1000 / pk_ms:,.0f} "
            f"| {e.maxrss_growth_mb:+.1f} MB | {rss} | {e.traced_peak_mb:.1f} MB |"
        )
    print("\n### EXPLAIN (ANALYZE, BUFFERS)\n")
    _plans(bench.plans)
    tb: Bench = trial["bench"]
    before = statistics.median(tb.figures[0].samples + tb.figures[-1].samples) * 1000
    after = tb.figures[1].median_ms
    print(
        f"\n### Candidate: {CANDIDATE_ADD.split(' IF NOT EXISTS ')[1]}"
        f"\n(replacing orders_fulfillment_status_idx; built in {trial['build_s']:.1f} s "
        f"with VACUUM ANALYZE, {trial['size']})\n"
    )
    _table(tb.figures, pk_ms)
    print(
        f"\nstats(): {before:.1f} ms (median of the before and after runs) → {after:.1f} ms "
        f"with the candidate ({before / after:.2f}x faster)\n"
    )
    _plans(tb.plans)


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--orders", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=5, help="timed runs per query (after a warm-up)")
    p.add_argument(
        "--export-runs", type=int, default=None, help="timed runs of the full export (--runs)"
    )
    p.add_argument("--reuse", action="store_true", help="keep the data when big enough")
    p.add_argument("--keep", action="store_true", help="leave the database for --reuse")
    args = p.parse_args()
    started = time.perf_counter()
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    db_url = _db_url(server, DB_NAME)
    existing = _existing_orders(server, db_url) if args.reuse else None
    try:
        if existing is not None and existing >= args.orders:
            print(f"reusing {DB_NAME}: {existing:,} orders")
            # try_stats_index's A/B/A leaves the bench database's indexes changed by hand
            migrate(db_url, accept_drift=True)
            n_orders = existing
        else:
            print(f"loading {DB_NAME}: {args.orders:,} orders, {3 * args.orders:,} log rows")
            _create_db(server)
            t0 = time.perf_counter()
            migrate(db_url)
            load(db_url, args.orders)
            print(f"  load total                        {time.perf_counter() - t0:7.1f} s")
            n_orders = args.orders
        pool = open_pool(db_url, min_size=2, max_size=4)
        try:
            with pool.connection() as conn:
                info = conn.execute(
                    """
                    SELECT current_setting('server_version') AS version,
                           (SELECT count(*) FROM fulfillment_logs) AS logs,
                           pg_size_pretty(pg_total_relation_size('orders')) AS orders_size,
                           pg_size_pretty(pg_total_relation_size('fulfillment_logs')) AS logs_size
                    """
                ).fetchone()
            assert info is not None
            context = (
                f"{os.cpu_count()} cores, PostgreSQL {info['version']}; {n_orders:,} orders "
                f"({info['orders_size']} with indexes), {info['logs']:,} log rows "
                f"({info['logs_size']}); {args.runs} timed runs per query after a warm-up "
                "(median, p95 by nearest rank)."
            )
            svc = AdminService(Store(pool), publish=lambda *_: None, max_attempts=3)
            bench = Bench(svc, args.runs)
            print("measuring ...", flush=True)
            load_before = os.getloadavg()[0]
            out = run(bench, n_orders, args.export_runs or args.runs)
            print("  trying a covering index for stats() ...", flush=True)
            trial = try_stats_index(bench, db_url)
            context += (
                f" Load average (1 min) {load_before:.1f} before measuring, "
                f"{os.getloadavg()[0]:.1f} after."
            )
            report(bench, out, trial, context)
        finally:
            pool.close()
    finally:
        if not args.keep:
            _drop_db(server)
            print(f"\ndropped {DB_NAME} (pass --keep to leave it for --reuse)")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
