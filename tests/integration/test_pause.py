"""The runtime pause on real PostgreSQL, with the simulator over real HTTP: what a paused
scope holds (worker claims, the reconciler's re-enqueues), what goes on (vendor callbacks,
expired claims' recovery, dead letters), how resume hands the waiting orders back, the audit
and the metric."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import redis

from db.store import Store
from fulfillment.dev.simulator.server import Simulator
from fulfillment.domain.errors import InvalidOrder
from fulfillment.services.delivery import confirm_delivery, fulfil
from fulfillment.services.notifier import Notifier
from fulfillment.services.pauses import PauseService
from fulfillment.services.ports import FulfilDeps, Outcome
from fulfillment.services.reconciler import reconcile_once

from .conftest import Sent
from .test_fulfil import make_due, script

pytestmark = pytest.mark.integration

Deps = Callable[..., FulfilDeps]
NewOrder = Callable[..., str]


@pytest.fixture
def published() -> list[tuple[str, float]]:
    return []


@pytest.fixture
def pauses(store: Store, published: list[tuple[str, float]]) -> PauseService:
    return PauseService(store=store, publish=lambda oid, delay: published.append((oid, delay)))


def sql(store: Store, query: str, *params: Any) -> list[dict[str, Any]]:
    with store.pool.connection() as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        rows: list[dict[str, Any]] = cur.fetchall() if cur.description else []
        return rows


def frozen(store: Store, sim: Simulator, order_ids: list[str]) -> dict[str, Any]:
    """Everything a worker could have spent or changed: each order's row (attempts, status,
    schedule, updated_at...), its fulfillment_logs rows and the vendor's counters."""
    rows = {oid: store.order_row(oid) for oid in order_ids}
    logs = {oid: [r["id"] for r in store.order_logs(oid)] for oid in order_ids}
    totals = sim.ledger.snapshot()["totals"]
    vendor = {k: totals[k] for k in ("deliveries", "purchase_requests", "status_requests")}
    return {"rows": rows, "logs": logs, "vendor": vendor}


def waiting_orders(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, sent: Sent
) -> dict[str, str]:
    """One order of each state a worker would take: never tried, a retry due, a status check
    due (the vendor said pending)."""
    deps = make_deps()
    retry, check = new_order(), new_order()
    script(sim, retry, ["error"])
    assert fulfil(retry, deps) is Outcome.RETRY_SCHEDULED
    script(sim, check, ["pending"])
    assert fulfil(check, deps) is Outcome.PENDING
    for oid in (retry, check):
        make_due(store, oid)
    sent.retries.clear()
    return {"pending": new_order(), "retry": retry, "status_check": check}


# -- what a pause holds ----------------------------------------------------------------------


@pytest.mark.parametrize("network", [None, "at-ishare"])
def test_a_paused_scope_claims_nothing_and_spends_nothing(
    store: Store,
    sim: Simulator,
    make_deps: Deps,
    new_order: NewOrder,
    sent: Sent,
    pauses: PauseService,
    network: str | None,
) -> None:
    orders = waiting_orders(store, sim, make_deps, new_order, sent)
    ids = list(orders.values())
    pauses.pause(network=network, reason="vendor maintenance window", actor="ama")
    before = frozen(store, sim, ids)
    deps = make_deps()
    for _ in range(2):  # a duplicate message too
        assert [fulfil(oid, deps) for oid in ids] == [Outcome.PAUSED] * 3
    assert frozen(store, sim, ids) == before  # no attempt, no log row, no vendor call
    assert sent.retries == []  # nothing sent again: the resume re-enqueues
    attempts = {k: (store.order_row(v) or {})["fulfillment_attempts"] for k, v in orders.items()}
    assert attempts == {"pending": 0, "retry": 1, "status_check": 1}


def test_a_pause_of_another_network_does_not_stop_at_ishare_orders(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, pauses: PauseService
) -> None:
    pauses.pause(network="mtn", reason="MTN aggregator down", actor="ama")
    oid = new_order()
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    assert sim.ledger.deliveries(oid) == 1


def test_a_pause_takes_effect_at_the_next_claim_and_a_resume_likewise(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, pauses: PauseService
) -> None:
    """No cache: the claim reads fleet_pauses, so the same deps (one process) see each change."""
    deps = make_deps()
    first, second, third = new_order(), new_order(), new_order()
    assert fulfil(first, deps) is Outcome.SUCCESS
    pauses.pause(network=None, reason="stop", actor="ama")
    assert fulfil(second, deps) is Outcome.PAUSED
    pauses.resume(network=None, actor="ama")
    assert fulfil(third, deps) is Outcome.SUCCESS
    assert fulfil(second, deps) is Outcome.SUCCESS


