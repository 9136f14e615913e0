"""A worker killed between its POST and the answer, while the circuit is opening.

For a few armed orders the vendor is scripted to deliver the purchase and then hold its
answer (`stall_after_delivery`, longer than the worker's read timeout). Each armed order is
published at a calm moment of the schedule (no server restart, no latency spike near it).
The simulator lists purchases in flight (GET /_sim/inflight: reference, client port, age);
the moment an armed purchase shows up there, a brownout begins: the vendor is down for
BROWNOUT_S (every call answered 503, status lookups too) except for the armed purchases
(POST /_sim/down with "spare"), so the fleet's breaker sees every other call fail and opens.
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

from chaos.faults import Event, Kind
from chaos.fleet import Fleet
from chaos.orders import Publisher

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
    publisher: Publisher, order_ids: list[str], taken: set[str], events: list[Event]
) -> list[str]:
    """One order per ARM_EVERY (at least 2), none `taken` by another scenario, each the first
    published after a calm moment of the middle of the publishing window."""
    count = max(2, len(order_ids) // ARM_EVERY)
    span = publisher.pace * len(publisher.specs)
    armed: list[str] = []
    for moment in calm_moments(events, 0.25 * span, 0.75 * span, count):
        for order_id in order_ids:
            offset = publisher.offset(order_id)
            if offset is not None and offset >= moment and order_id not in taken:
                armed.append(order_id)
                taken = taken | {order_id}
                break
    return armed


class MidCallKill(threading.Thread):
    """Arms orders (see the module docstring), runs the brownout and aims the kills."""

    def __init__(
        self,
        armed: list[str],
        *,
        fleet: Fleet,
        sim_control_url: str,
        sim_port: int,
        breaker_state: Callable[[], str] = lambda: "unknown",
    ) -> None:
        super().__init__(name="chaos-midcall", daemon=True)
        self.armed = armed
        self.fleet = fleet
        self.sim_control_url = sim_control_url
        self.sim_port = sim_port
        self.breaker_state = breaker_state
        #: (order id, killed worker group, seconds after the brownout began, breaker state)
        self.killed: list[tuple[str, str, float, str]] = []
        #: (order id, seconds in flight) of armed purchases whose connection no worker held
        #: any more when the kill came (the worker gave up, or was killed, first)
        self.missed: list[tuple[str, float]] = []
        self.brownout_began: float | None = None
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._http = httpx.Client(timeout=10)

    def arm(self) -> None:
        """Before the orders are published: each armed order's first purchase stalls."""
        for order_id in self.armed:
            body = {"reference": order_id, "responses": ["stall_after_delivery"]}
            self._http.post(f"{self.sim_control_url}/_sim/script", json=body).raise_for_status()

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
            response = self._http.get(f"{self.sim_control_url}/_sim/inflight")
            armed = [p for p in response.json()["purchases"] if p["reference"] in self.not_caught]
            if not armed:
                continue
            if not self._in_brownout():
                self._begin_brownout()
            state = self.breaker_state()
            for purchase in armed:
                if state == "open" or purchase["seconds"] >= KILL_BY_S:
                    self._kill_holder(
                        purchase["reference"], int(purchase["client_port"]), purchase["seconds"]
                    )

    def _in_brownout(self) -> bool:
        began = self.brownout_began
        return began is not None and time.monotonic() - began < BROWNOUT_S

    def _kill_holder(self, order_id: str, client_port: int, in_flight_s: float) -> None:
        victim = self.fleet.holder(client_port, self.sim_port)
        if victim is None:
            self.missed.append((order_id, in_flight_s))
            return
        state = self.breaker_state()
        at = time.monotonic() - (self.brownout_began or 0.0)
        self.fleet.kill(victim)
        self.killed.append((order_id, victim.name, at, state))

    def _begin_brownout(self) -> None:
        """The vendor down for BROWNOUT_S but for the armed purchases; it ends by itself."""
        body = {"seconds": BROWNOUT_S, "spare": self.armed}
        self._http.post(f"{self.sim_control_url}/_sim/down", json=body).raise_for_status()
        self.brownout_began = time.monotonic()
