"""A rolling deploy of the versioned migrations, end to end, losing nothing.

The previous release (PREVIOUS_RELEASE, taken from git history) creates a database with its own
`migrate`; orders in every state are put into it with SQL of that schema, and that release's
worker and dead-letter groups run on it. While they work and the platform keeps committing and
publishing orders, this checkout's `fulfillment migrate` adopts the database as version 0001 and
applies 0002 and 0003 (an index built CONCURRENTLY under the writes). The old workers go on
delivering on the new schema, and a host not yet upgraded may run its own migrate (schema.sql)
again without changing anything; then the deploy finishes: this checkout's groups start, the old
ones stop gracefully (SIGTERM) while orders keep coming, and the new reconciler sweeps the orders
whose messages were lost. Then one step back (`--to 0002`, the index dropped) and forward again,
with the new workers running and orders being delivered.

After each stage: every order of ours is delivered exactly once (the simulator's ledger) or
dead-lettered, as the simulator was told to answer it; none is lost or stuck in processing; the
outcome-unknown order is still held and was never bought again; the platform's other rows
(another network's, a NULL status, the finished ones) are as they were, every value; and no row
of fulfillment_logs went missing or changed.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from db.catalog import MIGRATIONS_TABLE
from db.store import Row, Store, open_pool
from fulfillment.dev import launcher
from fulfillment.dev.launcher import DEADLETTER, WORKER
from fulfillment.domain.constants import FULFILLMENT_QUEUE
from fulfillment.domain.order import FulfillmentRequest
from fulfillment.vendors.atishare import AtIshareClient

from .conftest import (
    BIN,
    CLI_TIMEOUT_S,
    KEY,
    PHONE,
    POLL_S,
    ROOT,
    SECRET,
    WORKER_SIZE,
    Fleet,
    went_wrong,
)

pytestmark = [pytest.mark.e2e]

# main as it was before versioned migrations
PREVIOUS_RELEASE = "b8db5edfa87edf245f209f37365e0676a2e9f5ff"
PYTHON = BIN / "python"
SETTLE_TIMEOUT_S = 45.0
#: An orders row, every column, and its row version: untouched is not even rewritten as it was
ORDER_ROW = "*, xmin::text AS row_version"

# What an order of the plan ends as.
DELIVERED = "delivered"  # success, delivered once by the vendor
DEAD_LETTERED = "dead-lettered"  # failed and flagged, nothing delivered
#: the schema's history after this checkout's migrate over the previous release's schema
ALL_APPLIED = [(1, "adopted"), (2, "applied"), (3, "applied"), (4, "applied"), (5, "applied")]
UNTOUCHED = "untouched"  # every value as it was put in; the vendor never asked about it

_OLD_CODE_FILES = (
    "import importlib.util, json\n"
    "import db.migrate, db.store, fulfillment.services.delivery\n"
    "print(json.dumps([db.migrate.__file__, db.store.__file__,\n"
    "                  fulfillment.services.delivery.__file__,\n"
    "                  importlib.util.find_spec('workers.actors').origin]))\n"
)
_OLD_MIGRATE = "import sys\nfrom db.migrate import migrate\nmigrate(sys.argv[1])\n"


# -- the previous release ------------------------------------------------------------------


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's tree, extracted from this clone's history."""
    try:
        known = subprocess.run(
            ["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError as exc:
        pytest.fail(f"cannot run git to extract the previous release: {exc}")
    if known.returncode != 0:
        pytest.fail(
            f"the previous release {PREVIOUS_RELEASE} is not in this clone's history "
            f"({known.stderr.strip()}): this test needs the full history of main "
            "(CI clones it; elsewhere: git fetch --unshallow)"
        )
    tree = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS_RELEASE],
        capture_output=True,
        timeout=60,
        check=True,
    )
    subprocess.run(
        ["tar", "-x", "-C", str(tree)], input=archive.stdout, capture_output=True, check=True
    )
    return tree


