"""The fulfil service against real PostgreSQL and the simulator over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis

from db.store import Store
from fulfillment.dev.simulator.server import Simulator
from fulfillment.domain.errors import OrderNotFound, StoreError
from fulfillment.fleet.breaker import BreakerPolicy, VendorBreaker
from fulfillment.services.delivery import fulfil
from fulfillment.services.ports import FulfilDeps, NoBreaker, Outcome

from .conftest import Sent

pytestmark = pytest.mark.integration

Deps = Callable[..., FulfilDeps]
NewOrder = Callable[..., str]


def script(
    sim: Simulator, reference: str, responses: list[str], status_responses: list[str] | None = None
) -> None:
    body: dict[str, object] = {"reference": reference, "responses": responses}
    if status_responses is not None:
        body["status_responses"] = status_responses
    httpx.post(sim.url.replace("/v1", "/_sim/script"), json=body).raise_for_status()


def purchases(store: Store, order_id: str) -> list[tuple[int, str, str | None]]:
    return [
        (r["attempt_number"], r["status"], r["error_code"])
        for r in store.order_logs(order_id)
        if r["action"] == "purchase"
    ]


def test_success_delivers_once_and_logs_one_attempt(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder
) -> None:
    oid = new_order()
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    row = store.order_row(oid)
    assert row is not None
    assert row["fulfillment_status"] == "success" and row["fulfilled_at"] is not None
    assert row["vendor_transaction_id"]
    logs = store.order_logs(oid)
    assert len(logs) == 1
    log = logs[0]
    assert (log["action"], log["status"], log["attempt_number"], log["max_attempts"]) == (
        "purchase",
        "success",
        1,
        3,
    )
    assert log["latency_ms"] is not None and log["api_response"]["status"] == "success"
    assert sim.ledger.deliveries(oid) == 1
    # A duplicate message afterwards changes nothing.
    assert fulfil(oid, make_deps()) is Outcome.NOT_DUE
    assert sim.ledger.deliveries(oid) == 1


def make_due(store: Store, order_id: str) -> None:
    """Let the retry's delay pass without sleeping through it."""
    with store.pool.connection() as conn:
        conn.execute("UPDATE orders SET next_attempt_at = now() WHERE id = %s", (order_id,))


def test_transient_failure_then_success_after_the_delay(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, sent: Sent
) -> None:
    oid = new_order()
    script(sim, oid, ["error"])
    deps = make_deps()
    deps = make_deps(
        policy=deps.policy.__class__(
            delays=(60, 120),
            max_attempts=3,
            max_deferrals=5,
            max_status_checks=5,
            status_check_delay_s=1,
        )
    )
    assert fulfil(oid, deps) is Outcome.RETRY_SCHEDULED
    assert sent.retries == [(oid, 60)]
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "failed"
    assert row["fulfillment_attempts"] == 1
    log = store.order_logs(oid)[0]
    assert (log["retry_after"] - log["created_at"]).total_seconds() == pytest.approx(60, abs=1)
    assert fulfil(oid, deps) is Outcome.NOT_DUE  # an early duplicate does nothing
    make_due(store, oid)
    assert fulfil(oid, deps) is Outcome.SUCCESS
    assert purchases(store, oid) == [(1, "failed", "VENDOR_5XX"), (2, "success", None)]
    checks = [r for r in store.order_logs(oid) if r["action"] == "status_check"]
    # verified before buying again: the vendor knows the reference only as failed
    assert [c["status"] for c in checks] in (["failed"], ["not_found"])
    assert sim.ledger.deliveries(oid) == 1


def test_three_transient_failures_dead_letter(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, sent: Sent
) -> None:
    oid = new_order()
    script(sim, oid, ["error", "error", "error"])
    deps = make_deps(publish_retry=lambda *_: None)
    outcomes = []
    for _ in range(3):
        make_due(store, oid)
        outcomes.append(fulfil(oid, deps))
    assert outcomes == [Outcome.RETRY_SCHEDULED, Outcome.RETRY_SCHEDULED, Outcome.DEAD_LETTERED]
    assert purchases(store, oid) == [
        (1, "failed", "VENDOR_5XX"),
        (2, "failed", "VENDOR_5XX"),
        (3, "failed", "VENDOR_5XX"),
    ]
    row = store.order_row(oid)
    assert row is not None and row["dead_letter_reason"].startswith("3 attempts used up")
    assert [n.order_id for n in sent.dead_letters] == [oid]
    assert sim.ledger.deliveries(oid) == 0


