"""Every network the platform sells: the network-aware status default, orders of networks no
fleet serves left alone, a network another host serves left for it, and the aggregator's
networks fulfilled through the same service as AT-iShare's (real PostgreSQL, real HTTP)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from db.network_store import NetworkStore
from db.store import Store
from fulfillment.dev.simulator import Simulator
from fulfillment.services.delivery import fulfil
from fulfillment.services.ports import FulfilDeps, Outcome, VendorConnection
from fulfillment.vendors.aggregator import AggregatorClient
from tests.integration.conftest import Sent
from tests.integration.test_fulfil import make_due

Deps = Callable[..., FulfilDeps]
NewOrder = Callable[..., str]


@pytest.fixture
def aggregator(sim: Simulator) -> Iterator[AggregatorClient]:
    client = AggregatorClient(
        sim.aggregator_url, sim.aggregator.token, connect_timeout_s=1, read_timeout_s=1
    )
    yield client
    client.close()


@pytest.fixture
def all_networks(store: Store, make_deps: Deps, aggregator: AggregatorClient) -> Deps:
    """make_deps for a process serving all four networks, the aggregator's three through it."""
    NetworkStore(store).record(["mtn", "telecel", "at-bigtime"], by="test")

    def build(**overrides: object) -> FulfilDeps:
        deps = make_deps(**overrides)
        line = VendorConnection("aggregator", "the data aggregator", aggregator)
        routes = {**deps.routes, "mtn": line, "telecel": line, "at-bigtime": line}
        return FulfilDeps(**{**_fields(deps), "routes": routes})

    return build


def _fields(deps: FulfilDeps) -> dict[str, object]:
    return {f.name: getattr(deps, f.name) for f in dataclasses.fields(deps)}


def _insert(store: Store, network: str, *, status: str | None = None, size: float = 2) -> str:
    """An order as the platform inserts it: without a fulfillment status unless given."""
    order_id = str(uuid.uuid4())
    with store.pool.connection() as conn:
        if status is None:
            conn.execute(
                "INSERT INTO orders (id, phone_number, network, size_gb) VALUES (%s, %s, %s, %s)",
                (order_id, "+233241234567", network, size),
            )
        else:
            conn.execute(
                "INSERT INTO orders (id, phone_number, network, size_gb, fulfillment_status) "
                "VALUES (%s, %s, %s, %s, %s)",
                (order_id, "+233241234567", network, size, status),
            )
    return order_id


def _status(store: Store, order_id: str) -> str | None:
    row = store.order_row(order_id)
    assert row is not None
    return row["fulfillment_status"]


def test_the_status_default_follows_the_networks_served(store: Store) -> None:
    ours, not_ours = _insert(store, "at-ishare"), _insert(store, "mtn")
    asked = _insert(store, "telecel", status="pending")
    assert (_status(store, ours), _status(store, not_ours)) == ("pending", None)
    assert _status(store, asked) == "pending"  # an explicit request waits for its network
    counts = store.status_counts_by_network()
    assert counts[("mtn", "unmanaged")] == 1 and counts[("telecel", "unmanaged")] == 1
    assert ("telecel", "pending") not in counts
    assert set(store.oldest_pending_by_network()) == {"at-ishare"}
    assert {d.order_id for d in store.sweep_due_orders(grace_s=0)} <= {ours}

    NetworkStore(store).record(["mtn", "telecel"], by="test")
    later = _insert(store, "mtn")
    assert _status(store, later) == "pending"
    assert _status(store, not_ours) is None  # enabling a network does not adopt its history
    counts = store.status_counts_by_network()
    assert counts[("telecel", "pending")] == 1 and counts[("mtn", "pending")] == 1
    assert set(store.oldest_pending_by_network()) == {"at-ishare", "mtn", "telecel"}

    assert NetworkStore(store).disable("mtn") is not None
    assert _status(store, _insert(store, "mtn")) is None
    assert [n.network for n in NetworkStore(store).list()] == ["at-ishare", "telecel"]


def test_a_network_no_host_serves_is_misrouted_and_left_alone(
    store: Store, make_deps: Deps, sent: Sent
) -> None:
    oid = _insert(store, "mtn", status="pending")
    assert fulfil(oid, make_deps()) is Outcome.NOT_DUE
    assert _status(store, oid) == "pending"
    assert [n.kind for n in sent.dead_letters] == ["misrouted_message"]
    assert sent.retries == []