def run_previous(tree: Path, env: Mapping[str, str], code: str, *args: str) -> str:
    """`python -c CODE ARGS` of this venv on the previous release's code; its stdout."""
    result = subprocess.run(
        [str(PYTHON), "-c", code, *args],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"previous release: exit {result.returncode}\n{result.stderr}"
    return result.stdout


# -- the fleet on a database of the test's own ---------------------------------------------


@pytest.fixture
def upgrade_fleet(
    request: pytest.FixtureRequest,
    own_database: str,
    redis_url: str,
    redis_namespace: str,
    tmp_path: Path,
) -> Iterator[Fleet]:
    """The e2e Fleet's settings and views on an empty database of this test; its processes
    stopped at teardown, whatever happens, their logs shown when the test failed."""
    store = Store(open_pool(own_database, min_size=1, max_size=6))
    running = Fleet(
        store=store,
        database_url=own_database,
        redis_url=redis_url,
        namespace=redis_namespace,
        log_dir=tmp_path,
    )
    try:
        yield running
    finally:
        try:
            running.close(dump_logs=went_wrong(request))
        finally:
            store.close()


# -- the platform's orders and what each must end as ---------------------------------------


@dataclass
class Plan:
    """Every order put into the database and what it must end as; the rows that must stay as
    they are, as they were put in; what fulfillment_logs held when last looked at."""

    fleet: Fleet
    expected: dict[str, str] = field(default_factory=dict)
    frozen: dict[str, Row] = field(default_factory=dict)
    #: the vendor must have been asked for this reference this many times (POSTs) in the end
    purchases: dict[str, int] = field(default_factory=dict)
    #: orders whose message was lost: untouched until the reconciler sweeps them, then this
    lost: dict[str, str] = field(default_factory=dict)
    #: POSTs the vendor had for a reference before the test's fleet ran (a dead worker's)
    given: dict[str, int] = field(default_factory=dict)
    logs_seen: dict[int, Row] = field(default_factory=dict)
    named: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sql(self, query: str, *params: object) -> list[Row]:
        with self.fleet.store.pool.connection() as conn:
            cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def put(
        self,
        name: str,
        outcome: str,
        *,
        lost: bool = False,
        purchases: int | None = None,
        **columns: object,
    ) -> str:
        """An orders row as the previous release's schema has it (created ten minutes ago),
        what it must end as, and whether its message was lost (the reconciler's)."""
        oid = str(uuid.uuid4())
        values: dict[str, object] = {
            "id": oid,
            "phone_number": PHONE,
            "network": "at-ishare",
            "size_gb": 2,
            "package_name": "AT iShare 2GB",
            "created_at": _ago(600),
            "updated_at": _ago(540),
            **columns,
        }
        names = ", ".join(values)
        marks = ", ".join(["%s"] * len(values))
        self.sql(f"INSERT INTO orders ({names}) VALUES ({marks})", *values.values())
        if lost:
            self.lost[oid] = outcome
        self.expect(oid, UNTOUCHED if lost else outcome, purchases)
        self.named[name] = oid
        return oid

    def log(self, oid: str, attempt: int, status: str, error_code: str | None = None) -> None:
        """An attempt of the previous release's workers, as its fulfillment_logs has it."""
        self.sql(
            "INSERT INTO fulfillment_logs (order_id, network, phone_number, action, status, "
            "attempt_number, max_attempts, http_status, api_response, error_code, latency_ms, "
            "fulfilled_at, vendor_transaction_id, worker, created_at) "
            "VALUES (%s, 'at-ishare', %s, 'purchase', %s, %s, 3, %s, '{}'::jsonb, %s, 20, "
            "CASE WHEN %s = 'success' THEN now() - interval '9 minutes' END, %s, 'old-host', "
            "now() - interval '9 minutes')",
            oid,
            PHONE,
            status,
            attempt,
            200 if status == "success" else 502,
            error_code,
            status,
            f"TX-OLD-{oid[:8]}" if status == "success" else None,
        )

    def expect(self, oid: str, outcome: str, purchases: int | None = None) -> None:
        with self._lock:
            self.expected[oid] = outcome
            if purchases is not None:
                self.purchases[oid] = purchases

    def swept(self) -> None:
        """The reconciler ran: the orders whose message was lost are due to end as planned."""
        with self._lock:
            self.expected.update(self.lost)

    def freeze(self) -> None:
        """Remember every row expected untouched, as it is now."""
        ids = [oid for oid, outcome in self.expected.items() if outcome == UNTOUCHED]
        rows = self.sql(f"SELECT {ORDER_ROW} FROM orders WHERE id = ANY(%s::uuid[])", ids)
        self.frozen = {str(r["id"]): r for r in rows}
        assert set(self.frozen) == set(ids)

    # -- what the purchase platform does -----------------------------------------------------

    def commit_and_publish(self, script: list[str] | None = None, outcome: str = DELIVERED) -> str:
        """A new order: the platform's INSERT, then its message (plain Dramatiq)."""
        oid = str(uuid.uuid4())
        self.expect(oid, outcome, purchases=1 + (script or []).count("error"))
        if script:
            self.fleet.script(oid, script)
        self.sql(
            "INSERT INTO orders (id, phone_number, network, package_name) "
            "VALUES (%s, %s, 'at-ishare', 'AT iShare 2GB')",
            oid,
            PHONE,
        )
        self.publish(oid)
        return oid

    def publish(self, oid: str) -> None:
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=FULFILLMENT_QUEUE,
            actor_name="fulfill_order",
            args=(oid,),
            kwargs={},
            options={},
        )
        self.fleet.broker.enqueue(message)

    def batch(self, count: int) -> list[str]:
        """`count` new orders: mostly plain, one that fails once first, one the vendor refuses."""
        orders = [self.commit_and_publish(["error"])]
        orders.append(self.commit_and_publish(["invalid_phone"], outcome=DEAD_LETTERED))
        orders += [self.commit_and_publish() for _ in range(count - 2)]
        return orders

    @contextmanager
    def buying(self, every_s: float = 0.2) -> Iterator[None]:
        """Orders keep coming, one every `every_s`, from another thread, while the block runs:
        the first is committed and published before it starts, and more during it."""
        stop = threading.Event()
        errors: list[BaseException] = []
        made: list[str] = []

        def loop() -> None:
            try:
                while not stop.is_set():
                    made.append(self.commit_and_publish())
                    time.sleep(every_s)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=loop, name="platform", daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not made and not errors and time.monotonic() < deadline:
                time.sleep(0.01)
            before = len(made)
            yield
            during = len(made) - before
        finally:
            stop.set()
            thread.join(timeout=30)
        if errors:
            raise errors[0]
        assert before and during, f"orders committed: {before} before the block, {during} in it"

    # -- waiting and checking ----------------------------------------------------------------

    def unsettled(self) -> list[tuple[str, str, str | None]]:
        """The orders not yet as expected: (id, expected, status)."""
        with self._lock:
            expected = dict(self.expected)
        rows = self.sql(
            "SELECT id, fulfillment_status, dead_lettered_at FROM orders "
            "WHERE id = ANY(%s::uuid[])",
            list(expected),
        )
        ended = {
            str(r["id"])
            for r in rows
            if (expected[str(r["id"])], r["fulfillment_status"], r["dead_lettered_at"] is not None)
            in {(DELIVERED, "success", False), (DEAD_LETTERED, "failed", True)}
            or expected[str(r["id"])] == UNTOUCHED
        }
        status = {str(r["id"]): r["fulfillment_status"] for r in rows}
        return [(oid, want, status.get(oid)) for oid, want in expected.items() if oid not in ended]

    def wait_settled(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while left := self.unsettled():
            self.fleet.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"{len(left)} orders not settled after {timeout} s: {left[:10]}")
            time.sleep(POLL_S)

    def check(self, stage: str) -> None:
        """The invariants, after `stage`."""
        fleet = self.fleet
        assert fleet.vendor_breaches() == [], stage
        ledger: dict[str, dict[str, Any]] = fleet.ledger()["references"]
        rows = {str(r["id"]): r for r in self.sql(f"SELECT {ORDER_ROW} FROM orders")}
        with self._lock:
            expected = dict(self.expected)

        # nothing lost, nothing made up: every row is one of the plan's
        assert set(rows) == set(expected), stage
        wrong: list[str] = []
        for oid, outcome in expected.items():
            row, vendor = rows[oid], ledger.get(oid)
            deliveries = 0 if vendor is None else vendor["deliveries"]
            if outcome == DELIVERED:
                if not (
                    row["fulfillment_status"] == "success"
                    and row["fulfilled_at"] is not None
                    and deliveries == 1
                    and vendor is not None
                    and row["vendor_transaction_id"] == vendor["transaction_id"]
                ):
                    wrong.append(f"{oid}: not delivered once: {_brief(row)}, vendor {vendor}")
            elif outcome == DEAD_LETTERED:
                if not (
                    row["fulfillment_status"] == "failed"
                    and row["dead_lettered_at"] is not None
                    and deliveries == 0
                ):
                    wrong.append(f"{oid}: not dead-lettered: {_brief(row)}, vendor {vendor}")
            else:
                contact = (
                    (vendor["purchase_requests"], vendor["status_requests"]) if vendor else (0, 0)
                )
                if row != self.frozen[oid] or contact != (self.given.get(oid, 0), 0):
                    diff = {k: (v, row[k]) for k, v in self.frozen[oid].items() if row[k] != v}
                    wrong.append(f"{oid}: touched: {diff}, vendor {vendor}")
                continue
            want = self.purchases.get(oid)
            if want is not None and (vendor or {}).get("purchase_requests", 0) != want:
                wrong.append(f"{oid}: vendor {vendor}, expected {want} purchase requests")
        assert wrong == [], f"after {stage}:\n" + "\n".join(wrong)

        # none stuck: processing only where a person holds it
        stuck = [
            _brief(r)
            for oid, r in rows.items()
            if r["network"] == "at-ishare"
            and r["fulfillment_status"] in {"pending", "processing"}
            and r["dead_letter_reason"] is None
            and expected[oid] != UNTOUCHED  # a lost message not swept yet
        ]
        assert stuck == [], f"after {stage}: stuck {stuck}"

        # the audit trail: no row lost or changed since last looked at; one per delivery at least
        logs = {int(r["id"]): r for r in self.sql("SELECT * FROM fulfillment_logs")}
        lost = [i for i in self.logs_seen if i not in logs]
        changed = [i for i, r in self.logs_seen.items() if i in logs and logs[i] != r]
        assert (lost, changed) == ([], []), f"after {stage}: fulfillment_logs lost/changed"
        assert len(logs) > len(self.logs_seen), stage
        self.logs_seen = logs
        logged = {str(r["order_id"]) for r in logs.values() if r["status"] == "success"}
        unlogged = [oid for oid, o in expected.items() if o == DELIVERED and oid not in logged]
        assert unlogged == [], f"after {stage}: delivered without a success row {unlogged}"


