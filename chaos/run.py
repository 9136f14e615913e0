"""`python -m chaos.run --orders N`: the fleet under faults, then the invariants.

1. In a temporary state directory: embedded PostgreSQL and Redis of this run alone (the
   machine's shared servers are never touched), a fresh database, the schema.
2. The fleet, as the Procfile starts it, fulfilling all four networks (AT-iShare's through the
   AT-iShare API; MTN's, Telecel's and AT-BigTime's through the data aggregator): the
   simulator speaking both vendors' protocols, each with its faults (chaos.config
   VENDOR_FAULTS, AGGREGATOR_FAULTS), --workers
   `dramatiq workers.actors --queues fulfillment -p 1 -t THREADS` groups, the dead-letter
   consumer, `fulfillment reconcile --loop` and `fulfillment web` (both vendors' callbacks go
   to it), with short timings (FLEET_TIMINGS).
3. The fault window: the orders are committed and published evenly over 80 % of it while the
   injector runs the schedule of chaos.faults (SIGKILLs, Redis and PostgreSQL restarts,
   duplicated, malformed and unknown-order messages, latency spikes at both vendors, the
   aggregator down while AT-iShare keeps working); one order in 30 has its vendor's answers
   scripted (chaos.faults.VENDOR_SCENARIOS, AGGREGATOR_SCENARIOS), a few of each vendor are
   trapped on their last attempt (chaos.faults.LastAttemptTrap), and a few have their worker
   killed between the POST and its answer while a brownout opens that vendor's circuit
   (chaos.midcall). Signed callbacks of both vendors are replayed at the web process
   throughout (chaos.callbacks).
4. Convergence: no more faults; wait until no order is pending, processing, failed and not
   yet dead-lettered, and no claim is held (the reconciler keeps sweeping), and until every
   customer SMS and platform event has settled (the notify: process, killed now and then too,
   sends them to the simulator's SMS provider and platform receiver, each with faults of its
   own: chaos.config NOTIFY_FAULTS).
5. The quiet outage (chaos.quiet): both vendors down for --quiet-outage seconds, no other
   fault, orders of each arriving one per --quiet-every seconds through it; then convergence
   again.
6. The invariants of chaos.invariants against the database, both vendors' ledgers and the
   SMS provider's and platform's, the
   table (per network and per vendor), and evidence for any that failed.

Exit status 0 only when the fleet converged within the budget and every invariant holds.
Everything started is stopped, and the state directory removed unless --keep.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import redis
from redis.exceptions import RedisError

from chaos import invariants, report
from chaos.callbacks import CallbackReplayer
from chaos.config import (
    AGGREGATOR_SECRET,
    FLEET_TIMINGS,
    KEY,
    NAMESPACE,
    SECRET,
    fleet_env,
)
from chaos.db import fresh_database, rows
from chaos.faults import Injector, LastAttemptTrap, schedule, script_vendor_scenarios
from chaos.fleet import Fleet
from chaos.midcall import MidCallKill, pick_armed
from chaos.orders import Publisher, make_orders
from chaos.quiet import quiet_orders, start_quiet_outage
from chaos.servers import EmbeddedServers
from chaos.vendors import LABELS, VENDORS, breaker_key, control_urls
from db.migrate import migrate
from db.store import Store, open_pool
from fulfillment.dev.embedded import free_port
from fulfillment.dev.simulator.platform import MOUNT as PLATFORM_MOUNT
from fulfillment.dev.simulator.sms import MOUNT as SMS_MOUNT
from fulfillment.domain.errors import StoreError
from fulfillment.messaging.publish import build_broker
from fulfillment.telemetry import logs

START_TIMEOUT_S = 90.0  # cold interpreters on a loaded 2-core machine
POLL_S = 1.0
PROGRESS_EVERY_S = 5.0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--orders", type=int, default=3000)
    p.add_argument(
        "--seconds-budget",
        type=float,
        default=None,
        help="the whole run must end within this "
        "(default: 150 + orders / 10, + the quiet outage and 60 s)",
    )
    p.add_argument(
        "--fault-window",
        type=float,
        default=None,
        help="seconds of faults; orders are published over 80 %% of it "
        "(default: orders / 20, between 30 and 150)",
    )
    p.add_argument("--workers", type=int, default=3, help="worker groups (1 process each)")
    p.add_argument("--threads", type=int, default=4, help="threads per worker process")
    p.add_argument("--kill-every", type=float, default=4.0, help="mean seconds between SIGKILLs")
    p.add_argument(
        "--quiet-outage",
        type=float,
        default=30.0,
        help="seconds of both vendors' outage in a quiet hour, after the main run (0: none)",
    )
    p.add_argument(
        "--quiet-every",
        type=float,
        default=float(FLEET_TIMINGS["BREAKER_WINDOW_S"]),
        help="seconds between the quiet hour's orders (default: one per breaker window, "
        "as one a minute is in production)",
    )
    p.add_argument("--seed", type=int, default=None, help="orders, schedule and vendor dice")
    p.add_argument("--keep", action="store_true", help="keep the state directory and its logs")
    args = p.parse_args(argv)
    if args.orders < 1:
        p.error("--orders must be at least 1")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    if args.fault_window is None:
        args.fault_window = min(150.0, max(30.0, args.orders / 20))
    if args.seconds_budget is None:
        quiet = args.quiet_outage + 60.0 if args.quiet_outage > 0 else 0.0
        args.seconds_budget = 150.0 + args.orders / 10 + quiet
    if args.quiet_outage > 0 and args.quiet_every <= 0:
        p.error("--quiet-every must be more than 0")
    return args


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    # The table says what failed to publish; the fleet's own logs are under the state dir.
    logs.configure("console", logging.ERROR, force=True)
    # This process's pool reports every connection PostgreSQL's restarts break: expected here.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _interrupt)
    command = "python -m chaos.run " + " ".join(sys.argv[1:] if argv is None else argv)
    state = Path(tempfile.mkdtemp(prefix="chaos-"))
    print(f"== chaos: {args.orders} orders, seed {args.seed}, state {state}", flush=True)
    run = _Run(args, state, command)
    try:
        return run.execute()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", flush=True)
        return 130
    finally:
        run.cleanup()
        if args.keep:
            print(f"state kept: {state} (logs in {state / 'logs'})")
        else:
            shutil.rmtree(state, ignore_errors=True)


class _Run:
    def __init__(self, args: argparse.Namespace, state: Path, command: str) -> None:
        self.args = args
        self.state = state
        self.command = command
        self.rng = random.Random(args.seed)  # noqa: S311 -- fault dice, not cryptography
        self.started = time.monotonic()
        self.deadline = self.started + args.seconds_budget
        self.servers = EmbeddedServers(state)
        self.log_dir = state / "logs"
        self.fleet: Fleet | None = None
        self.store: Store | None = None
        self.brokers: list[Any] = []
        self.publisher: Publisher | None = None
        self.injector: Injector | None = None
        self.trap: LastAttemptTrap | None = None
        self.midcall: MidCallKill | None = None
        self.callbacks: CallbackReplayer | None = None
        self.quiet: list[str] = []  # the quiet outage's orders
        self.crashed_by_themselves = 0
        self.scenarios: Counter[str] = Counter()
        self.driven_by: dict[str, str] = {}  # order id -> scripted scenario (else: the dice)
        self.vendor_of: dict[str, str] = {}  # order id -> the vendor its network routes to
        self.controls: dict[str, str] = {}  # vendor -> the base of its control routes
        self.notify_ledgers: dict[str, dict[str, Any]] = {}  # "sms", "platform" -> ledger

    def _t(self) -> float:
        return time.monotonic() - self.started

    def execute(self) -> int:
        server_url, redis_url = self.servers.start()
        database_url = fresh_database(server_url)
        migrate(database_url)
        self.log_dir.mkdir()
        sim_port, web_port = free_port(), free_port()
        env = fleet_env(database_url, redis_url, sim_port, web_port, self.args.seed)
        self.fleet = Fleet(
            env, self.log_dir, worker_groups=self.args.workers, threads=self.args.threads
        )
        self.fleet.start(START_TIMEOUT_S)
        self.store = Store(open_pool(database_url, min_size=1, max_size=4))
        startup_s = self._t()
        print(f"   fleet up in {startup_s:.1f} s: sim, {self.args.workers} worker groups x "
              f"{self.args.threads} threads, deadletter, reconciler, notify, web",
              flush=True)  # fmt: skip

        self.controls = control_urls(f"http://127.0.0.1:{sim_port}")
        window_began = time.monotonic()
        self._fault_window(redis_url, f"http://127.0.0.1:{web_port}", sim_port)
        window_s = time.monotonic() - window_began
        converged_in = self._converge()
        if converged_in is not None and self.args.quiet_outage > 0:
            converged_in = self._quiet_outage(redis_url)
        if self.callbacks is not None:
            self.callbacks.stop_event.set()
            self.callbacks.join(timeout=30)
        ledgers: dict[str, dict[str, Any]] = {
            vendor: httpx.get(f"{self.controls[vendor]}/ledger", timeout=30).json()
            for vendor in VENDORS
        }
        sim_url = f"http://127.0.0.1:{sim_port}"
        self.notify_ledgers = {
            party: httpx.get(f"{sim_url}{mount}/_sim/ledger", timeout=30).json()
            for party, mount in (("sms", SMS_MOUNT), ("platform", PLATFORM_MOUNT))
        }
        return self._report(ledgers, startup_s, window_s, converged_in)

    # -- the fault window --------------------------------------------------------------

    def _fault_window(self, redis_url: str, web_url: str, sim_port: int) -> None:
        assert self.fleet is not None
        assert self.store is not None
        specs = make_orders(self.args.orders, self.rng)
        self.vendor_of.update({spec.order_id: spec.vendor for spec in specs})
        normal = [spec for spec in specs if spec.kind == "normal"]
        self.scenarios, self.driven_by = script_vendor_scenarios(normal, self.controls)
        untaken = [spec for spec in normal if spec.order_id not in self.driven_by]
        self.trap = LastAttemptTrap(untaken, self.store, self.controls)
        self.trap.arm()
        self.driven_by.update(dict.fromkeys(self.trap.armed, "trap: last attempt's answer lost"))
        window = self.args.fault_window
        publish_broker = build_broker(redis_url, NAMESPACE)
        fault_broker = build_broker(redis_url, NAMESPACE)
        self.brokers += [publish_broker, fault_broker]
        self.publisher = Publisher(specs, self.store, publish_broker, window * 0.8)
        dice = random.Random(self.rng.random())  # noqa: S311 -- fault dice, not cryptography
        events = schedule(window, dice, kill_every_s=self.args.kill_every)
        armed = pick_armed(self.publisher, normal, set(self.driven_by), events)
        self.midcall = MidCallKill(
            armed,
            vendor_of=self.vendor_of,
            fleet=self.fleet,
            controls=self.controls,
            sim_port=sim_port,
            breaker_state=partial(_breaker_state, redis_url),
        )
        self.midcall.arm()
        self.driven_by.update(dict.fromkeys(armed, "worker killed between POST and answer"))
        self.injector = Injector(
            events,
            fleet=self.fleet,
            servers=self.servers,
            broker=fault_broker,
            published=self.publisher.published,
            controls=self.controls,
            rng=dice,
        )
        self.callbacks = CallbackReplayer(
            web_url=web_url,
            controls=self.controls,
            key=KEY,
            secret=SECRET,
            aggregator_secret=AGGREGATOR_SECRET,
            published=self.publisher.published,
            vendor_of=self.vendor_of,
            rng=random.Random(dice.random()),  # noqa: S311 -- fault dice, not cryptography
            excused=self.injector.servers_away,
        )
        print(f"   fault window {window:.0f} s: {len(events)} faults scheduled; orders published "
              f"over {window * 0.8:.0f} s", flush=True)  # fmt: skip
        self.publisher.start()
        self.injector.start()
        self.trap.start()
        self.midcall.start()
        self.callbacks.start()
        last = 0.0
        while self.publisher.is_alive() or self.injector.is_alive():
            if time.monotonic() > self.deadline:
                break
            time.sleep(0.5)
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                self._progress("faults")
        self.injector.stop_event.set()
        self.publisher.stop_event.set()
        self.midcall.stop_event.set()
        self.injector.join(timeout=60)
        self.publisher.join(timeout=60)
        self.midcall.join(timeout=60)
        self._raise_thread_errors()

    def _raise_thread_errors(self) -> None:
        threads = (self.publisher, self.injector, self.trap, self.midcall, self.callbacks)
        for thread in threads:
            if thread is not None and thread.error is not None:
                raise RuntimeError(f"{thread.name} failed: {thread.error!r}") from thread.error

    def _quiet_outage(self, redis_url: str) -> float | None:
        """The quiet outage (chaos.quiet), then convergence again: its seconds, or None."""
        assert self.store is not None
        outage, every = self.args.quiet_outage, self.args.quiet_every
        specs = quiet_orders(outage, every, self.rng)
        self.quiet = [spec.order_id for spec in specs]
        self.vendor_of.update({spec.order_id: spec.vendor for spec in specs})
        self.driven_by.update(dict.fromkeys(self.quiet, "quiet outage"))
        print(f"   quiet outage: both vendors down {outage:.0f} s, the dice stopped, {len(specs)} "
              f"orders, each vendor's one every {every:g} s", flush=True)  # fmt: skip
        broker = build_broker(redis_url, NAMESPACE)
        self.brokers.append(broker)
        publisher = start_quiet_outage(
            specs, outage_s=outage, every_s=every, store=self.store, broker=broker,
            controls=self.controls,
        )  # fmt: skip
        if self.callbacks is not None:  # callbacks while the circuit is open, too
            self.callbacks.prefer = publisher.published
        while publisher.is_alive() and time.monotonic() < self.deadline:
            publisher.join(timeout=PROGRESS_EVERY_S)
            self._progress("quiet")
        publisher.stop_event.set()
        publisher.join(timeout=60)
        if publisher.error is not None:
            raise RuntimeError(f"quiet publisher failed: {publisher.error!r}") from publisher.error
        self._raise_thread_errors()
        return self._converge()

    def _progress(self, phase: str) -> None:
        assert self.store is not None
        assert self.injector is not None
        try:
            counts = rows(self.store, "unfinished")[0]
            outbox = rows(self.store, "outbox_open")[0]
        except StoreError as exc:  # PostgreSQL may be restarting right now
            print(f"  t={self._t():6.1f}s  {phase:<9} (database away: {type(exc).__name__})")
            return
        published = self.publisher.counts["published"] if self.publisher else 0
        print(
            f"  t={self._t():6.1f}s  {phase:<9} orders {counts['total']:>5} "
            f"(published {published}) success {counts['success']:>5} "
            f"dead {counts['dead_lettered']:>4} unfinished {counts['unfinished']:>5} "
            f"claimed {counts['claimed']:>3} | sms open {outbox['sms']:>3} events open "
            f"{outbox['events']:>3} | faults {sum(self.injector.counts.values())}",
            flush=True,
        )

    # -- convergence ---------------------------------------------------------------------

    def _converge(self) -> float | None:
        """Seconds from the end of the faults until nothing is left to do; None if the
        budget ran out first. A process that died by itself is restarted (and reported)."""
        assert self.fleet is not None
        assert self.store is not None
        began = time.monotonic()
        restarted = self.fleet.restart_dead()
        if restarted:
            print(f"   restarted after the fault window: {', '.join(restarted)}")
        last = 0.0
        while time.monotonic() < self.deadline:
            crashed = self.fleet.restart_dead()
            if crashed:
                print(f"   !! died on their own and restarted: {', '.join(crashed)}", flush=True)
                self.crashed_by_themselves += len(crashed)
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                self._progress("converge")
            try:
                settled = self._settled()
            except StoreError:  # the pool reconnects on its own
                time.sleep(POLL_S)
                continue
            if settled:
                converged = time.monotonic() - began
                # Quiet for two reconciler passes: nothing may move once converged.
                time.sleep(2 * float(FLEET_TIMINGS["RECONCILE_INTERVAL_S"]) + 1)
                if self._settled():
                    self._progress("converged")
                    return converged
            time.sleep(POLL_S)
        self._progress("timeout")
        return None

    def _settled(self) -> bool:
        """No order left to finish, no claim held, no SMS or event left to send."""
        assert self.store is not None
        counts = rows(self.store, "unfinished")[0]
        outbox = rows(self.store, "outbox_open")[0]
        left = (counts["unfinished"], counts["claimed"], outbox["sms"], outbox["events"])
        return all(int(n) == 0 for n in left)

    # -- the verdict ---------------------------------------------------------------------

    def _report(
        self,
        ledgers: dict[str, dict[str, Any]],
        startup_s: float,
        window_s: float,
        converged: float | None,
    ) -> int:
        assert self.store is not None
        assert self.injector is not None
        assert self.publisher is not None
        callbacks = self.callbacks
        results = invariants.check_all(
            self.store,
            ledgers,
            malformed_sent=self.injector.malformed_sent,
            callback_answers=dict(callbacks.counts) if callbacks is not None else None,
            callback_failures=callbacks.failures if callbacks is not None else (),
            quiet_orders=self.quiet,
            aggregator_outages=self.injector.aggregator_outages,
            sms_ledger=self.notify_ledgers.get("sms"),
            platform_ledger=self.notify_ledgers.get("platform"),
        )
        status = rows(self.store, "unfinished")[0]
        reasons = [(r["reason"], int(r["n"])) for r in rows(self.store, "dead_letter_reasons")]
        details = dict(self.injector.details)
        if self.crashed_by_themselves:
            details["processes that died on their own"] = self.crashed_by_themselves
        timings = report.Timings(startup_s, window_s, converged, self._t())
        cases = report.cases(
            self.midcall, self.callbacks, self.quiet,
            every_s=self.args.quiet_every, outage_s=self.args.quiet_outage,
        )  # fmt: skip
        print()
        print(
            report.table(
                orders=self.args.orders,
                seed=self.args.seed,
                command=self.command,
                status=status,
                networks=rows(self.store, "orders_by_network"),
                reasons=reasons,
                purchase_path=dict(self.publisher.counts),
                faults=dict(self.injector.counts),
                fault_details=details,
                scenarios=self._scenarios(),
                cases=cases,
                ledgers=ledgers,
                results=results,
                timings=timings,
            )
        )
        print("\nfault timeline:")
        for at, what in self.injector.timeline:
            if not what.startswith("SIGKILL"):
                print(f"  +{at:6.1f}s  {what}")
        ok = converged is not None and all(r.ok for r in results)
        if not ok:
            print(report.evidence(results, self.store, ledgers, self.log_dir, self.driven_by))
            if converged is None:
                stuck = rows(self.store, "not_terminal")[:5]
                print(f"\nunfinished orders (first 5 of {status['unfinished']}): "
                      f"{[r['id'] for r in stuck]}")  # fmt: skip
        return 0 if ok else 1

    def _scenarios(self) -> dict[str, int]:
        scenarios = dict(self.scenarios)
        if self.trap is not None:
            armed = Counter(LABELS[self.trap.vendor_of[oid]] for oid in self.trap.armed)
            name = (
                f"last attempt: answer lost + status check failing "
                f"(trap, {len(self.trap.armed)} armed: "
                f"{', '.join(f'{v} {n}' for v, n in sorted(armed.items()))})"
            )
            scenarios[name] = len(self.trap.sprung)
        return scenarios

    # -- cleanup -------------------------------------------------------------------------

    def cleanup(self) -> None:
        for thread in (self.injector, self.publisher, self.trap, self.midcall, self.callbacks):
            if thread is not None:
                thread.stop_event.set()
        if self.fleet is not None:
            self.fleet.stop()
        for broker in self.brokers:
            broker.close()
        if self.store is not None:
            self.store.close()
        self.servers.stop()


def _breaker_state(redis_url: str, vendor: str) -> str:
    """The fleet's circuit of a vendor as fleet/breaker.py keeps it in Redis (an observation
    only)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=1)
    try:
        state = client.hget(breaker_key(NAMESPACE, vendor), "state")
    except RedisError:
        return "unknown (Redis away)"
    finally:
        client.close()
    return state.decode() if isinstance(state, bytes) else "closed"


if __name__ == "__main__":
    raise SystemExit(main())