def test_permanent_error_dead_letters_without_retry(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, sent: Sent
) -> None:
    oid = new_order()
    script(sim, oid, ["invalid_phone"])
    assert fulfil(oid, make_deps()) is Outcome.DEAD_LETTERED
    assert sent.retries == []
    assert purchases(store, oid) == [(1, "failed", "INVALID_PHONE")]
    assert sent.dead_letters[0].error_code == "INVALID_PHONE"


def test_lost_response_is_verified_and_delivered_once(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder
) -> None:
    oid = new_order()
    script(sim, oid, ["drop_after_delivery"])
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    assert purchases(store, oid) == [(1, "success", "CONNECTION_ERROR")]
    assert sim.ledger.deliveries(oid) == 1


def test_garbage_answer_is_verified_not_trusted(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, sent: Sent
) -> None:
    oid = new_order()
    script(sim, oid, ["garbage"])
    assert fulfil(oid, make_deps()) is Outcome.RETRY_SCHEDULED
    assert purchases(store, oid) == [(1, "failed", "BAD_VENDOR_RESPONSE")]
    assert sim.ledger.deliveries(oid) == 0


def test_pending_answer_schedules_checks_without_spending_attempts(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, sent: Sent
) -> None:
    oid = new_order()
    script(sim, oid, ["pending"])
    deps = make_deps()
    assert fulfil(oid, deps) is Outcome.PENDING
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "processing"
    assert sent.retries == [(oid, 0.2)]
    time.sleep(0.4)
    assert fulfil(oid, deps) is Outcome.SUCCESS
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_attempts"] == 1
    assert sim.ledger.deliveries(oid) == 1


def test_duplicate_messages_at_once_deliver_once(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder
) -> None:
    sim.update_faults({"latency_ms": 200})
    oid = new_order()
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(fulfil(oid, make_deps()))) for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == sorted([Outcome.SUCCESS] + [Outcome.NOT_DUE] * 4)
    assert sim.ledger.deliveries(oid) == 1
    assert len(purchases(store, oid)) == 1


def test_worker_killed_mid_call_is_recovered_from_the_vendor(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder
) -> None:
    """A claim whose worker died after the vendor delivered: recovery confirms, never rebuys."""
    oid = new_order()
    claim = store.claim(
        oid, "00000000-0000-0000-0000-000000000001", ttl_s=0.1, early_s=0, networks=["at-ishare"]
    )
    assert claim is not None
    assert store.begin_purchase(oid, "00000000-0000-0000-0000-000000000001", 1, ttl_s=0.1)
    # ... the vendor got the purchase, then the worker was SIGKILLed:
    client = make_deps().routes["at-ishare"].client
    client.purchase(claim.order.request())
    time.sleep(0.2)
    assert fulfil(oid, make_deps(), allow_purchase=False) is Outcome.SUCCESS
    assert purchases(store, oid) == [(1, "success", None)]
    assert sim.ledger.deliveries(oid) == 1


@pytest.mark.parametrize("marked_by", ["claim", "begin_purchase"])
def test_worker_killed_before_the_vendor_got_it_is_bought_again(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, marked_by: str
) -> None:
    """A fresh order's attempt 1 is marked in flight by its claim; a retry's by begin_purchase.
    Either way a worker killed before the POST left a mark the next worker must check."""
    oid = new_order()
    token = "00000000-0000-0000-0000-000000000002"
    claim = store.claim(
        oid, token, ttl_s=0.1, early_s=0, networks=["at-ishare"], begin=marked_by == "claim"
    )
    assert claim is not None and claim.purchase_begun is (marked_by == "claim")
    if marked_by == "begin_purchase":
        assert store.begin_purchase(oid, token, 1, ttl_s=0.1)
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_in_flight_attempt"] == 1
    time.sleep(0.2)
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    assert purchases(store, oid) == [(1, "failed", "WORKER_LOST"), (2, "success", None)]
    assert sim.ledger.deliveries(oid) == 1