def _ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def _brief(row: Row) -> dict[str, Any]:
    keys = ("id", "network", "fulfillment_status", "fulfillment_attempts", "dead_letter_reason")
    return {k: row[k] for k in keys}


def seed(plan: Plan) -> None:
    """An order in every state the previous release leaves, and the platform's other rows."""
    p = plan
    held_reason = "vendor outcome still unknown after 30 status checks; check by hand"
    # pending, never tried: one whose message is in Redis, two whose message was lost
    p.put("pending", DELIVERED, purchases=1)
    p.put("pending, message lost", DELIVERED, lost=True, purchases=1)
    p.put("pending, message lost, refused by the vendor", DEAD_LETTERED, lost=True, purchases=1)
    failed_due: dict[str, Any] = {
        "fulfillment_status": "failed",
        "fulfillment_attempts": 1,
        "next_attempt_at": _ago(60),
        "last_error_code": "VENDOR_5XX",
        "last_error_message": "vendor answered 502",
    }
    # the vendor never got attempt 1 (it answered 502 without booking it): bought once now
    due = p.put("failed, retry due", DELIVERED, purchases=1, **failed_due)
    p.log(due, 1, "failed", "VENDOR_5XX")
    due = p.put("failed, retry due, message lost", DELIVERED, lost=True, purchases=1, **failed_due)
    p.log(due, 1, "failed", "VENDOR_5XX")
    # the 502 came after the vendor had booked it: looked up and completed, not bought again
    for lost in (False, True):
        due = p.put(
            f"failed, retry due, the vendor delivered it{', message lost' if lost else ''}",
            DELIVERED,
            lost=lost,
            purchases=1,
            **failed_due,
        )
        p.log(due, 1, "failed", "VENDOR_5XX")
        p.given[due] = 1
    # its third and last attempt fails too: dead-lettered, the attempts counted across releases
    last = p.put(
        "failed, last attempt due, message lost",
        DEAD_LETTERED,
        lost=True,
        purchases=1,
        **{**failed_due, "fulfillment_attempts": 2},
    )
    p.log(last, 1, "failed", "VENDOR_5XX")
    p.log(last, 2, "failed", "VENDOR_5XX")
    dead = p.put(
        "dead-lettered",
        UNTOUCHED,
        fulfillment_status="failed",
        fulfillment_attempts=3,
        last_error_code="VENDOR_5XX",
        dead_letter_reason="3 attempts used up; last error VENDOR_5XX",
        dead_letter_requested_at=_ago(500),
        dead_lettered_at=_ago(499),
    )
    for attempt in (1, 2, 3):
        p.log(dead, attempt, "failed", "VENDOR_5XX")
    done = p.put(
        "success",
        UNTOUCHED,
        fulfillment_status="success",
        fulfillment_attempts=1,
        fulfilled_at=_ago(530),
        vendor_transaction_id="TX-OLD-1",
    )
    p.log(done, 1, "success")
    held = p.put(
        "outcome unknown, held for a person",
        UNTOUCHED,
        fulfillment_status="processing",
        fulfillment_attempts=1,
        fulfillment_in_flight_attempt=1,
        fulfillment_status_checks=30,
        last_error_code="TIMEOUT",
        last_error_message="no answer from the vendor",
        dead_letter_reason=held_reason,
        dead_letter_requested_at=_ago(400),
        dead_lettered_at=_ago(399),
    )
    p.log(held, 1, "failed", "TIMEOUT")
    # a worker died in its purchase: claim expired, attempt 1 in flight
    expired: dict[str, Any] = {
        "fulfillment_status": "processing",
        "fulfillment_attempts": 1,
        "fulfillment_in_flight_attempt": 1,
        "claim_token": str(uuid.uuid4()),
        "claim_expires_at": _ago(300),
    }
    p.put("claim expired, the vendor never got it", DELIVERED, purchases=1, **expired)
    # bought by the dead worker: looked up and completed, never bought again
    given = p.put("claim expired, the vendor delivered it", DELIVERED, purchases=1, **expired)
    p.given[given] = 1
    given = p.put(
        "claim expired, the vendor delivered it, message lost",
        DELIVERED,
        lost=True,
        purchases=1,
        **expired,
    )
    p.given[given] = 1
    # the platform's rows that are not the fleet's
    p.put("mtn, pending", UNTOUCHED, network="mtn", phone_number="+233541234567")
    p.put(
        "telecel, failed, due",
        UNTOUCHED,
        network="telecel",
        phone_number="+233201234567",
        **failed_due,
    )
    p.put("at-bigtime, claim expired", UNTOUCHED, network="at-bigtime", **expired)
    p.put("before the fleet: no status", UNTOUCHED, fulfillment_status=None, created_at=_ago(9e5))


