"""A worker killed between its POST and the answer, while the circuit is opening.

For a few armed orders (of each vendor in turn: AT-iShare, then the aggregator, ...) the
vendor their network routes to is scripted to deliver the purchase and then hold its
answer (`stall_after_delivery`, longer than the worker's read timeout). Each armed order is
published at a calm moment of the schedule (no server restart, no latency spike near it).
The simulator lists purchases in flight (GET /_sim/inflight: reference, client port, age);
the moment an armed purchase shows up there, a brownout begins: the vendor is down for
BROWNOUT_S (every call answered 503, status lookups too) except for the armed purchases
(POST /_sim/down with "spare"), so the fleet's breaker of that vendor sees every other call
fail and opens.
As soon as the breaker reads open, or at the latest once the purchase has been in flight for
KILL_BY_S (before the worker could see its own timeout), the worker group whose process holds
that connection is found (chaos.fleet.Fleet.holder) and SIGKILLed; the breaker's state at that
moment is recorded for the table. The order was delivered; nothing in the database says so;
the next worker must ask the vendor before it buys (the simulator counts a purchase without
that lookup as a blind re-purchase), and it must not deliver twice.

An armed purchase whose connection no worker holds any more (the worker gave up, or was
killed, first) is reported as missed; one never seen in flight before the fault window ends
(its order was refused, or deferred past the window) as not caught.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from chaos.faults import OUTAGE_S, Event, Kind
from chaos.fleet import Fleet
from chaos.orders import OrderSpec, Publisher
from chaos.vendors import VENDORS

BROWNOUT_S = 3.0
KILL_BY_S = 0.8  # in flight this long at most before the kill (the worker's read timeout: 1 s)
POLL_S = 0.05
ARM_EVERY = 500  # one armed order per this many (at least 2)
#: faults that would blur the moment: the seconds around one that are not calm
DISRUPTIVE = {
    Kind.REDIS_RESTART: (-2.0, 8.0),
    Kind.POSTGRES_RESTART: (-2.0, 8.0),
    Kind.POSTGRES_CRASH: (-2.0, 8.0),
    Kind.LATENCY_SPIKE: (-2.0, 6.0),
    # a brownout's /_sim/down would cut the outage short (or a brownout inside it blur)
    Kind.AGGREGATOR_OUTAGE: (-4.0, OUTAGE_S + 4.0),
}
APART_S = 8.0  # between two armed moments


def calm_moments(events: list[Event], lo_s: float, hi_s: float, count: int) -> list[float]:
    """`count` moments in lo_s..hi_s, each as far as can be from the disruptive faults of the
    schedule and APART_S from each other, earliest first."""
    busy = [(e.at_s + a, e.at_s + b) for e in events if e.kind in DISRUPTIVE
            for a, b in [DISRUPTIVE[e.kind]]]  # fmt: skip
    chosen: list[float] = []
    grid = [lo_s + i * 0.5 for i in range(int((hi_s - lo_s) / 0.5) + 1)]
    for _ in range(count):

        def calm(t: float) -> float:
            gaps = [0.0 if a <= t <= b else min(abs(t - a), abs(t - b)) for a, b in busy]
            apart = [abs(t - c) - APART_S for c in chosen]
            return min([*gaps, *apart, hi_s - lo_s])

        candidates = [t for t in grid if all(abs(t - c) >= APART_S for c in chosen)]
        if not candidates:
            break
        chosen.append(max(candidates, key=calm))
    return sorted(chosen)


def pick_armed(
    publisher: Publisher, specs: list[OrderSpec], taken: set[str], events: list[Event]
) -> list[str]:
    """One order per ARM_EVERY (at least 2), none `taken` by another scenario, each the first
    of the next vendor's (chaos.vendors.VENDORS in turn) published after a calm moment of the
    middle of the publishing window."""
    count = max(2, len(specs) // ARM_EVERY)
    span = publisher.pace * len(publisher.specs)
    armed: list[str] = []
    for i, moment in enumerate(calm_moments(events, 0.25 * span, 0.75 * span, count)):
        vendor = VENDORS[i % len(VENDORS)]
        for spec in specs:
            offset = publisher.offset(spec.order_id)
            if (
                spec.vendor == vendor
                and offset is not None
                and offset >= moment
                and spec.order_id not in taken
            ):
                armed.append(spec.order_id)
                taken = taken | {spec.order_id}
                break
    return armed


class MidCallKill(threading.Thread):
    """Arms orders (see the module docstring), runs the brownout and aims the kills."""

    def __init__(
        self,
        armed: list[str],
        *,
        vendor_of: dict[str, str],
        fleet: Fleet,
        controls: dict[str, str],
        sim_port: int,
        breaker_state: Callable[[str], str] = lambda _vendor: "unknown",
    ) -> None:
        super().__init__(name="chaos-midcall", daemon=True)
        self.armed = armed
        self.vendor_of = {order_id: vendor_of[order_id] for order_id in armed}
        self.fleet = fleet
        self.controls = controls  # vendor -> the base of its control routes
        self.sim_port = sim_port  # both vendors' (one simulator process)
        self.breaker_state = breaker_state  # of a vendor's circuit
        #: (order id, killed worker group, seconds after its vendor's brownout began, that
        #: vendor's breaker state, the vendor)
        self.killed: list[tuple[str, str, float, str, str]] = []
        #: (order id, seconds in flight) of armed purchases whose connection no worker held
        #: any more when the kill came (the worker gave up, or was killed, first)
        self.missed: list[tuple[str, float]] = []
        #: vendor -> when its (last) brownout began
        self.brownout_began: dict[str, float] = {}
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._http = httpx.Client(timeout=10)

    def arm(self) -> None:
        """Before the orders are published: each armed order's first purchase stalls."""
        for order_id in self.armed:
            body = {"reference": order_id, "responses": ["stall_after_delivery"]}
            url = f"{self.controls[self.vendor_of[order_id]]}/script"
            self._http.post(url, json=body).raise_for_status()

    @property
    def not_caught(self) -> list[str]:
        done = {killed[0] for killed in self.killed} | {missed[0] for missed in self.missed}
        return [oid for oid in self.armed if oid not in done]

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 -- reported by the run, never lost in a thread
            self.error = exc
        finally:
            self._http.close()

    def _run(self) -> None:
        while self.not_caught and not self.stop_event.wait(POLL_S):
            waiting = self.not_caught
            for vendor in dict.fromkeys(self.vendor_of[oid] for oid in waiting):
                response = self._http.get(f"{self.controls[vendor]}/inflight")
                armed = [p for p in response.json()["purchases"] if p["reference"] in waiting]
                if not armed:
                    continue
                if not self._in_brownout(vendor):
                    self._begin_brownout(vendor)
                state = self.breaker_state(vendor)
                for purchase in armed:
                    if state == "open" or purchase["seconds"] >= KILL_BY_S:
                        self._kill_holder(
                            purchase["reference"], int(purchase["client_port"]),
                            purchase["seconds"],
                        )  # fmt: skip

    def _in_brownout(self, vendor: str) -> bool:
        began = self.brownout_began.get(vendor)
        return began is not None and time.monotonic() - began < BROWNOUT_S

    def _kill_holder(self, order_id: str, client_port: int, in_flight_s: float) -> None:
        victim = self.fleet.holder(client_port, self.sim_port)
        if victim is None:
            self.missed.append((order_id, in_flight_s))
            return
        vendor = self.vendor_of[order_id]
        state = self.breaker_state(vendor)
        at = time.monotonic() - self.brownout_began.get(vendor, 0.0)
        self.fleet.kill(victim)
        self.killed.append((order_id, victim.name, at, state, vendor))

    def _begin_brownout(self, vendor: str) -> None:
        """The vendor down for BROWNOUT_S but for the armed purchases; it ends by itself."""
        spare = [oid for oid in self.armed if self.vendor_of[oid] == vendor]
        body = {"seconds": BROWNOUT_S, "spare": spare}
        self._http.post(f"{self.controls[vendor]}/down", json=body).raise_for_status()
        self.brownout_began[vendor] = time.monotonic()