def test_a_network_another_host_serves_is_left_for_it(
    store: Store, make_deps: Deps, sent: Sent
) -> None:
    NetworkStore(store).record(["mtn"], by="another host")
    oid = _insert(store, "mtn")
    assert fulfil(oid, make_deps(elsewhere_delay_s=10)) is Outcome.ELSEWHERE
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "pending"
    assert row["fulfillment_attempts"] == 0 and row["claim_token"] is None
    assert sent.dead_letters == []
    [(retried, delay)] = sent.retries
    assert retried == oid and 5 <= delay <= 15


@pytest.mark.parametrize(("network", "size"), [("mtn", 2), ("telecel", 1.5), ("at-bigtime", 20)])
def test_the_aggregators_networks_are_delivered_once_there(
    store: Store, sim: Simulator, all_networks: Deps, network: str, size: float
) -> None:
    oid = _insert(store, network, size=size)
    outcome = fulfil(oid, all_networks())
    for _ in range(20):  # queued at the aggregator: the status checks follow
        if outcome is not Outcome.PENDING:
            break
        time.sleep(0.2)
        make_due(store, oid)
        outcome = fulfil(oid, all_networks())
    assert outcome is Outcome.SUCCESS
    row = store.order_row(oid)
    assert row is not None and row["vendor_transaction_id"]
    assert sim.aggregator.ledger.deliveries(oid) == 1
    assert sim.ledger.transaction(oid) is None  # nothing reached AT-iShare
    log = store.order_logs(oid)[0]
    assert log["network"] == network


def test_a_size_the_network_does_not_sell_fails_before_any_call(
    store: Store, sim: Simulator, all_networks: Deps, sent: Sent
) -> None:
    oid = _insert(store, "at-bigtime", size=2)
    assert fulfil(oid, all_networks()) is Outcome.DEAD_LETTERED
    row = store.order_row(oid)
    assert row is not None and row["last_error_code"] == "INVALID_PACKAGE"
    assert sim.aggregator.ledger.transaction(oid) is None
    assert [n.error_code for n in sent.dead_letters] == ["INVALID_PACKAGE"]


def test_a_recipient_the_aggregator_refuses_is_permanent(
    store: Store, sim: Simulator, all_networks: Deps, sent: Sent
) -> None:
    sim.aggregator.update_faults({"invalid_phone_suffix": "4567"})
    oid = _insert(store, "telecel")
    assert fulfil(oid, all_networks()) is Outcome.DEAD_LETTERED
    row = store.order_row(oid)
    assert row is not None and row["last_error_code"] == "INVALID_PHONE"
    assert row["fulfillment_attempts"] == 1
    assert sim.aggregator.ledger.deliveries(oid) == 0


def test_an_empty_wallet_at_the_aggregator_holds_the_order_until_it_is_topped_up(
    store: Store, sim: Simulator, all_networks: Deps
) -> None:
    """The aggregator answers a repeated Idempotency-Key with its first answer: a held order
    (402 LOW_WALLET) must come back with a new key, or it would meet the old 402 forever."""
    sim.aggregator.update_faults({"balance": 1.0})  # too little for 2 GB
    oid = _insert(store, "mtn", size=2)
    assert fulfil(oid, all_networks()) is Outcome.RETRY_SCHEDULED
    row = store.order_row(oid)
    assert row is not None and row["last_error_code"] == "INSUFFICIENT_BALANCE"
    assert row["fulfillment_attempts"] == 0  # a hold keeps the attempt
    sim.aggregator.update_faults({"balance": 100_000.0})  # topped up
    for _ in range(3):
        make_due(store, oid)
        if fulfil(oid, all_networks()) is Outcome.SUCCESS:
            break
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "success", row
    assert sim.aggregator.ledger.deliveries(oid) == 1


def test_the_platforms_role_inserts_orders_with_no_grant_on_fleet_networks(store: Store) -> None:
    """The trigger reads fleet_networks as its owner: the purchase platform's role needs
    nothing beyond what it had on orders."""
    role = f"platform_{uuid.uuid4().hex[:8]}"
    oid = str(uuid.uuid4())
    with store.pool.connection() as conn:
        conn.execute(f'CREATE ROLE "{role}"')  # ours: hex only
        try:
            conn.execute(f'GRANT SELECT, INSERT ON orders TO "{role}"')
            with conn.transaction():
                conn.execute(f'SET LOCAL ROLE "{role}"')
                conn.execute(
                    "INSERT INTO orders (id, phone_number, network, size_gb) "
                    "VALUES (%s, '+233241234567', 'at-ishare', 2)",
                    (oid,),
                )
        finally:
            conn.execute(f'REVOKE ALL ON orders FROM "{role}"')
            conn.execute(f'DROP ROLE "{role}"')
    assert _status(store, oid) == "pending"
