"""A vendor outage in a quiet hour: orders arriving one at a time while the vendor is down.

In production a quiet hour brings about one order a minute, one per breaker window
(BREAKER_WINDOW_S 60 s), far fewer calls than the breaker's volume rule needs
(BREAKER_MIN_CALLS 20): the vendor-wide protection must still engage, and an order's attempts
and status checks must not be spent on the outage (issue 9, principle 4). The run scales that
to its own time base, its breaker window (chaos.run FLEET_TIMINGS): one order per window.

Once the main run has converged (no other traffic), the dice are stopped (every random fault
rate 0: the outage is the only fault), the vendor goes down for `outage_s`, and orders with
valid numbers are committed and published one every `every_s` seconds through it. After it,
every one of them must be delivered, with one attempt (chaos.invariants.check_quiet_outage).
"""

from __future__ import annotations

import math
import random

import httpx

from chaos.orders import OrderSpec, Publisher, make_orders
from db.store import Store

#: every random fault of the simulator (fulfillment.dev.simulator.faults.FaultConfig), stopped
DICE_OFF = {
    "error_rate": 0.0,
    "timeout_rate": 0.0,
    "rate_limit_rate": 0.0,
    "insufficient_balance_rate": 0.0,
    "drop_after_delivery_rate": 0.0,
    "pending_rate": 0.0,
}


def quiet_orders(outage_s: float, every_s: float, rng: random.Random) -> list[OrderSpec]:
    """One order per `every_s` seconds of the outage, each with a number the vendor takes."""
    count = max(1, math.ceil(outage_s / every_s))
    specs: list[OrderSpec] = []
    while len(specs) < count:
        specs += [spec for spec in make_orders(count, rng) if spec.kind == "normal"]
    return specs[:count]


def start_quiet_outage(
    specs: list[OrderSpec],
    *,
    outage_s: float,
    every_s: float,
    store: Store,
    broker: object,
    sim_control_url: str,
) -> Publisher:
    """Stop the dice, take the vendor down and start publishing `specs` through the outage;
    the publisher returned is running (join it)."""
    with httpx.Client(timeout=10) as http:
        http.post(f"{sim_control_url}/_sim/faults", json=DICE_OFF).raise_for_status()
        http.post(f"{sim_control_url}/_sim/down", json={"seconds": outage_s}).raise_for_status()
    publisher = Publisher(specs, store, broker, every_s * len(specs))
    publisher.start()
    return publisher