def test_a_finished_order_is_not_reported_paused(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, pauses: PauseService
) -> None:
    done, later = new_order(), new_order()
    deps = make_deps()
    assert fulfil(done, deps) is Outcome.SUCCESS
    script(sim, later, ["error"])
    deps_slow = make_deps(policy=replace(deps.policy, delays=(3600.0,)))
    assert fulfil(later, deps_slow) is Outcome.RETRY_SCHEDULED  # due in an hour
    pauses.pause(network=None, reason="stop", actor="ama")
    assert fulfil(done, deps) is Outcome.NOT_DUE  # delivered: not the fleet's any more
    assert fulfil(later, deps) is Outcome.PAUSED  # open: it waits, whatever its schedule


def test_vendor_callbacks_still_confirm_deliveries_while_paused(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, pauses: PauseService
) -> None:
    oid = new_order()
    script(sim, oid, ["pending"])
    deps = make_deps()
    assert fulfil(oid, deps) is Outcome.PENDING
    pauses.pause(network=None, reason="stop", actor="ama")
    time.sleep(0.4)  # the simulator delivers a pending purchase after 0.3 s
    make_due(store, oid)
    assert fulfil(oid, deps) is Outcome.PAUSED  # the worker's status check waits...
    assert confirm_delivery(oid, deps) is Outcome.SUCCESS  # ...the callback's lookup does not
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "success"
    assert row["fulfillment_attempts"] == 1
    assert sim.ledger.deliveries(oid) == 1


# -- the reconciler --------------------------------------------------------------------------


def test_the_reconciler_requeues_nothing_that_would_buy_in_a_paused_scope(
    store: Store,
    sim: Simulator,
    make_deps: Deps,
    new_order: NewOrder,
    sent: Sent,
    pauses: PauseService,
) -> None:
    notifier = Notifier(store=store, webhook_url=None)
    orders = waiting_orders(store, sim, make_deps, new_order, sent)
    sql(store, "UPDATE orders SET created_at = now() - interval '1 hour'")
    sql(
        store,
        "UPDATE orders SET next_attempt_at = now() - interval '1 hour'"
        " WHERE next_attempt_at IS NOT NULL",
    )
    # a worker died mid-call (its claim expired), and a dead letter the consumer never flagged
    crashed, unflagged = new_order(), new_order(phone="12345")
    claim = store.claim(
        crashed,
        "00000000-0000-4000-8000-0000000000c1",
        ttl_s=0.05,
        early_s=0,
        networks=["at-ishare"],
    )
    assert claim is not None
    assert store.begin_purchase(crashed, "00000000-0000-4000-8000-0000000000c1", 1, ttl_s=0.05)
    assert fulfil(unflagged, make_deps()) is Outcome.DEAD_LETTERED
    sql(
        store,
        "UPDATE orders SET dead_letter_requested_at = now() - interval '1 hour' WHERE id = %s",
        unflagged,
    )
    time.sleep(0.1)
    sent.retries.clear()
    sent.dead_letters.clear()

    pauses.pause(network="at-ishare", reason="stop", actor="ama")
    report = reconcile_once(make_deps(), notifier, grace_s=60)
    assert report.by_reason == {"claim_expired": 1, "dead_letter_unflagged": 1}
    assert [n.order_id for n in sent.dead_letters] == [unflagged]
    # the recovery asked the vendor (it never got the purchase) and handed the order back
    # without buying; its re-enqueued message then waits for the resume like the others
    vendor = sim.ledger.snapshot()["references"][crashed]
    assert (vendor["status_requests"], vendor["purchase_requests"]) == (1, 0)
    recovered = store.order_row(crashed)
    assert recovered is not None and recovered["claim_token"] is None
    waiting = set(orders.values())
    assert waiting.isdisjoint(oid for oid, _ in sent.retries)
    for oid, _ in sent.retries:
        assert fulfil(oid, make_deps()) is Outcome.PAUSED

    pauses.resume(network="at-ishare", actor="ama")
    sql(store, "UPDATE orders SET last_enqueued_at = NULL")  # as if the resume's grace had passed
    sent.retries.clear()
    report = reconcile_once(make_deps(), notifier, grace_s=60)
    assert report.by_reason.get("pending_unstarted") == 1
    assert report.by_reason.get("retry_overdue") == 1
    assert report.by_reason.get("status_check_overdue") == 1
    assert waiting <= {oid for oid, _ in sent.retries}