def test_invalid_order_rows_dead_letter_without_a_vendor_call(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, sent: Sent
) -> None:
    oid = new_order(phone="12345")
    assert fulfil(oid, make_deps()) is Outcome.DEAD_LETTERED
    assert sent.dead_letters[0].error_code == "INVALID_PHONE"
    assert sim.ledger.snapshot()["totals"]["purchase_requests"] == 0
    row = store.order_row(oid)  # its claim had marked attempt 1: cleared, nothing was spent
    assert row is not None and row["fulfillment_in_flight_attempt"] is None
    assert row["fulfillment_attempts"] == 0


def test_unknown_order_raises(store: Store, make_deps: Deps) -> None:
    with pytest.raises(OrderNotFound):
        fulfil("3f1c0a52-8a53-4d8e-9a43-3e6f0c2b8f11", make_deps())


def test_kill_switch_leaves_orders_pending(
    store: Store, make_deps: Deps, new_order: NewOrder
) -> None:
    oid = new_order()
    assert fulfil(oid, make_deps(enabled=False)) is Outcome.DISABLED
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "pending"


class _CountingStore:
    """The real store, counting which of its statements the service runs."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._store, name)
        if callable(attr):

            def counted(*args: object, **kwargs: object) -> object:
                self.calls.append(name)
                return attr(*args, **kwargs)

            return counted
        return attr


def test_a_fresh_order_costs_two_statements(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder
) -> None:
    """The claim marks attempt 1 in flight itself; the answer is one statement too."""
    oid = new_order()
    counting = _CountingStore(store)
    assert fulfil(oid, make_deps(store=counting)) is Outcome.SUCCESS
    assert counting.calls == ["claim", "finish_call"]
    # A retry still marks its attempt just before the POST.
    retry = new_order()
    script(sim, retry, ["error"])
    assert fulfil(retry, make_deps()) is Outcome.RETRY_SCHEDULED
    make_due(store, retry)
    counting.calls.clear()
    assert fulfil(retry, make_deps(store=counting)) is Outcome.SUCCESS
    assert counting.calls == ["claim", "finish_call", "begin_purchase", "finish_call"]


class _Denied:
    allowed = False
    probe = False
    retry_in_s = 3.0


class _ClosedCircuit(NoBreaker):
    def __init__(self, *, deny: bool = False, fail: bool = False) -> None:
        self.deny, self.fail = deny, fail

    def allow(self) -> object:
        if self.fail:
            raise RuntimeError("breaker broke")
        return _Denied() if self.deny else super().allow()


def _fresh_again(store: Store, order_id: str) -> None:
    row = store.order_row(order_id)
    assert row is not None
    assert (row["fulfillment_in_flight_attempt"], row["fulfillment_attempts"]) == (None, 0)
    assert row["claim_token"] is None and row["fulfillment_status"] == "pending"


@pytest.mark.parametrize("breaker", [_ClosedCircuit(deny=True), _ClosedCircuit(fail=True)])
def test_a_fresh_order_that_leaves_before_the_purchase_keeps_no_mark(
    store: Store,
    sim: Simulator,
    make_deps: Deps,
    new_order: NewOrder,
    sent: Sent,
    breaker: _ClosedCircuit,
) -> None:
    """Deferred by the circuit, or an unexpected error before the POST: nothing was sent, so
    the next worker buys at once (no WORKER_LOST attempt, no status check first)."""
    oid = new_order()
    if breaker.fail:
        with pytest.raises(RuntimeError):
            fulfil(oid, make_deps(breaker=breaker))
    else:
        assert fulfil(oid, make_deps(breaker=breaker)) is Outcome.DEFERRED
        assert sent.retries and sent.retries[0][0] == oid
        make_due(store, oid)
    _fresh_again(store, oid)
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    assert [(r["action"], r["status"], r["attempt_number"]) for r in store.order_logs(oid)] == [
        ("purchase", "success", 1)
    ]
    assert sim.ledger.deliveries(oid) == 1


@pytest.mark.parametrize(
    ("pause_s", "claim_ttl_s", "outcome"),
    [(0.3, 30.0, Outcome.SUCCESS), (5.0, 30.0, Outcome.DEFERRED), (0.45, 1.0, Outcome.DEFERRED)],
)
def test_a_short_pause_is_waited_out_in_place_a_long_one_hands_the_order_back(
    store: Store,
    sim: Simulator,
    make_deps: Deps,
    new_order: NewOrder,
    sent: Sent,
    redis_url: str,
    redis_namespace: str,
    pause_s: float,
    claim_ttl_s: float,
    outcome: Outcome,
) -> None:
    """A 429's Retry-After of a second: the worker waits and buys (no re-enqueue churn).
    Longer than BREAKER_WAIT_IN_PLACE_S, or than half the claim's lease: handed back."""
    breaker = VendorBreaker(
        redis.Redis.from_url(redis_url),
        redis_namespace,
        BreakerPolicy(window_s=10, min_calls=5, failure_ratio=0.5, open_s=4, max_open_s=10),
    )
    breaker.trip(pause_s, "rate_limited", alert=False)
    oid = new_order()
    started = time.monotonic()
    deps = make_deps(breaker=breaker, wait_in_place_s=2.0, claim_ttl_s=claim_ttl_s)
    assert fulfil(oid, deps) is outcome
    if outcome is Outcome.SUCCESS:
        assert time.monotonic() - started >= pause_s
        assert sent.retries == [] and sim.ledger.deliveries(oid) == 1
    else:
        assert [oid for oid, _ in sent.retries] == [oid] and sim.ledger.deliveries(oid) == 0
        _fresh_again(store, oid)


