"""The faults of a chaos run: a schedule made up front (seeded), and the injector that runs it.

Kinds of fault, beside what the simulator does to every purchase (SIM_* rates):

- `sigkill`: SIGKILL of a whole process group, started again at once: mostly a worker group,
  every fourth kill the dead-letter consumer, the reconciler or the notifier
- `redis_restart`: Redis killed and started again empty on the same port (every queued,
  delayed and unacknowledged message is lost)
- `postgres_restart` / `postgres_crash`: `pg_ctl -m fast` / `-m immediate` (crash recovery)
- `duplicate_message`: an order already published is published again, 2 or 3 times
- `malformed_message`: a fulfill_order message that breaks the contract (("nope",), (), ...)
- `unknown_order_message`: a well-formed message for an order that does not exist
- `latency_spike`: for a few seconds both vendors answer in 0.1..1.1 s (the clients' read
  timeout is 1 s: some purchases are delivered while the worker sees a timeout)
- `aggregator_outage`: the data aggregator down for OUTAGE_S (every route answers 503) while
  AT-iShare keeps working; the times are kept (`Injector.aggregator_outages`), so that the
  invariants can tell that AT-iShare's orders were delivered all through it

and, scripted per order before it is published (`VENDOR_SCENARIOS`, one order in 30, at the
vendor its network routes to; the aggregator's also `AGGREGATOR_SCENARIOS`): the vendor's
answers to that order's purchases and status checks, for the sequences the dice alone almost
never roll (the status endpoint failing right after an answer was lost...).

`LastAttemptTrap` is the one fault aimed at a moment: for a few armed orders of each vendor
(one in 150 of its orders, at least 1) attempts 1 and 2 fail with a 5xx; once the database
shows attempt 2 failed, the vendor is told to deliver attempt 3 but lose its answer, and to
fail the status check right after it (the check before attempt 3 still answers). The dice
make this sequence about once in 10,000 orders; a script by count cannot aim it, since
duplicate messages add checks.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import dramatiq
import httpx
from redis.exceptions import RedisError

from chaos.db import rows
from chaos.fleet import Fleet
from chaos.orders import OrderSpec
from chaos.servers import EmbeddedServers
from chaos.vendors import AGGREGATOR, LABELS, VENDORS
from db.store import Store
from fulfillment.domain.constants import FULFILL_ACTOR, FULFILLMENT_QUEUE
from fulfillment.domain.errors import StoreError

DOWN_S = 1.5  # how long Redis or PostgreSQL stays away in a restart
AWAY_GRACE_S = 5.0  # after a restart: pools reconnect, a failure then is still the restart's
SPIKE_S = 3.0
SPIKE_FAULTS = {"latency_ms": 600.0, "latency_jitter_ms": 500.0}
OUTAGE_S = 8.0  # an aggregator outage

#: Arguments that break the message contract (one positional string UUID).
MALFORMED: tuple[tuple[tuple[Any, ...], dict[str, Any]], ...] = (
    (("nope",), {}),
    ((), {}),
    ((123,), {}),
    ((None,), {}),
    ((str(uuid.UUID(int=1)), "extra"), {}),
    ((), {"order_id": str(uuid.UUID(int=2))}),
    ((["a", "list"],), {}),
    (("' OR 1=1 --",), {}),
)


#: name: (purchase answers, status answers), in the simulator's script names (/_sim/script).
VENDOR_SCENARIOS: dict[str, tuple[list[str], list[str]]] = {
    # The answer to the last attempt is lost, and so is the status check that follows it.
    "lost answer on the last attempt, status check failing": (
        ["error", "error", "drop_after_delivery"],
        ["ok", "ok", "ok", "ok", "error", "error"],
    ),
    "lost answer, status endpoint failing then back": (
        ["drop_after_delivery"],
        ["error", "timeout", "ok"],
    ),
    "unreadable answers (HTML with a 200)": (["garbage", "ok"], ["garbage", "ok"]),
    "timeouts, status endpoint down a while": (
        ["timeout", "timeout"],
        ["error", "error", "error", "ok"],
    ),
    "pending, then the status endpoint failing": (["pending"], ["error", "timeout", "ok"]),
}
#: the aggregator's own: orders it accepts, then fails or refunds (a new attempt buys again)
AGGREGATOR_SCENARIOS: dict[str, tuple[list[str], list[str]]] = {
    "pending, then failed; the new attempt delivered": (["pending_then_failed", "ok"], []),
    "pending, then refunded; the new attempt's answer lost": (
        ["pending_then_refunded", "drop_after_delivery"],
        [],
    ),
}
SCENARIO_EVERY = 30  # one order in this many gets the next scenario of the list


def scenarios_of(vendor: str) -> dict[str, tuple[list[str], list[str]]]:
    """The scripted scenarios a vendor's orders take turns at (the aggregator's own first)."""
    return {**(AGGREGATOR_SCENARIOS if vendor == AGGREGATOR else {}), **VENDOR_SCENARIOS}


def script_vendor_scenarios(
    specs: Sequence[OrderSpec], controls: Mapping[str, str]
) -> tuple[Counter[str], dict[str, str]]:
    """Script every SCENARIO_EVERY-th order with the next scenario of its vendor's list, at
    that vendor (`controls`: vendor -> its control routes' base): how many got which, and
    which order got which."""
    turns: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    scripted: dict[str, str] = {}
    with httpx.Client(timeout=10) as http:
        for spec in specs[SCENARIO_EVERY // 2 :: SCENARIO_EVERY]:
            scenarios = scenarios_of(spec.vendor)
            name = list(scenarios)[turns[spec.vendor] % len(scenarios)]
            turns[spec.vendor] += 1
            responses, status_responses = scenarios[name]
            http.post(
                f"{controls[spec.vendor]}/script",
                json={
                    "reference": spec.order_id,
                    "responses": responses,
                    "status_responses": status_responses,
                },
            ).raise_for_status()
            counts[f"{LABELS[spec.vendor]}: {name}"] += 1
            scripted[spec.order_id] = f"scripted: {name} ({LABELS[spec.vendor]})"
    return counts, scripted


class LastAttemptTrap(threading.Thread):
    """Arms orders (see the module docstring) and springs the trap on each at its moment."""

    ARM_EVERY = 150
    POLL_S = 0.1

    def __init__(
        self, specs: Sequence[OrderSpec], store: Store, controls: Mapping[str, str]
    ) -> None:
        super().__init__(name="chaos-trap", daemon=True)
        self.vendor_of = {spec.order_id: spec.vendor for spec in specs}
        self.armed: list[str] = []
        for vendor in VENDORS:
            theirs = [spec.order_id for spec in specs if spec.vendor == vendor]
            self.armed += theirs[7 :: self.ARM_EVERY] or theirs[:1]
        self.store = store
        self.controls = controls
        self.sprung: list[str] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._http = httpx.Client(timeout=10)

    def arm(self) -> None:
        """Before the orders are published: their first two purchases fail (503)."""
        for order_id in self.armed:
            self._script(order_id, ["error", "error"], [])

    def _script(self, order_id: str, responses: list[str], status_responses: list[str]) -> None:
        body = {"reference": order_id, "responses": responses, "status_responses": status_responses}
        url = f"{self.controls[self.vendor_of[order_id]]}/script"
        self._http.post(url, json=body).raise_for_status()

    def run(self) -> None:
        try:
            while len(self.sprung) < len(self.armed) and not self.stop_event.wait(self.POLL_S):
                waiting = [oid for oid in self.armed if oid not in self.sprung]
                try:
                    ready = rows(self.store, "trap_ready", {"ids": waiting})
                except StoreError:
                    continue  # PostgreSQL is restarting
                for row in ready:
                    # the check before attempt 3 answers; the one after its lost answer fails
                    self._script(row["id"], ["drop_after_delivery"], ["ok", "error", "error"])
                    self.sprung.append(row["id"])
        except Exception as exc:  # noqa: BLE001 -- reported by the run, never lost in a thread
            self.error = exc
        finally:
            self._http.close()


class Kind(StrEnum):
    SIGKILL = "sigkill"
    REDIS_RESTART = "redis_restart"
    POSTGRES_RESTART = "postgres_restart"
    POSTGRES_CRASH = "postgres_crash"
    DUPLICATE = "duplicate_message"
    MALFORMED = "malformed_message"
    UNKNOWN_ORDER = "unknown_order_message"
    LATENCY_SPIKE = "latency_spike"
    AGGREGATOR_OUTAGE = "aggregator_outage"


@dataclass(frozen=True, slots=True)
class Event:
    at_s: float
    kind: Kind


def _spread(count: int, window_s: float, rng: random.Random, lo: float, hi: float) -> list[float]:
    """`count` times in (lo..hi) * window, one per equal slice, jittered within its slice."""
    span = (hi - lo) * window_s / max(count, 1)
    return [lo * window_s + span * (i + rng.uniform(0.2, 0.8)) for i in range(count)]


def schedule(
    window_s: float,
    rng: random.Random,
    *,
    kill_every_s: float = 4.0,
    redis_restarts: int | None = None,
    postgres_restarts: int | None = None,
    aggregator_outages: int | None = None,
) -> list[Event]:
    """The run's faults, sorted by time. Restarts of the servers fall between 15 % and 85 %
    of the window, so orders are published before and after each; aggregator outages between
    62 % and 85 %, while the last orders arrive and the backlog of both vendors is worked off
    (after the moments chaos.midcall aims at, which an outage would blur)."""
    events: list[Event] = []
    t = kill_every_s * rng.uniform(0.5, 1.0)
    while t < window_s:
        events.append(Event(t, Kind.SIGKILL))
        t += kill_every_s * rng.uniform(0.6, 1.4)
    n_redis = redis_restarts if redis_restarts is not None else max(1, round(window_s / 60))
    n_pg = postgres_restarts if postgres_restarts is not None else max(2, round(window_s / 45))
    events += [Event(at, Kind.REDIS_RESTART) for at in _spread(n_redis, window_s, rng, 0.2, 0.8)]
    pg_times = _spread(n_pg, window_s, rng, 0.15, 0.85)
    events += [
        Event(at, Kind.POSTGRES_CRASH if i % 2 else Kind.POSTGRES_RESTART)
        for i, at in enumerate(pg_times)
    ]
    n_out = aggregator_outages if aggregator_outages is not None else max(1, round(window_s / 60))
    outages = _spread(n_out, window_s, rng, 0.62, 0.85)
    events += [Event(at, Kind.AGGREGATOR_OUTAGE) for at in outages]
    for every, kind in (
        (2.0, Kind.DUPLICATE),
        (3.0, Kind.MALFORMED),
        (10.0, Kind.UNKNOWN_ORDER),
        (15.0, Kind.LATENCY_SPIKE),
    ):
        t = every * rng.uniform(0.3, 1.0)
        while t < window_s:
            events.append(Event(t, kind))
            t += every
    return sorted(events, key=lambda e: e.at_s)


class Injector(threading.Thread):
    """Runs the schedule against the fleet; counts what it did by kind (`counts`) and keeps a
    timeline for the report. Stops early when `stop_event` is set."""

    def __init__(
        self,
        events: list[Event],
        *,
        fleet: Fleet,
        servers: EmbeddedServers,
        broker: Any,
        published: list[str],
        controls: Mapping[str, str],
        rng: random.Random,
    ) -> None:
        super().__init__(name="chaos-injector", daemon=True)
        self.events = events
        self.fleet = fleet
        self.servers = servers
        self.broker = broker
        self.published = published
        self.controls = controls
        self.rng = rng
        #: faults by kind (Kind values), and what they involved (restarts, victims...)
        self.counts: Counter[str] = Counter()
        self.details: Counter[str] = Counter()
        self.timeline: list[tuple[float, str]] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._kills = 0
        self._malformed = 0
        self._began = 0.0
        self._spike_ends: float | None = None
        self._restore: dict[str, dict[str, float]] = {}
        #: (wall-clock start, end) of each aggregator outage, to compare with the database's
        self.aggregator_outages: list[tuple[float, float]] = []
        self._away_until = 0.0
        self._http = httpx.Client(timeout=10)

    @property
    def malformed_sent(self) -> int:
        return self.counts[Kind.MALFORMED.value]

    def servers_away(self) -> bool:
        """Whether PostgreSQL or Redis is being restarted, or was less than AWAY_GRACE_S ago."""
        return time.monotonic() < self._away_until

    def run(self) -> None:
        self._began = time.monotonic()
        try:
            for event in self.events:
                wait = self._began + event.at_s - time.monotonic()
                while wait > 0:
                    self._maybe_end_spike()
                    if self.stop_event.wait(min(wait, 0.25)):
                        return
                    wait = self._began + event.at_s - time.monotonic()
                self._maybe_end_spike()
                self._inject(event.kind)
        except Exception as exc:  # noqa: BLE001 -- reported by the run, never lost in a thread
            self.error = exc
        finally:
            self._end_spike()
            self._http.close()

    def _note(self, what: str) -> None:
        self.timeline.append((time.monotonic() - self._began, what))

    def _inject(self, kind: Kind) -> None:
        handler = {
            Kind.SIGKILL: self._sigkill,
            Kind.REDIS_RESTART: self._redis_restart,
            Kind.POSTGRES_RESTART: lambda: self._postgres_restart(crash=False),
            Kind.POSTGRES_CRASH: lambda: self._postgres_restart(crash=True),
            Kind.DUPLICATE: self._duplicate,
            Kind.MALFORMED: self._malformed_message,
            Kind.UNKNOWN_ORDER: self._unknown_order,
            Kind.LATENCY_SPIKE: self._latency_spike,
            Kind.AGGREGATOR_OUTAGE: self._aggregator_outage,
        }[kind]
        handler()

    # -- processes and servers ---------------------------------------------------------

    def _sigkill(self) -> None:
        self._kills += 1
        victim = self.fleet.pick_victim(self.rng, worker=self._kills % 4 != 0)
        restarted = self.fleet.kill(victim)
        self.counts[Kind.SIGKILL.value] += 1
        self.details[f"killed {victim.name.rstrip('0123456789')}"] += 1
        self.details["restarted after a kill"] += len(restarted)
        self._note(f"SIGKILL {victim.name}; restarted {', '.join(restarted)}")

    def _redis_restart(self) -> None:
        began = time.monotonic()
        self._away_until = float("inf")
        try:
            self.servers.restart_redis(down_s=DOWN_S)
        finally:
            self._away_until = time.monotonic() + AWAY_GRACE_S
        self.counts[Kind.REDIS_RESTART.value] += 1
        self._note(f"Redis restarted empty ({time.monotonic() - began:.1f} s away)")

    def _postgres_restart(self, *, crash: bool) -> None:
        began = time.monotonic()
        self._away_until = float("inf")
        try:
            self.servers.restart_postgres(crash=crash, down_s=DOWN_S)
        finally:
            self._away_until = time.monotonic() + AWAY_GRACE_S
        kind = Kind.POSTGRES_CRASH if crash else Kind.POSTGRES_RESTART
        self.counts[kind.value] += 1
        self._note(f"PostgreSQL {'crashed' if crash else 'restarted'} "
                   f"({time.monotonic() - began:.1f} s away)")  # fmt: skip

    # -- messages ------------------------------------------------------------------------

    def _send(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=FULFILLMENT_QUEUE, actor_name=FULFILL_ACTOR, args=args, kwargs=kwargs,
            options={},
        )  # fmt: skip
        try:
            self.broker.enqueue(message)
        except (RedisError, OSError):
            self.details["messages not sent (Redis away)"] += 1
            return False
        return True

    def _duplicate(self) -> None:
        if not self.published:
            return
        for order_id in self.rng.sample(self.published, min(3, len(self.published))):
            for _ in range(self.rng.choice((2, 3))):
                if self._send((order_id,), {}):
                    self.counts[Kind.DUPLICATE.value] += 1

    def _malformed_message(self) -> None:
        args, kwargs = MALFORMED[self._malformed % len(MALFORMED)]
        self._malformed += 1
        if self._send(args, kwargs):
            self.counts[Kind.MALFORMED.value] += 1

    def _unknown_order(self) -> None:
        if self._send((str(uuid.uuid4()),), {}):
            self.counts[Kind.UNKNOWN_ORDER.value] += 1

    # -- the vendor ----------------------------------------------------------------------

    def _faults(self, vendor: str, changes: dict[str, float]) -> dict[str, Any]:
        response = self._http.post(f"{self.controls[vendor]}/faults", json=changes)
        response.raise_for_status()
        config: dict[str, Any] = response.json()
        return config

    def _latency_spike(self) -> None:
        if self._spike_ends is not None:
            return
        for vendor in VENDORS:
            current = self._faults(vendor, {})
            self._restore[vendor] = {k: float(current[k]) for k in SPIKE_FAULTS}
            self._faults(vendor, SPIKE_FAULTS)
        self._spike_ends = time.monotonic() + SPIKE_S
        self.counts[Kind.LATENCY_SPIKE.value] += 1
        self._note(f"latency spike {SPIKE_FAULTS} for {SPIKE_S} s (both vendors)")

    def _maybe_end_spike(self) -> None:
        if self._spike_ends is not None and time.monotonic() >= self._spike_ends:
            self._end_spike()

    def _end_spike(self) -> None:
        if self._spike_ends is None:
            return
        self._spike_ends = None
        for vendor, restore in self._restore.items():
            self._faults(vendor, restore)

    def _aggregator_outage(self) -> None:
        """The aggregator down for OUTAGE_S (it ends by itself); AT-iShare untouched."""
        url = f"{self.controls[AGGREGATOR]}/down"
        self._http.post(url, json={"seconds": OUTAGE_S}).raise_for_status()
        began = time.time()
        self.aggregator_outages.append((began, began + OUTAGE_S))
        self.counts[Kind.AGGREGATOR_OUTAGE.value] += 1
        self._note(f"aggregator down for {OUTAGE_S} s (AT-iShare up)")