# -- resume ----------------------------------------------------------------------------------


def test_resume_requeues_the_waiting_orders_oldest_first_and_each_delivers_once(
    store: Store,
    sim: Simulator,
    make_deps: Deps,
    new_order: NewOrder,
    sent: Sent,
    pauses: PauseService,
    published: list[tuple[str, float]],
) -> None:
    orders = waiting_orders(store, sim, make_deps, new_order, sent)
    old, older = new_order(), new_order()
    # not for the resume: due later, a human's, another network's, held by a live worker
    later, dead, mtn, held = new_order(), new_order(phone="12345"), new_order(), new_order()
    assert fulfil(dead, make_deps()) is Outcome.DEAD_LETTERED
    sql(store, "UPDATE orders SET network = 'mtn' WHERE id = %s", mtn)
    assert store.claim(
        held, "00000000-0000-4000-8000-0000000000d1", ttl_s=60, early_s=0, networks=["at-ishare"]
    )
    sql(
        store,
        "UPDATE orders SET fulfillment_status = 'failed', next_attempt_at = now() + interval"
        " '1 hour' WHERE id = %s",
        later,
    )
    # when each fell due: the retry an hour ago, `older` 50 minutes ago (created)...
    ages = {
        orders["retry"]: 60,
        older: 50,
        orders["status_check"]: 40,
        old: 30,
        orders["pending"]: 20,
    }
    for oid, minutes in ages.items():
        column = "created_at" if oid in (older, old, orders["pending"]) else "next_attempt_at"
        sql(
            store,
            f"UPDATE orders SET {column} = now() - make_interval(mins => %s) WHERE id = %s",
            minutes,
            oid,
        )
    pauses.pause(network=None, reason="stop", actor="ama")
    deps = make_deps()
    assert {fulfil(oid, deps) for oid in ages} == {Outcome.PAUSED}

    result = pauses.resume(network=None, actor="kofi")
    assert (result.was_paused, result.requeued, result.more_waiting) == (True, 5, False)
    assert published == [(oid, 0.0) for oid in ages]  # oldest due first
    stamped = sql(
        store,
        "SELECT id::text AS id FROM orders WHERE last_enqueued_at > now() -"
        " interval '1 minute' AND id = ANY(%s::uuid[])",
        list(ages),
    )
    assert {r["id"] for r in stamped} == set(ages)
    # the reconciler leaves them for its grace period: the resume's messages are out
    assert reconcile_once(deps, Notifier(store=store, webhook_url=None), grace_s=60).total == 0
    time.sleep(0.4)  # the simulator delivers the status check's pending purchase after 0.3 s
    for oid, _ in published:
        assert fulfil(oid, deps) is Outcome.SUCCESS
    for oid, _ in published:
        assert fulfil(oid, deps) is Outcome.NOT_DUE  # a duplicate changes nothing
        assert sim.ledger.deliveries(oid) == 1
    assert sim.ledger.deliveries(later) == sim.ledger.deliveries(mtn) == 0


def test_a_resume_with_redis_away_says_so_and_leaves_the_orders_to_the_reconciler(
    store: Store, new_order: NewOrder
) -> None:
    """The real publisher on a broker nobody answers: nothing is counted as re-enqueued, the
    audit says the re-enqueue was interrupted, and the reconciler's next pass (not its grace
    period) sends the orders."""
    from fulfillment.dev.embedded import free_port
    from fulfillment.messaging.publish import Publisher, build_broker

    dead = Publisher(build_broker(f"redis://127.0.0.1:{free_port()}/0", "pause-test"))
    service = PauseService(store=store, publish=dead.fulfil)
    ids = [new_order() for _ in range(2)]
    old = "UPDATE orders SET created_at = now() - interval '1 hour' WHERE id = ANY(%s::uuid[])"
    sql(store, old, ids)
    service.pause(network=None, reason="stop", actor="ama")
    result = service.resume(network=None, actor="ama")
    assert (result.requeued, result.not_sent) == (0, 2)
    assert "could not be sent" in result.message
    stamps = sql(store, "SELECT last_enqueued_at FROM orders WHERE id = ANY(%s::uuid[])", ids)
    assert [r["last_enqueued_at"] for r in stamps] == [None, None]
    audit = sql(store, "SELECT details FROM admin_audit WHERE action = 'resume'")[-1]["details"]
    assert audit["requeue_interrupted"] is True and audit["requeued"] == 0
    due = store.sweep_due_orders(grace_s=300)
    assert {d.order_id for d in due} == set(ids)