class _SlowGate:
    """A rate-limit slot that takes a while to come (a busy fleet)."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s

    @contextmanager
    def slot(self, max_wait_s: float | None = None) -> Iterator[bool]:
        time.sleep(self.wait_s)
        yield True


def test_a_claim_held_a_while_before_the_purchase_has_its_lease_renewed(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder
) -> None:
    """The claim marked attempt 1 but its lease has run (waiting for a slot): begin_purchase
    renews it before the POST, so a reconciler cannot take the order over mid-call."""
    oid = new_order()
    counting = _CountingStore(store)
    deps = make_deps(store=counting, gate=_SlowGate(0.3), claim_ttl_s=1.0)
    assert fulfil(oid, deps) is Outcome.SUCCESS
    assert counting.calls == ["claim", "begin_purchase", "finish_call"]
    assert sim.ledger.deliveries(oid) == 1


class _FailingStore(_CountingStore):
    """The real store, with one statement failing as if the database went away."""

    def __init__(self, store: Store, failing: str) -> None:
        super().__init__(store)
        self.failing = failing

    def __getattr__(self, name: str) -> object:
        if name == self.failing:

            def fail(*_args: object, **_kwargs: object) -> object:
                raise StoreError("database went away")

            return fail
        return super().__getattr__(name)


@pytest.mark.parametrize("failing", ["begin_purchase", "defer"])
def test_a_database_error_before_the_purchase_keeps_no_mark(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, failing: str
) -> None:
    """The lease renewal (begin_purchase) or the hand-back (defer) fails: nothing was sent,
    so the claim is released with attempt 1 unmarked, and the next message buys at once."""
    oid = new_order()
    broken = _FailingStore(store, failing)
    if failing == "defer":
        deps = make_deps(store=broken, breaker=_ClosedCircuit(deny=True))
    else:  # the lease has run past a quarter while waiting for a slot: it is renewed
        deps = make_deps(store=broken, gate=_SlowGate(0.3), claim_ttl_s=1.0)
    with pytest.raises(StoreError):
        fulfil(oid, deps)
    _fresh_again(store, oid)
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    assert purchases(store, oid) == [(1, "success", None)]