# -- the database's schema -----------------------------------------------------------------


def versions(plan: Plan) -> list[tuple[int, str]]:
    rows = plan.sql(f"SELECT version, how FROM {MIGRATIONS_TABLE} ORDER BY version")
    return [(int(r["version"]), str(r["how"])) for r in rows]


def waiting_index(plan: Plan) -> bool | None:
    """Whether orders_waiting_idx (step 0003) is valid; None when it does not exist."""
    rows = plan.sql(
        "SELECT x.indisvalid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE i.relname = 'orders_waiting_idx'"
    )
    return bool(rows[0]["indisvalid"]) if rows else None


def has_table(plan: Plan, name: str) -> bool:
    return bool(plan.sql("SELECT to_regclass(%s) IS NOT NULL AS found", name)[0]["found"])


def migrate(fleet: Fleet, *args: str) -> str:
    """This checkout's `fulfillment migrate ARGS`; its output (printed: shown on a failure)."""
    result = fleet.cli("migrate", *args)
    print(f"$ fulfillment migrate {' '.join(args)}\n{result.stdout}{result.stderr}")
    assert result.returncode == 0, f"migrate {args}: exit {result.returncode}\n{result.stderr}"
    return result.stdout


def status_code(fleet: Fleet) -> tuple[int, str]:
    result = fleet.cli("migrate", "--status")
    return result.returncode, result.stdout + result.stderr


