"""E2E fixtures: the fleet as real processes, started from the Procfile's process types.

`fleet` gives each test the vendor simulator (`fulfillment sim`), a worker group and a
dead-letter consumer group (the standard `dramatiq` CLI), on the run's PostgreSQL database
(tables emptied by the `store` fixture) and a Redis namespace of the test's own. The reconciler
and the CLI run as a user runs them: `fulfillment reconcile ...`, `fulfillment status ...`.

Every process gets a new session, so a test can SIGKILL a whole worker group; every process is
stopped at teardown (SIGTERM, then SIGKILL after launcher.STOP_TIMEOUT_S). Each runs in the
test's tmp_path, its output to a log file there; a failed test prints the tail of each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import redis

from db.store import Row, Store
from fulfillment.dev import launcher
from fulfillment.dev.embedded import free_port
from fulfillment.dev.launcher import (
    DEADLETTER,
    NOTIFY,
    RECONCILER,
    RECONCILER_READY,
    SIM,
    SIM_READY,
    WORKER,
    WORKER_READY,
    ProcessType,
    base_env,
)
from fulfillment.dev.simulator.server import (
    DEFAULT_AGGREGATOR_TOKEN,
    DEFAULT_PLATFORM_SECRET,
    DEFAULT_SMS_CLIENT_ID,
    DEFAULT_SMS_CLIENT_SECRET,
)
from fulfillment.domain.constants import FULFILLMENT_QUEUE
from fulfillment.messaging.publish import build_broker
from producers.publish import publish_fulfillment

ROOT = Path(__file__).resolve().parents[2]
_VENV_BIN = ROOT / ".venv" / "bin"
BIN = _VENV_BIN if (_VENV_BIN / "dramatiq").exists() else Path(sys.executable).parent

KEY, SECRET = "e2e-key", "e2e-secret"
PHONE = "+233241234567"
POLL_S = 0.2
START_TIMEOUT_S = 45.0  # a cold interpreter on a loaded 2-core machine
CLI_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 60

#: The `worker:` group of the tests: 1 process, 4 threads.
WORKER_SIZE = {"WORKER_PROCESSES": "1", "WORKER_THREADS": "4"}

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so `fleet` knows at teardown whether to dump logs."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def went_wrong(request: pytest.FixtureRequest) -> bool:
    """At a fixture's teardown: whether its test failed, or never got to run (show the logs)."""
    reports = request.node.stash.get(_REPORTS, {})
    return any(r.failed for r in reports.values()) or "call" not in reports


class Proc(launcher.Proc):
    """A process of the test. Where a wait for its output gives up, the test fails, with the
    tail of the log."""

    tail_lines = LOG_TAIL_LINES

    def fail(self, problem: str) -> NoReturn:
        pytest.fail(f"{problem}:\n{self.tail()}")

    def wait_for_output(self, needle: str, timeout: float = START_TIMEOUT_S) -> str:
        return super().wait_for_output(needle, timeout)


