"""The runtime pause from the dashboard, in headless Chromium, against a running fleet (the
vendor simulator, a worker group and a dead-letter group as real processes) fed a steady
stream of orders: Pause (whole fleet) stops new purchases within seconds, orders published
while paused wait pending with no attempt and no log row, and Resume delivers every order
exactly once, no attempt spent during the pause.

The measured figure, printed, is the time from the click on Pause to the start of the last
purchase the simulator saw after it (the ledger is polled every POLL_S; its precision)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from db.store import Store
from fulfillment.messaging.publish import Publisher, build_broker
from fulfillment.services.pauses import PauseService
from tests.conftest import WebServer
from tests.e2e.conftest import Fleet

from .conftest import log_in

pytestmark = pytest.mark.browser

Shoot = Callable[[str], Path]

#: orders published per second while the test runs
RATE_PER_S = 10
#: how often the simulator's ledger is read (the precision of the measured figure)
POLL_S = 0.05
#: no new purchase for this long after the click: purchases have stopped
QUIET_S = 3.0
#: the bound on the click-to-last-purchase time, loose enough for a loaded 2-core machine
STOP_BOUND_S = 10.0
#: how long the stream goes on once the fleet is quiet: the orders published while paused
PAUSED_STREAM_S = 3.0


@pytest.fixture
def fleet(
    store: Store, database_url: str, redis_url: str, redis_namespace: str, tmp_path: Path
) -> Iterator[Fleet]:
    """The simulator (with a little latency, so purchases are under way at the click), a
    worker group and a dead-letter group; no reconciler: only the resume re-enqueues."""
    running = Fleet(
        store=store,
        database_url=database_url,
        redis_url=redis_url,
        namespace=redis_namespace,
        log_dir=tmp_path,
    )
    running.env["SIM_LATENCY_MS"] = "30"
    try:
        running.start_sim()
        running.start_consumers()
        yield running
    finally:
        running.close(dump_logs=True)  # printed at teardown: shown only when the test failed


class Stream:
    """Commits and publishes RATE_PER_S orders a second, as the purchase path does, in a
    thread of its own; remembers when each was published."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.published: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="order-stream", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.wait(1 / RATE_PER_S):
                order_id = self.fleet.new_order()
                self.fleet.publish(order_id)
                self.published.append((time.monotonic(), order_id))
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> None:
        """Stop publishing (again: a no-op)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=10)

    def stop(self) -> None:
        """Stop publishing; fails the test when the stream itself failed."""
        self.halt()
        if self.error is not None:
            raise AssertionError(f"the order stream failed: {self.error!r}") from self.error

    def orders(self, after: float = 0.0) -> list[str]:
        return [oid for at, oid in self.published if at > after]


class PurchaseWatch:
    """Reads the simulator's ledger every POLL_S: when its count of purchase requests last
    rose (a purchase started), by this process's monotonic clock."""

    def __init__(self, sim_url: str) -> None:
        self.url = sim_url.removesuffix("/v1") + "/_sim/ledger"
        self.count = -1
        self.rises: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-watch", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                count = int(http.get(self.url).json()["totals"]["purchase_requests"])
                if count > self.count:
                    if self.count >= 0:
                        self.rises.append(time.monotonic())
                    self.count = count
                self._stop.wait(POLL_S)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=10)

    def last_rise(self) -> float | None:
        return self.rises[-1] if self.rises else None


def db_now(store: Store) -> datetime:
    with store.pool.connection() as conn:
        row = conn.execute("SELECT now() AS now").fetchone()
    assert row is not None
    moment: datetime = row["now"]
    return moment


def purchases_logged_between(store: Store, start: datetime, end: datetime) -> int:
    with store.pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM fulfillment_logs WHERE action = 'purchase'"
            " AND created_at >= %s AND created_at < %s",
            (start, end),
        ).fetchone()
    assert row is not None
    return int(row["n"])


