"""The faults of a chaos run: a schedule made up front (seeded), and the injector that runs it.

Kinds of fault, beside what the simulator does to every purchase (SIM_* rates):

- `sigkill`: SIGKILL of a whole process group, started again at once: mostly a worker group,
  every fourth kill the dead-letter consumer or the reconciler
- `redis_restart`: Redis killed and started again empty on the same port (every queued,
  delayed and unacknowledged message is lost)
- `postgres_restart` / `postgres_crash`: `pg_ctl -m fast` / `-m immediate` (crash recovery)
- `duplicate_message`: an order already published is published again, 2 or 3 times
- `malformed_message`: a fulfill_order message that breaks the contract (("nope",), (), ...)
- `unknown_order_message`: a well-formed message for an order that does not exist
- `latency_spike`: for a few seconds the vendor answers in 0.1..1.1 s (the client's read
  timeout is 1 s: some purchases are delivered while the worker sees a timeout)

and, scripted per order before it is published (`VENDOR_SCENARIOS`, one order in 30):
the vendor's answers to that order's purchases and status checks, for the sequences the dice
alone almost never roll (the status endpoint failing right after an answer was lost...).

`LastAttemptTrap` is the one fault aimed at a moment: for a few armed orders (one in 150,
at least 2) attempts 1 and 2 fail with a 5xx; once the database shows attempt 2 failed, the
vendor is told to deliver attempt 3 but lose its answer, and to fail the status check right
after it (the check before attempt 3 still answers). The dice make this sequence about once
in 10,000 orders; a script by count cannot aim it, since duplicate messages add checks.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import dramatiq
import httpx
from redis.exceptions import RedisError

from chaos.db import rows
from chaos.fleet import Fleet
from chaos.servers import EmbeddedServers
from db.store import Store
from fulfillment.domain.constants import FULFILL_ACTOR, FULFILLMENT_QUEUE
from fulfillment.domain.errors import StoreError

DOWN_S = 1.5  # how long Redis or PostgreSQL stays away in a restart
AWAY_GRACE_S = 5.0  # after a restart: pools reconnect, a failure then is still the restart's
SPIKE_S = 3.0
SPIKE_FAULTS = {"latency_ms": 600.0, "latency_jitter_ms": 500.0}

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
SCENARIO_EVERY = 30  # one order in this many gets the next scenario of the list


def script_vendor_scenarios(
    order_ids: list[str], sim_control_url: str
) -> tuple[Counter[str], dict[str, str]]:
    """Script every SCENARIO_EVERY-th order with the next scenario: how many got which, and
    which order got which."""
    names = list(VENDOR_SCENARIOS)
    counts: Counter[str] = Counter()
    scripted: dict[str, str] = {}
    with httpx.Client(timeout=10) as http:
        for i, order_id in enumerate(order_ids[SCENARIO_EVERY // 2 :: SCENARIO_EVERY]):
            name = names[i % len(names)]
            responses, status_responses = VENDOR_SCENARIOS[name]
            http.post(
                f"{sim_control_url}/_sim/script",
                json={
                    "reference": order_id,
                    "responses": responses,
                    "status_responses": status_responses,
                },
            ).raise_for_status()
            counts[name] += 1
            scripted[order_id] = f"scripted: {name}"
    return counts, scripted


class LastAttemptTrap(threading.Thread):
    """Arms orders (see the module docstring) and springs the trap on each at its moment."""

    ARM_EVERY = 150
    POLL_S = 0.1

    def __init__(self, order_ids: list[str], store: Store, sim_control_url: str) -> None:
        super().__init__(name="chaos-trap", daemon=True)
        self.armed = order_ids[7 :: self.ARM_EVERY] or order_ids[:1]
        if len(order_ids) > self.ARM_EVERY and len(self.armed) < 2:
            self.armed.append(order_ids[-1])
        self.store = store
        self.sim_control_url = sim_control_url
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
        self._http.post(f"{self.sim_control_url}/_sim/script", json=body).raise_for_status()

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
) -> list[Event]:
    """The run's faults, sorted by time. Restarts of the servers fall between 15 % and 85 %
    of the window, so orders are published before and after each."""
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
        sim_control_url: str,
        rng: random.Random,
    ) -> None:
        super().__init__(name="chaos-injector", daemon=True)
        self.events = events
        self.fleet = fleet
        self.servers = servers
        self.broker = broker
        self.published = published
        self.sim_control_url = sim_control_url
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
        self._restore: dict[str, float] = {}
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

    def _faults(self, changes: dict[str, float]) -> dict[str, Any]:
        response = self._http.post(f"{self.sim_control_url}/_sim/faults", json=changes)
        response.raise_for_status()
        config: dict[str, Any] = response.json()
        return config

    def _latency_spike(self) -> None:
        if self._spike_ends is not None:
            return
        current = self._faults({})
        self._restore = {k: float(current[k]) for k in SPIKE_FAULTS}
        self._faults(SPIKE_FAULTS)
        self._spike_ends = time.monotonic() + SPIKE_S
        self.counts[Kind.LATENCY_SPIKE.value] += 1
        self._note(f"latency spike {SPIKE_FAULTS} for {SPIKE_S} s")

    def _maybe_end_spike(self) -> None:
        if self._spike_ends is not None and time.monotonic() >= self._spike_ends:
            self._end_spike()

    def _end_spike(self) -> None:
        if self._spike_ends is None:
            return
        self._spike_ends = None
        self._faults(self._restore)
