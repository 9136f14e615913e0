"""A vendor outage in a quiet hour: orders arriving one at a time while the vendor is down.

In production a quiet hour brings about one order a minute, one per breaker window
(BREAKER_WINDOW_S 60 s), far fewer calls than the breaker's volume rule needs
(BREAKER_MIN_CALLS 20): the vendor-wide protection must still engage, and an order's attempts
and status checks must not be spent on the outage (issue 9, principle 4). The run scales that
to its own time base, its breaker window (chaos.run FLEET_TIMINGS): one order per window.

Once the main run has converged (no other traffic), the dice of both vendors are stopped
(every random fault rate 0, the aggregator's failed and refunded orders too: the outage is
the only fault), both vendors go down for `outage_s`, and orders with valid numbers are
committed and published through it: one every `every_s` seconds for each vendor (AT-iShare's
and the aggregator's in turn, the aggregator's networks in turn), each vendor's breaker on its
own. After it, every one of them must be delivered, with one attempt
(chaos.invariants.check_quiet_outage).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import httpx

from chaos.orders import OrderSpec, Publisher, make_orders
from chaos.vendors import NETWORKS, VENDORS, vendor_of
from db.store import Store
from fulfillment.dev.simulator.faults import FaultConfig

#: every random fault of a simulated vendor (fulfillment.dev.simulator.faults.FaultConfig: its
#: *_rate fields, the aggregator's pending_failed_rate and pending_refunded_rate too), stopped
DICE_OFF: dict[str, float] = {
    field: 0.0 for field in FaultConfig.model_fields if field.endswith("_rate")
}


def quiet_orders(outage_s: float, every_s: float, rng: random.Random) -> list[OrderSpec]:
    """For each vendor, one order per `every_s` seconds of the outage, each with a number the
    vendor takes; the vendors' orders alternate (publish them `every_s / len(VENDORS)` apart)."""
    count = max(1, math.ceil(outage_s / every_s))
    by_vendor = {vendor: [n for n in NETWORKS if vendor_of(n) == vendor] for vendor in VENDORS}
    specs: list[OrderSpec] = []
    for i in range(count):
        for networks in by_vendor.values():
            network = networks[i % len(networks)]
            spec = None
            while spec is None or spec.kind != "normal":
                spec = make_orders(1, rng, {network: 1.0})[0]
            specs.append(spec)
    return specs


def start_quiet_outage(
    specs: list[OrderSpec],
    *,
    outage_s: float,
    every_s: float,
    store: Store,
    broker: object,
    controls: Mapping[str, str],
) -> Publisher:
    """Stop both vendors' dice, take both down (`controls`: vendor -> the base of its control
    routes) and start publishing `specs` through the outage, `every_s` seconds apart for each
    vendor; the publisher returned is running (join it)."""
    with httpx.Client(timeout=10) as http:
        for control in controls.values():
            http.post(f"{control}/faults", json=DICE_OFF).raise_for_status()
        for control in controls.values():
            http.post(f"{control}/down", json={"seconds": outage_s}).raise_for_status()
    publisher = Publisher(specs, store, broker, every_s * len(specs) / len(controls))
    publisher.start()
    return publisher