@pytest.mark.timeout(240)
def test_pause_stops_purchases_and_resume_delivers_each_order_once(
    tab: Page,
    shoot: Shoot,
    web: WebServer,
    fleet: Fleet,
    store: Store,
    redis_url: str,
    redis_namespace: str,
) -> None:
    # the dashboard's resume publishes for real, to the fleet's queue
    broker = build_broker(redis_url, redis_namespace)
    publisher = Publisher(broker)
    web.app.state.deps = dataclasses.replace(
        web.app.state.deps, pauses=PauseService(store=store, publish=publisher.fulfil)
    )
    stream, watch = Stream(fleet), PurchaseWatch(fleet.sim_url)
    try:
        log_in(tab, name="Ama")
        expect(tab.locator("#fleet-running")).to_be_visible()
        watch.start()
        stream.start()
        fleet.wait_until(
            lambda: fleet.ledger()["totals"]["deliveries"] >= 15,
            timeout=60,
            what="the fleet to deliver the first orders of the stream",
        )

        # Pause the whole fleet from the dashboard
        tab.click("#pause-control summary")
        tab.select_option("#pause-scope", "*")
        tab.fill("#pause-reason", "vendor maintenance window")
        shoot("pause-form")
        clicked = time.monotonic()
        tab.click("#pause-submit")
        expect(tab.locator("#pause-banner")).to_be_visible()
        shown = time.monotonic()
        expect(tab.locator("#flash")).to_contain_text("The whole fleet is paused")
        expect(tab.locator("#pause-fleet")).to_contain_text("vendor maintenance window")
        expect(tab.locator("#pause-fleet .pause-who")).to_have_text("Ama")

        # wait until no purchase has started for QUIET_S
        deadline = clicked + STOP_BOUND_S + QUIET_S + 20
        while time.monotonic() - max(clicked, watch.last_rise() or clicked) < QUIET_S:
            fleet.check_alive()
            assert time.monotonic() < deadline, "purchases never stopped after the pause"
            time.sleep(POLL_S)
        last = watch.last_rise()
        stopped_after_s = 0.0 if last is None or last < clicked else last - clicked
        print(
            f"\npause: last purchase started {stopped_after_s:.2f} s after the click on Pause "
            f"(the banner showed {shown - clicked:.2f} s after it; ledger read every "
            f"{POLL_S * 1000:.0f} ms)"
        )
        assert stopped_after_s < STOP_BOUND_S
        quiet_from = db_now(store)
        purchases_at_quiet = watch.count

        # orders keep coming while paused: they wait, untouched
        time.sleep(PAUSED_STREAM_S)
        stream.stop()
        while_paused = stream.orders(after=shown)
        assert len(while_paused) >= RATE_PER_S, "the stream went on while paused"
        fleet.wait_until(
            lambda: fleet.unfinished_messages() == 0,
            timeout=30,
            what="the workers to take every message published while paused",
        )
        time.sleep(1.0)  # a claim or a purchase would show by now
        assert watch.count == purchases_at_quiet, "a purchase started while paused"
        seen = fleet.ledger()["references"]
        for oid in while_paused:
            row = fleet.order(oid)
            assert row["fulfillment_status"] == "pending", oid
            assert row["fulfillment_attempts"] == 0, oid
            assert fleet.logs(oid) == [], oid
            assert oid not in seen, f"{oid} reached the vendor while paused"
        tab.reload()
        expect(tab.locator("#pause-banner")).to_contain_text("paused by Ama")
        shoot("pause-banner")

        # Resume: every order is delivered, each exactly once
        resume_at = db_now(store)
        tab.click("#resume-fleet")
        expect(tab.locator("#flash")).to_contain_text("The whole fleet resumed")
        expect(tab.locator("#pause-banner")).to_have_count(0)
        expect(tab.locator("#fleet-running")).to_be_visible()
        shoot("pause-resumed")
        every = stream.orders()
        fleet.wait_until(
            lambda: all(fleet.status(o) == "success" for o in every),
            timeout=90,
            what="every order of the stream to be delivered after the resume",
        )
    finally:
        watch.stop()
        stream.halt()  # stopped on the way already, unless the test failed before
        broker.close()

    ledger = fleet.ledger()["references"]
    assert {oid: ledger[oid]["deliveries"] for oid in every} == dict.fromkeys(every, 1)
    for oid in while_paused:
        assert fleet.order(oid)["fulfillment_attempts"] == 1, oid
        assert fleet.purchases(oid) == [(1, "success", None)], oid
        assert ledger[oid]["purchase_requests"] == 1, oid
    assert purchases_logged_between(store, quiet_from, resume_at) == 0, (
        "an attempt was spent during the pause"
    )
    assert fleet.vendor_breaches() == []