# -- the test ------------------------------------------------------------------------------


def test_a_rolling_deploy_upgrades_rolls_back_and_forward_losing_nothing(
    upgrade_fleet: Fleet, own_database: str, previous_release: Path
) -> None:
    fleet = upgrade_fleet
    old = previous_release
    plan = Plan(fleet)
    fleet.env["STATUS_CHECK_DELAY_S"] = "0.2"

    # 1. the previous release's code, not the checkout's, and its migrate: schema.sql
    files = json.loads(run_previous(old, fleet.env, _OLD_CODE_FILES))
    assert all(Path(f).resolve().is_relative_to(old.resolve()) for f in files), files
    run_previous(old, fleet.env, _OLD_MIGRATE, own_database)
    assert not has_table(plan, MIGRATIONS_TABLE)
    assert not has_table(plan, "fleet_pauses")

    # 2. orders in every state; the simulator; the previous release's groups
    seed(plan)
    plan.freeze()
    plan.logs_seen = {int(r["id"]): r for r in plan.sql("SELECT * FROM fulfillment_logs")}
    fleet.start_sim()
    n = plan.named
    fleet.script(n["pending, message lost, refused by the vendor"], ["invalid_phone"])
    fleet.script(n["failed, last attempt due, message lost"], ["error"])
    vendor = AtIshareClient(fleet.sim_url, KEY, SECRET, read_timeout_s=5)
    try:  # what the earlier attempts did at the vendor
        for oid in plan.given:
            vendor.purchase(FulfillmentRequest(oid, PHONE, "at-ishare", Decimal(2), 2048))
    finally:
        vendor.close()

    old_workers = fleet.spawn_type(WORKER, env=WORKER_SIZE, tree=old)
    old_deadletter = fleet.spawn_type(DEADLETTER, tree=old)
    fleet.workers, fleet.deadletter = old_workers, old_deadletter
    old_workers.wait_for_output(launcher.WORKER_READY)
    old_deadletter.wait_for_output(launcher.WORKER_READY)
    for name in (
        "pending",
        "failed, retry due",
        "failed, retry due, the vendor delivered it",
        "claim expired, the vendor never got it",
        "claim expired, the vendor delivered it",
    ):
        plan.publish(n[name])
    for name in ("dead-lettered", "success", "outcome unknown, held for a person"):
        plan.publish(n[name])  # a duplicate: harmless
    for name in ("mtn, pending", "before the fleet: no status"):
        plan.publish(n[name])  # not the fleet's: ignored
    plan.batch(6)
    plan.wait_settled()  # the ones with a lost message are the reconciler's, later
    plan.check("the previous release's workers on its own schema")

    # 3. this checkout's migrate while the old workers work and orders keep coming
    with plan.buying():
        plan.batch(6)
        said = migrate(fleet)
    assert "adopted 0001" in said and "applied 0002" in said and "applied 0003" in said, said
    assert "applied 0004" in said and "applied 0005" in said, said
    assert versions(plan) == ALL_APPLIED
    assert waiting_index(plan) is True
    assert has_table(plan, "fleet_pauses") and has_table(plan, "fleet_networks")
    code, text = status_code(fleet)
    assert code == 0, text
    # 0004's one rewrite: a row of a network no fleet served, 'pending' only by the old
    # constant default and never touched, is no longer the fleet's; the rest as they were
    assert fleet.order(n["mtn, pending"])["fulfillment_status"] is None
    plan.freeze()

    # 4. the old workers on the new schema; a host not upgraded yet runs its own migrate
    # (schema.sql) again, as its deploy does: nothing changes, no drift
    plan.batch(8)
    run_previous(old, fleet.env, _OLD_MIGRATE, own_database)
    # ...which sets the constant status default 0004 dropped again: a leftover, not drift;
    # the trigger meanwhile takes no 'pending' of a network not served as a request, and
    # the next migrate of this release drops the default again
    code, text = status_code(fleet)
    assert code == 1 and "default 'pending' set again by a previous release" in text, text
    meanwhile = str(uuid.uuid4())
    inserted = plan.sql(
        "INSERT INTO orders (id, phone_number, network, size_gb) VALUES (%s, %s, 'mtn', 2) "
        "RETURNING fulfillment_status",
        meanwhile,
        PHONE,
    )
    assert inserted[0]["fulfillment_status"] is None
    plan.expect(meanwhile, UNTOUCHED, 0)
    plan.freeze()
    with plan.buying():
        said = migrate(fleet)
    assert "dropping the default a previous release set again" in said, said
    code, text = status_code(fleet)
    assert code == 0, text
    plan.wait_settled()
    plan.check("the migration, under the previous release's workers")

    # 5. the deploy: this checkout's groups start, the old ones stop (SIGTERM), orders coming
    with plan.buying():
        fleet.start_consumers()
        launcher.stop_all([old_workers, old_deadletter])
    for proc in (old_workers, old_deadletter):
        assert proc.popen is not None and proc.popen.returncode == 0, proc.tail()
    first = fleet.reconcile_once()
    plan.swept()
    assert first["by_reason"].get("pending_unstarted", 0) >= 2, first
    assert first["by_reason"].get("retry_overdue", 0) >= 3, first
    assert first["by_reason"].get("claim_expired", 0) >= 1, first
    plan.wait_settled()
    fleet.reconcile_once()
    plan.wait_settled()
    plan.check("the deploy")
    last = fleet.order(n["failed, last attempt due, message lost"])
    assert last["fulfillment_attempts"] == 3, last  # two before the upgrade, one after

    # 6. the deploy rolled back: the previous release's groups start again and this
    # checkout's stop, then the schema goes one step back under them (this code needs 0004
    # and refuses to run below it); then forward again, and this release's groups again
    with plan.buying():
        old_workers = fleet.spawn_type(WORKER, env=WORKER_SIZE, tree=old)
        old_deadletter = fleet.spawn_type(DEADLETTER, tree=old)
        old_workers.wait_for_output(launcher.WORKER_READY)
        old_deadletter.wait_for_output(launcher.WORKER_READY)
        fleet.stop_consumers()
        fleet.workers, fleet.deadletter = old_workers, old_deadletter
    with plan.buying():
        said = migrate(fleet, "--to", "0003")
    assert "reversed 0004" in said, said
    assert versions(plan)[-1][0] == 3 and not has_table(plan, "fleet_networks")
    code, text = status_code(fleet)
    assert code == 1 and "pending  0004" in text, text  # the code's version is 0004
    plan.batch(5)
    plan.wait_settled()
    plan.check("the rollback to 0003, under the previous release")

    with plan.buying():
        said = migrate(fleet)
    assert "applied 0004" in said and "applied 0005" in said, said
    assert versions(plan) == ALL_APPLIED
    code, text = status_code(fleet)
    assert code == 0, text
    with plan.buying():
        fleet.start_consumers()
        launcher.stop_all([old_workers, old_deadletter])
    plan.batch(5)
    plan.wait_settled()
    plan.check("forward again to 0004, this release's workers")
