"""All four networks through the Procfile's workers against the simulator speaking both
vendors' protocols: each order delivered exactly once at the vendor that serves its network,
each failure flagged once, and a vendor that is down never holds up the other's orders."""

from __future__ import annotations

import time
import uuid

import pytest

from fulfillment.domain.errors import InvalidPackage, UnsupportedNetwork
from producers.publish import publish_fulfillment

from .conftest import Fleet

pytestmark = [pytest.mark.e2e]

ALL = "at-ishare,mtn,telecel,at-bigtime"
#: a size each network sells, and a number issued on it
SOLD = {
    "at-ishare": (2, "+233261234567"),
    "mtn": (5, "+233241234567"),
    "telecel": (1.5, "+233201234567"),
    "at-bigtime": (20, "+233561234567"),
}
REFUSED_SUFFIX = "0000"  # recipients the aggregator answers INVALID_RECIPIENT for


def serve_all(fleet: Fleet, **env: str) -> None:
    fleet.stop_consumers()
    fleet.env.update({"NETWORKS_ENABLED": ALL, **env})
    fleet.start_consumers()


def order(fleet: Fleet, network: str, phone: str | None = None) -> str:
    size, number = SOLD[network]
    oid = fleet.new_order(phone=phone or number, size_gb=size, network=network)
    fleet.publish(oid, phone=phone or number, network=network, size_gb=size)
    return oid


def settled(fleet: Fleet, oid: str) -> bool:
    row = fleet.order(oid)
    return row["fulfillment_status"] == "success" or row["dead_lettered_at"] is not None


def deliveries(fleet: Fleet) -> tuple[dict[str, int], dict[str, int]]:
    """Deliveries per reference at AT-iShare and at the aggregator."""
    return tuple(  # type: ignore[return-value]
        {ref: int(e["deliveries"]) for ref, e in ledger["references"].items()}
        for ledger in (fleet.ledger(), fleet.aggregator_ledger())
    )


def test_four_networks_with_faults_on_both_vendors_each_delivered_once_where_it_belongs(
    fleet: Fleet,
) -> None:
    serve_all(fleet)
    faults = {
        "error_rate": 0.15,
        "drop_after_delivery_rate": 0.1,
        "timeout_rate": 0.05,
        "timeout_seconds": 1.5,
        "pending_rate": 0.1,
        "pending_seconds": 1,
    }
    fleet.faults(**faults)
    fleet.aggregator_faults(
        **faults,
        pending_failed_rate=0.05,
        pending_refunded_rate=0.05,
        invalid_phone_suffix=REFUSED_SUFFIX,
    )
    orders = {oid: net for net in SOLD for oid in (order(fleet, net) for _ in range(12))}
    refused = {
        order(fleet, net, phone=f"+23324123{REFUSED_SUFFIX}"): net
        for net in ("mtn", "telecel", "at-bigtime")
    }
    # bad input per network: refused at once, nothing published
    with pytest.raises(InvalidPackage, match="at-bigtime does not sell 2GB"):
        publish_fulfillment(
            str(uuid.uuid4()), phone_number="0561234567", network="at-bigtime", size_gb=2,
            broker=fleet.broker, enabled=True,
        )  # fmt: skip
    with pytest.raises(UnsupportedNetwork):
        publish_fulfillment(
            str(uuid.uuid4()), phone_number="0241234567", network="glo", size_gb=2,
            broker=fleet.broker, enabled=True,
        )  # fmt: skip
    everything = {**orders, **refused}
    fleet.wait_until(
        lambda: all(settled(fleet, oid) for oid in everything),
        180,
        what="every order of every network to be delivered or dead-lettered",
    )
    at_ishare, aggregator = deliveries(fleet)
    flagged = [str(n["order_id"]) for n in fleet.notifications("dead_letter")]
    delivered = 0
    for oid, network in everything.items():
        row = fleet.order(oid)
        here, other = (at_ishare, aggregator) if network == "at-ishare" else (aggregator, at_ishare)
        assert other.get(oid, 0) == 0, f"{network} order {oid} reached the other vendor"
        if row["fulfillment_status"] == "success":
            delivered += 1
            assert here.get(oid) == 1, (network, oid, row)
            assert row["vendor_transaction_id"], row
        else:
            assert here.get(oid, 0) == 0, (network, oid, row)
            assert flagged.count(oid) == 1, f"{oid} flagged {flagged.count(oid)} times"
    for oid in refused:
        row = fleet.order(oid)
        assert (row["last_error_code"], row["fulfillment_attempts"]) == ("INVALID_PHONE", 1), row
    assert delivered >= len(orders) * 0.9, f"only {delivered} of {len(orders)} delivered"
    print(f"\n{delivered} of {len(everything)} delivered; {len(set(flagged))} flagged once each")


def test_an_aggregator_outage_delays_no_at_ishare_order_and_dead_letters_nothing(
    fleet: Fleet,
) -> None:
    serve_all(fleet, AGGREGATOR_BREAKER_OPEN_S="3")
    fleet.aggregator_down(12)  # every aggregator route answers 503 for 12 s
    started = time.monotonic()
    theirs = [order(fleet, net) for net in ("mtn", "telecel", "at-bigtime") for _ in range(6)]
    ours = [order(fleet, "at-ishare") for _ in range(24)]
    fleet.wait_until(
        lambda: all(fleet.status(o) == "success" for o in ours),
        10,
        what="every AT-iShare order to be delivered while the aggregator is down",
    )
    took = time.monotonic() - started
    assert all(fleet.status(o) != "success" for o in theirs)  # the aggregator is still down
    fleet.wait_until(
        lambda: all(settled(fleet, o) for o in theirs),
        90,
        what="the aggregator's orders once it is back",
    )
    at_ishare, aggregator = deliveries(fleet)
    for oid in theirs:
        row = fleet.order(oid)
        assert row["dead_lettered_at"] is None, row["dead_letter_reason"]
        assert row["fulfillment_status"] == "success" and aggregator.get(oid) == 1, row
    assert all(at_ishare.get(o) == 1 for o in ours)
    assert fleet.notifications("dead_letter") == []
    print(f"\nAT-iShare: {len(ours)} orders delivered in {took:.1f} s with the aggregator down")