def test_a_purchase_that_waited_for_a_slot_asks_again_and_buys_nothing_once_paused(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, pauses: PauseService
) -> None:
    """Claimed before the pause, then held by the fleet's rate limit (up to half the lease)
    while an admin pauses: the purchase is not sent, the order goes back as it was."""
    from contextlib import contextmanager

    @dataclass
    class SlowGate:
        waited: int = 0

        @contextmanager
        def slot(self, max_wait_s: float | None = None) -> Iterator[bool]:
            if not self.waited:
                pauses.pause(network=None, reason="held mid-wait", actor="ama")
                time.sleep(1.2)  # a rate-limit slot waited for
            self.waited += 1
            yield True

    oid = new_order()
    before = store.order_row(oid)
    assert fulfil(oid, make_deps(gate=SlowGate())) is Outcome.PAUSED
    after = store.order_row(oid)
    assert (after["fulfillment_status"], after["fulfillment_attempts"]) == ("pending", 0)
    assert after["fulfillment_in_flight_attempt"] is None and after["claim_token"] is None
    assert before["fulfillment_attempts"] == 0
    assert store.order_logs(oid) == []
    assert sim.ledger.snapshot()["totals"]["purchase_requests"] == 0
    pauses.resume(network=None, actor="ama")
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    assert sim.ledger.deliveries(oid) == 1


def test_resume_re_enqueues_at_most_its_limit(
    store: Store, new_order: NewOrder, published: list[tuple[str, float]]
) -> None:
    service = PauseService(store=store, publish=lambda o, d: published.append((o, d)))
    service.requeue_limit = 2
    ids = [new_order() for _ in range(3)]
    for minutes, oid in zip((30, 20, 10), ids, strict=True):
        sql(
            store,
            "UPDATE orders SET created_at = now() - make_interval(mins => %s) WHERE id = %s",
            minutes,
            oid,
        )
    service.pause(network=None, reason="stop", actor="ama")
    result = service.resume(network=None, actor="ama")
    assert (result.requeued, result.more_waiting) == (2, True)
    assert [oid for oid, _ in published] == ids[:2]
    assert "the reconciler re-enqueues the rest" in result.message


def test_the_fleet_resume_leaves_a_network_paused_on_its_own_waiting(
    store: Store,
    new_order: NewOrder,
    make_deps: Deps,
    pauses: PauseService,
    published: list[tuple[str, float]],
) -> None:
    oid = new_order()
    pauses.pause(network=None, reason="everything", actor="ama")
    pauses.pause(network="at-ishare", reason="at-ishare alone", actor="ama")

    fleet = pauses.resume(network=None, actor="ama")
    assert (fleet.was_paused, fleet.requeued, fleet.still_held_by) == (True, 0, ("at-ishare",))
    assert "still paused: network at-ishare" in fleet.message
    assert published == []
    assert fulfil(oid, make_deps()) is Outcome.PAUSED

    pauses.pause(network=None, reason="everything again", actor="ama")
    network = pauses.resume(network="at-ishare", actor="ama")
    assert (network.requeued, network.still_held_by) == (0, ("*",))
    assert "still paused: the whole fleet" in network.message
    assert published == []

    last = pauses.resume(network=None, actor="ama")
    assert (last.requeued, last.still_held_by) == (1, ())
    assert published == [(oid, 0.0)]
    assert pauses.list() == []


# -- the service's rules and audit ---------------------------------------------------------


def audit_rows(store: Store) -> list[dict[str, Any]]:
    return sql(
        store,
        "SELECT actor, action, reason, details FROM admin_audit WHERE order_id IS NULL ORDER BY id",
    )