class Fleet:
    """The processes of one test, and the views on PostgreSQL, Redis and the simulator."""

    def __init__(
        self, *, store: Store, database_url: str, redis_url: str, namespace: str, log_dir: Path
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        self.sim_url = ""  # vendor base URL, with /v1
        self.workers: Proc | None = None
        self.deadletter: Proc | None = None
        self.reconciler: Proc | None = None
        self.notify: Proc | None = None
        self.broker = build_broker(redis_url, namespace)
        self.redis = redis.Redis.from_url(redis_url)
        self.http = httpx.Client(timeout=10)
        self.env = {
            **base_env(),
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "REDIS_NAMESPACE": namespace,
            "AT_ISHARE_API_KEY": KEY,
            "AT_ISHARE_API_SECRET": SECRET,
            "RETRY_DELAYS": "1,2,3",
            "MAX_ATTEMPTS": "3",
            "CLAIM_TTL_S": "3",
            "STATUS_CHECK_DELAY_S": "0.5",
            "VENDOR_READ_TIMEOUT_S": "1",
            "VENDOR_CONNECT_TIMEOUT_S": "1",
            "LOG_FORMAT": "json",
            "RECONCILE_GRACE_S": "1",
        }
        self._seq = 0

    # -- processes -------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], *, tree: Path | None = None) -> Proc:
        """Start `argv` with the fleet's environment, in the test's directory; with `tree`, in
        that source tree instead (another release's, extracted), which it then imports first."""
        self._seq += 1
        env = self.env if tree is None else {**self.env, "PYTHONPATH": str(tree)}
        # every process group its own metrics port, so groups never fight over the default
        proc = Proc(name, argv, env=env, log_dir=self.log_dir, metrics=True, cwd=tree)
        proc.start(self.log_dir / f"{self._seq:02d}-{name}.log")
        self.procs.append(proc)
        return proc

    def spawn_type(
        self,
        ptype: ProcessType,
        *extra: str,
        env: dict[str, str] | None = None,
        tree: Path | None = None,
    ) -> Proc:
        """A process type of the Procfile, its variables from the fleet's environment (and
        `env`), then `extra` arguments; run from `tree` as `spawn` says."""
        argv = ptype.argv({**self.env, **(env or {})}, *extra)
        return self.spawn(ptype.name, argv, tree=tree)

    def start_sim(self) -> None:
        for _ in range(3):  # the free port may be taken between the probe and the bind
            proc = self.spawn_type(SIM, env={"SIM_PORT": str(free_port())})
            line = proc.await_output(SIM_READY, START_TIMEOUT_S)
            if line is not None:
                break
        else:
            pytest.fail(f"the simulator did not start:\n{proc.tail()}")
        self.sim_url = line.split(SIM_READY, 1)[1].strip()
        self.env["AT_ISHARE_API_URL"] = self.sim_url
        # the same process speaks the aggregator's protocol under /aggregator/v1
        self.env["AGGREGATOR_API_URL"] = self.sim_url.removesuffix("/v1") + "/aggregator/v1"
        self.env["AGGREGATOR_API_TOKEN"] = DEFAULT_AGGREGATOR_TOKEN
        # and the SMS provider's and the platform receiver's (the notify: process's parties)
        base = self.sim_url.removesuffix("/v1")
        self.env.update(
            {
                "SMS_API_URL": f"{base}/sms/v1",
                "SMS_CLIENT_ID": DEFAULT_SMS_CLIENT_ID,
                "SMS_CLIENT_SECRET": DEFAULT_SMS_CLIENT_SECRET,
                "SMS_SENDER_ID": "DataShop",
                "SMS_TIMEOUT_S": "1",
                "PLATFORM_WEBHOOK_URL": f"{base}/platform/events",
                "PLATFORM_WEBHOOK_SECRET": DEFAULT_PLATFORM_SECRET,
                "PLATFORM_WEBHOOK_TIMEOUT_S": "1",
                "NOTIFY_RETRY_DELAYS": "0.5,1,2",
                "SMS_REPORT_DELAYS": "0.5,1",
                "OUTBOX_GRACE_S": "2",
            }
        )

    def start_notify(self) -> Proc:
        """The `notify:` group of the Procfile: the customer's SMS and the platform's events."""
        self.notify = self.spawn_type(NOTIFY)
        self.notify.wait_for_output(WORKER_READY)
        return self.notify

    def start_workers(self) -> Proc:
        """A `worker:` group of the Procfile (1 process, 4 threads), ready to consume."""
        self.workers = self.spawn_type(WORKER, env=WORKER_SIZE)
        self.workers.wait_for_output(WORKER_READY)
        return self.workers

    def start_deadletter(self) -> Proc:
        self.deadletter = self.spawn_type(DEADLETTER)
        self.deadletter.wait_for_output(WORKER_READY)
        return self.deadletter

    def start_consumers(self) -> None:
        """Both dramatiq groups, booting side by side."""
        self.workers = self.spawn_type(WORKER, env=WORKER_SIZE)
        self.deadletter = self.spawn_type(DEADLETTER)
        self.workers.wait_for_output(WORKER_READY)
        self.deadletter.wait_for_output(WORKER_READY)

    def stop_consumers(self) -> None:
        groups = [p for p in (self.workers, self.deadletter) if p is not None]
        launcher.stop_all(groups)
        self.workers = self.deadletter = None

    def start_reconciler_loop(self) -> Proc:
        self.reconciler = self.spawn_type(RECONCILER, "--interval", "1", "--grace", "1")
        self.reconciler.wait_for_output(RECONCILER_READY)
        return self.reconciler

    def reconcile_once(self) -> dict[str, Any]:
        """One reconciler pass, as `fulfillment reconcile --grace 1`; its JSON report."""
        result = self.cli("reconcile", "--grace", "1")
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return report

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`fulfillment <args>` with the fleet's environment; stdout and stderr as text."""
        return subprocess.run(
            [str(BIN / "fulfillment"), *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )

    def close(self, *, dump_logs: bool) -> None:
        try:
            launcher.stop_all(reversed(self.procs))
        finally:
            self.http.close()
            self.redis.close()
            self.broker.client.connection_pool.disconnect()
        if dump_logs:
            for proc in self.procs:
                code = None if proc.popen is None else proc.popen.returncode
                print(f"\n----- {proc.name} ({proc.log_path}), exit {code} -----")
                print(proc.tail())

    def check_alive(self) -> None:
        """Fail at once, with its log, when a process the test relies on has died."""
        for proc in (self.workers, self.deadletter, self.reconciler):
            if proc is not None and not proc.alive:
                code = None if proc.popen is None else proc.popen.returncode
                pytest.fail(f"{proc.name} died (exit {code}):\n{proc.tail()}")

    # -- orders ----------------------------------------------------------------------------

    def new_order(self, phone: str = PHONE, size_gb: float = 2, network: str = "at-ishare") -> str:
        order_id = str(uuid.uuid4())
        self.store.insert_order(
            order_id, phone_number=phone, network=network, size_gb=size_gb, package_name=None
        )
        return order_id

    def publish(
        self, order_id: str, phone: str = PHONE, network: str = "at-ishare", size_gb: float = 2
    ) -> None:
        result = publish_fulfillment(
            order_id,
            phone_number=phone,
            network=network,
            size_gb=size_gb,
            broker=self.broker,
            enabled=True,
        )
        assert result.published, result.reason

    def publish_new_orders(self, count: int) -> list[str]:
        """Commit `count` orders and publish each, as the purchase path does."""
        orders = [self.new_order() for _ in range(count)]
        for oid in orders:
            self.publish(oid)
        return orders

    def order(self, order_id: str) -> Row:
        row = self.store.order_row(order_id)
        assert row is not None, f"no order {order_id}"
        return row

    def status(self, order_id: str) -> str | None:
        status: str | None = self.order(order_id)["fulfillment_status"]
        return status

    def logs(self, order_id: str) -> list[Row]:
        return self.store.order_logs(order_id)

    def purchases(self, order_id: str) -> list[tuple[int, str, str | None]]:
        return [
            (r["attempt_number"], r["status"], r["error_code"])
            for r in self.logs(order_id)
            if r["action"] == "purchase"
        ]

    def notifications(self, kind: str | None = None) -> list[Row]:
        rows = self.store.notifications(limit=1000)
        return [r for r in rows if kind is None or r["kind"] == kind]

    def wait_until(
        self,
        predicate: Callable[[], object],
        timeout: float = 30.0,
        *,
        what: str = "condition",
        poll: float = POLL_S,
    ) -> None:
        """Poll until `predicate()` is truthy; fail after `timeout` s or when a process died."""
        deadline = time.monotonic() + timeout
        while not predicate():
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(poll)

    def wait_for_status(self, order_id: str, status: str, timeout: float = 30.0) -> Row:
        self.wait_until(
            lambda: self.status(order_id) == status,
            timeout,
            what=f"order {order_id} to be {status}",
        )
        return self.order(order_id)

    def wait_dead_lettered(self, order_id: str, timeout: float = 30.0) -> Row:
        self.wait_until(
            lambda: self.order(order_id)["dead_lettered_at"] is not None,
            timeout,
            what=f"order {order_id} to be dead-lettered",
        )
        return self.order(order_id)

    # -- Redis -----------------------------------------------------------------------------

    def redis_keys(self) -> list[bytes]:
        return list(self.redis.scan_iter(match=f"{self.namespace}*", count=1000))

    def flush_namespace(self) -> int:
        """Delete every key of this test's namespace: the Redis flush of this test run."""
        keys = self.redis_keys()
        if keys:
            self.redis.delete(*keys)
        return len(keys)

    def unfinished_messages(self, queue: str = FULFILLMENT_QUEUE) -> int:
        """Messages of `queue` (and its delay queue) not yet acknowledged."""
        return sum(
            int(self.redis.hlen(f"{self.namespace}:{name}.msgs")) for name in (queue, f"{queue}.DQ")
        )

    # -- the simulator ---------------------------------------------------------------------

    def _control(
        self, method: str, route: str, body: dict[str, Any] | None = None, *, side: str = ""
    ) -> Any:
        """A control route of the simulator; side="aggregator" for the aggregator's."""
        prefix = f"/{side}/_sim/" if side else "/_sim/"
        url = self.sim_url.removesuffix("/v1") + prefix + route
        response = self.http.request(method, url, json=body)
        response.raise_for_status()
        return response.json()

    def script(
        self, reference: str, responses: list[str], status_responses: list[str] | None = None
    ) -> None:
        body: dict[str, Any] = {"reference": reference, "responses": responses}
        if status_responses is not None:
            body["status_responses"] = status_responses
        self._control("POST", "script", body)

    def faults(self, **changes: Any) -> dict[str, Any]:
        config: dict[str, Any] = self._control("POST", "faults", changes)
        return config

    def vendor_down(self, seconds: float) -> None:
        self._control("POST", "down", {"seconds": seconds})

    def ledger(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = self._control("GET", "ledger")
        return snapshot

    def vendor_entry(self, reference: str) -> dict[str, Any]:
        """The ledger's counters of one reference (zeros when it never reached the vendor)."""
        entry: dict[str, Any] = self.ledger()["references"].get(reference, {})
        return {
            "deliveries": 0,
            "purchase_requests": 0,
            "status_requests": 0,
            "blind_repurchases": 0,
            "status": "not_found",
            **entry,
        }

    def deliveries(self, reference: str) -> int:
        return int(self.vendor_entry(reference)["deliveries"])

    def aggregator_faults(self, **changes: Any) -> dict[str, Any]:
        config: dict[str, Any] = self._control("POST", "faults", changes, side="aggregator")
        return config

    def aggregator_down(self, seconds: float) -> None:
        self._control("POST", "down", {"seconds": seconds}, side="aggregator")

    def aggregator_ledger(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = self._control("GET", "ledger", side="aggregator")
        return snapshot

    def sms_faults(self, **changes: Any) -> dict[str, Any]:
        config: dict[str, Any] = self._control("POST", "faults", changes, side="sms")
        return config

    def sms_down(self, seconds: float) -> None:
        self._control("POST", "down", {"seconds": seconds}, side="sms")

    def sms_ledger(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = self._control("GET", "ledger", side="sms")
        return snapshot

    def platform_faults(self, **changes: Any) -> dict[str, Any]:
        config: dict[str, Any] = self._control("POST", "faults", changes, side="platform")
        return config

    def platform_down(self, seconds: float) -> None:
        self._control("POST", "down", {"seconds": seconds}, side="platform")

    def platform_ledger(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = self._control("GET", "ledger", side="platform")
        return snapshot

    def vendor_breaches(self) -> list[str]:
        """What either vendor saw that the guarantee forbids, whatever the test: a reference
        delivered twice, or bought again after an unknown outcome without a status lookup
        between (the simulator's blind_repurchases); what the SMS provider saw (an SMS sent
        twice, or sent again after an unreadable answer without a lookup between) and what the
        platform saw (an event_id with another body, a bad signature, an order's events out of
        order). Checked by `fleet` at teardown."""
        breaches: list[str] = []
        for name, read in (("AT-iShare", self.ledger), ("aggregator", self.aggregator_ledger)):
            try:
                ledger = read()
            except httpx.HTTPError as exc:  # the simulator is gone: its log and the test say
                print(f"\n{name} ledger unreadable at teardown: {type(exc).__name__}")
                continue
            twice = sorted(r for r, e in ledger["references"].items() if e["deliveries"] > 1)
            totals = ledger["totals"]
            if twice:
                breaches.append(f"{name}: delivered twice: {twice}")
            if totals["blind_repurchases"]:
                breaches.append(
                    f"{name}: blind re-purchases {totals['blind_repurchases']} "
                    f"(references {totals['blind_repurchase_references']})"
                )
        return breaches + self._party_breaches()

    def _party_breaches(self) -> list[str]:
        """The SMS provider's and the platform's part of vendor_breaches; a simulator that does
        not serve them (an older release's answers 404) has none."""
        breaches: list[str] = []
        for name, read, keys in (
            ("SMS", self.sms_ledger, ("duplicate_sends", "blind_resends")),
            (
                "platform",
                self.platform_ledger,
                ("conflicting_bodies", "bad_signatures", "out_of_order"),
            ),
        ):
            try:
                totals = read()["totals"]
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 404:
                    print(f"\n{name} ledger unreadable at teardown: {exc.response.status_code}")
                continue
            except httpx.HTTPError as exc:  # the simulator is gone: its log and the test say
                print(f"\n{name} ledger unreadable at teardown: {type(exc).__name__}")
                continue
            breaches.extend(f"{name}: {key}: {totals[key]}" for key in keys if totals.get(key))
        return breaches


@pytest.fixture
def idle_fleet(
    request: pytest.FixtureRequest,
    store: Store,
    database_url: str,
    redis_url: str,
    redis_namespace: str,
    tmp_path: Path,
) -> Iterator[Fleet]:
    """The test run's settings and views with no process running (the CLI alone, or a test
    that starts its own); the logs of whatever it started are shown when the test failed."""
    idle = Fleet(
        store=store,
        database_url=database_url,
        redis_url=redis_url,
        namespace=redis_namespace,
        log_dir=tmp_path,
    )
    try:
        yield idle
    finally:
        reports = request.node.stash.get(_REPORTS, {})
        idle.close(dump_logs=any(r.failed for r in reports.values()) or "call" not in reports)


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest,
    store: Store,
    database_url: str,
    redis_url: str,
    redis_namespace: str,
    tmp_path: Path,
) -> Iterator[Fleet]:
    """Simulator, worker group and dead-letter group running; torn down whatever happens.
    A test that passed fails at teardown when the vendor's ledger shows a reference delivered
    twice or bought blind (Fleet.vendor_breaches)."""
    running = Fleet(
        store=store,
        database_url=database_url,
        redis_url=redis_url,
        namespace=redis_namespace,
        log_dir=tmp_path,
    )
    breaches: list[str] = []
    try:
        running.start_sim()
        running.start_consumers()
        yield running
        breaches = running.vendor_breaches()
    finally:
        reports = request.node.stash.get(_REPORTS, {})
        failed = any(r.failed for r in reports.values()) or "call" not in reports
        if breaches:
            print("\nvendor ledger: " + "; ".join(breaches))
        running.close(dump_logs=failed or bool(breaches))
    if breaches and not failed:
        pytest.fail("the vendor's ledger breaks the guarantee: " + "; ".join(breaches))