def test_pause_and_resume_are_audited_and_a_second_pause_keeps_the_first(
    store: Store, new_order: NewOrder, pauses: PauseService
) -> None:
    new_order()
    first = pauses.pause(network="at-ishare", reason="  vendor maintenance  ", actor="alice")
    assert (first.scope, first.label, first.reason, first.paused_by) == (
        "at-ishare",
        "network at-ishare",
        "vendor maintenance",
        "alice",
    )
    assert not first.already_paused and first.age_s < 5
    again = pauses.pause(network="AT-ISHARE", reason="another reason", actor="bob")
    assert again.already_paused and "already paused by alice" in again.message
    assert (again.reason, again.paused_by, again.paused_at) == (
        "vendor maintenance",
        "alice",
        first.paused_at,
    )
    (listed,) = pauses.list()
    assert (listed.scope, listed.paused_by, listed.already_paused) == ("at-ishare", "alice", False)
    assert listed.as_dict()["paused_at"].endswith("Z")

    resumed = pauses.resume(network="at-ishare", actor="carol")
    assert (resumed.was_paused, resumed.requeued) == (True, 1)
    twice = pauses.resume(network="at-ishare", actor="carol")
    assert (twice.was_paused, twice.requeued) == (False, 0)
    assert "was not paused" in twice.message

    rows = audit_rows(store)
    assert [(r["actor"], r["action"], r["reason"]) for r in rows] == [
        ("alice", "pause", "vendor maintenance"),
        ("bob", "pause", "another reason"),
        ("carol", "resume", None),
        ("carol", "resume", None),
    ]
    assert rows[0]["details"]["scope"] == "at-ishare"
    assert rows[0]["details"]["already_paused"] is False
    assert rows[1]["details"]["already_paused"] is True
    assert rows[1]["details"]["paused_by"] == "alice"
    assert rows[2]["details"] | {"paused_for_s": 0} == {
        "scope": "at-ishare",
        "was_paused": True,
        "requeued": 1,
        "more_waiting": False,
        "still_paused": [],
        "paused_by": "alice",
        "paused_reason": "vendor maintenance",
        "paused_for_s": 0,
    }
    assert rows[3]["details"]["was_paused"] is False


@pytest.mark.parametrize(
    ("network", "reason", "actor", "field"),
    [
        ("vodafone", "x", "ama", "network"),
        ("at ishare", "x", "ama", "network"),
        (None, "", "ama", "reason"),
        ("mtn", "   ", "ama", "reason"),
        (None, "x", " ", "actor"),
    ],
)
def test_pause_refuses_bad_input_and_changes_nothing(
    store: Store, pauses: PauseService, network: str | None, reason: str, actor: str, field: str
) -> None:
    with pytest.raises(InvalidOrder) as raised:
        pauses.pause(network=network, reason=reason, actor=actor)
    assert raised.value.field == field
    assert pauses.list() == []
    assert audit_rows(store) == []


def test_resume_refuses_an_unknown_network(store: Store, pauses: PauseService) -> None:
    with pytest.raises(InvalidOrder, match="network: unknown network 'nope'"):
        pauses.resume(network="nope", actor="ama")
    assert audit_rows(store) == []


# -- the metric ------------------------------------------------------------------------------


def test_the_pause_gauges_are_exposed_and_pass_promtool(
    store: Store, pauses: PauseService, redis_url: str, redis_namespace: str
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from fulfillment.runtime.metrics_server import FleetCollector

    class Closed:
        def state(self) -> dict[str, str]:
            return {"state": "closed"}

    client = redis.Redis.from_url(redis_url)
    collector = FleetCollector(store, client, redis_namespace, {"at-ishare": Closed()})

    def scrape() -> tuple[str, dict[tuple[str, str], float]]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        text = generate_latest(registry).decode()
        samples = {
            (s.name, s.labels.get("scope", "")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("fulfillment_pause")
        }
        return text, samples

    _, samples = scrape()
    assert samples == {("fulfillment_paused", "*"): 0.0}  # the series exists when not paused
    pauses.pause(network="mtn", reason="aggregator down", actor="ama")
    pauses.pause(network=None, reason="stop", actor="ama")
    sql(
        store, "UPDATE fleet_pauses SET paused_at = now() - interval '31 minutes' WHERE scope = '*'"
    )
    text, samples = scrape()
    assert {k: v for k, v in samples.items() if k[0] == "fulfillment_paused"} == {
        ("fulfillment_paused", "*"): 1.0,
        ("fulfillment_paused", "mtn"): 1.0,
    }
    assert samples[("fulfillment_pause_age_seconds", "*")] == pytest.approx(31 * 60, abs=30)
    assert 0 <= samples[("fulfillment_pause_age_seconds", "mtn")] < 60
    if shutil.which("promtool"):
        checked = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            text=True,
            capture_output=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
