"""The fulfilment decision, model-checked: the real fulfil service on real PostgreSQL against an
adversarial in-memory vendor (tests/model_vendor.py), driven by a hypothesis state machine.

Each step is one thing that happens to the fleet: an order is committed (its message
published or lost); a worker handles a queued fulfill_order message, when due or early (and
may be killed around a vendor call: the claim is left as a dead worker leaves it, then
expires); Redis duplicates or loses a message; time passes (the order rows' timestamps move
back: PostgreSQL's clock is not ours to move); the reconciler runs; the vendor settles a
pending purchase; the vendor calls back (fresh or a replay); the dead-letter consumer handles
a notice, or a "Dramatiq gave up" one; an admin retries or dismisses; the breaker opens,
half-opens, closes; the rate-limit gate fills and frees. The vendor answers each call as
hypothesis draws: normally, 5xx or timeout before or after applying a purchase, 429, 402, 401.

Checked after every step (a failure names the invariant and prints the story):

  (a)  no POST for a reference after a POST of it whose outcome the fleet could not know
       (timeout, 5xx, a lost worker) without a status answer for it in between;
  (a+) no POST for a reference the fleet was last told the vendor holds (pending, success);
  (k)  a lookup that says a pending purchase failed is not followed by a POST in the same
       step (the order waits its backoff: issue 9's finding 6);
  (b)  at most one delivery per reference (with honours_409=False the vendor has no 409
       safety net: a blind re-purchase delivers twice);
  (c)  no order 'failed' (dead-lettered as failed or waiting for a retry) while the vendor
       holds a success or a pending for it;
  (s)  no order 'success' that the vendor did not deliver;
  (w)  a vendor callback never makes the webhook fail (an exception escaping confirm_delivery
       is a 5xx) whatever the breaker or rate-limit state;
  (r)  a callback completes the order (a delivery the lookup confirmed) or changes nothing of
       its decision state (status, attempts, in flight, status checks, deferrals, schedule,
       dead letter); a replay (same bytes and signature) does not even ask the vendor (route);
  (x)  the service raises nothing but the project's own errors.

And once faults stop (teardown: vendor answers normally, breaker closed, pendings settle,
every queued message is delivered when due, the dead-letter consumers and the reconciler run,
up to MODEL_FINAL_ROUNDS rounds):

  (d)  every order is 'success' or in a human's queue (dead_letter_reason IS NOT NULL).

Knobs (environment): MODEL_EXAMPLES (default 100), MODEL_STEPS (steps per example, 30),
MODEL_MAX_ORDERS (3), MODEL_SKIP (rule names, comma-separated, never run;
auto_breaker: the breaker never opens by itself), MODEL_INVARIANTS
(the ones to check, default all: a,a+,k,b,c,s,w,r,x,d), MODEL_FINAL_ROUNDS (8), MODEL_TIMEOUT_S.
MODEL_CALLBACKS (route: through the real webhook under uvicorn; direct: confirm_delivery),
MODEL_ALL_BUGS=1 (shrink and report every distinct failure, not only the first).
A long run (about 20 minutes on 2 cores when nothing fails):
    MODEL_EXAMPLES=5000 MODEL_STEPS=60 MODEL_ALL_BUGS=1 .venv/bin/pytest \
        tests/integration/test_decision_model.py --tb=short
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql

from db.store import Store
from fulfillment.dev.embedded import free_port
from fulfillment.domain.errors import FulfillmentError, OrderNotFound
from fulfillment.domain.retry import RetryPolicy
from fulfillment.services import delivery
from fulfillment.services.deadletter import handle_dead_letter, handle_gave_up, notice_for_gave_up
from fulfillment.services.notifier import Notifier
from fulfillment.services.ports import DeadLetterNotice, FulfilDeps
from fulfillment.services.reconciler import reconcile_once
from fulfillment.vendors.atishare_signing import signed_headers
from tests.model_vendor import (
    STATUS_FAULTS,
    ModelBreaker,
    ModelGate,
    ModelVendor,
    WorkerKilled,
    always_first,
)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, "") or default)


EXAMPLES = _env_int("MODEL_EXAMPLES", 100)
STEPS = _env_int("MODEL_STEPS", 30)
MAX_ORDERS = _env_int("MODEL_MAX_ORDERS", 3)
FINAL_ROUNDS = _env_int("MODEL_FINAL_ROUNDS", 8)
#: route: callbacks go through the real webhook (in process); direct: confirm_delivery itself
CALLBACKS = os.environ.get("MODEL_CALLBACKS", "route")
#: 1: find and shrink every distinct failure (slower); default: stop at the first one
ALL_BUGS = os.environ.get("MODEL_ALL_BUGS", "") == "1"
SKIP = {s.strip() for s in os.environ.get("MODEL_SKIP", "").split(",") if s.strip()}
ALL_INVARIANTS = ("a", "a+", "k", "b", "c", "s", "w", "r", "x", "d")
CHECK = {s.strip() for s in os.environ.get("MODEL_INVARIANTS", ",".join(ALL_INVARIANTS)).split(",")}

pytestmark = [
    pytest.mark.integration,
    # generous: shrinking a failure replays many examples (a passing default run takes ~15 s)
    pytest.mark.timeout(_env_int("MODEL_TIMEOUT_S", max(600, EXAMPLES))),
]

POLICY = RetryPolicy(
    delays=(60.0, 120.0, 240.0),
    max_attempts=3,
    max_deferrals=5,
    max_status_checks=4,
    status_check_delay_s=30.0,
)
CLAIM_TTL_S = 300.0
GRACE_S = 60.0
#: Dramatiq's _retry_when (workers/actors.py): 3 retries of an unexpected error, then gave up
DRAMATIQ_RETRIES = 3
TABLES = "orders, fulfillment_logs, admin_notifications, admin_audit"
WEBHOOK_PATH = "/webhooks/at-ishare"
VENDOR_KEY, VENDOR_SECRET = "model-key", "model-secret"
#: status lookups a callback may make (faults drawn before it is sent)
CALLBACK_LOOKUPS = 1
STATUS_FAULTS_NO_KILL = tuple(f for f in STATUS_FAULTS if f != "kill")
#: what a callback must leave alone unless it completes the order (invariant r)
DECISION_FIELDS = (
    "fulfillment_status",
    "fulfillment_attempts",
    "fulfillment_in_flight_attempt",
    "fulfillment_status_checks",
    "fulfillment_deferrals",
    "next_attempt_at",
    "dead_letter_reason",
)
#: a delayed message is mostly delivered when due (the clock moves), sometimes early (skew)
TIMINGS = ("when_due", "when_due", "when_due", "early")
KILL_FATES = ("redelivered", "lost", "gave_up")  # SIGKILL: unacked, redelivered; or a time limit


def on(name: str) -> bool:
    return name not in SKIP


@dataclass(frozen=True)
class OrderRef:
    name: str
    id: str

    def __repr__(self) -> str:
        return self.name


@dataclass
class Msg:
    """A fulfill_order message in the model's Redis."""

    seq: int
    order_id: str
    due: float  # model clock
    retries: int = 0


@dataclass
class GaveUp:
    """Dramatiq's on_retry_exhausted message for a fulfill_order message."""

    order_id: str
    retries: int
    last_line: str


@dataclass
class ModelEnv:
    store: Store
    notifier: Notifier
    time_columns: list[str] = field(default_factory=list)
    #: drops what the service logged during an example (pytest shows it on a failure: noise)
    drop_output: Callable[[], None] = lambda: None
    #: a client of the admin app (route mode), whose webhook confirms with `current`'s deps
    webhook: Any = None
    current: Any = None


def _drawer(data: Any) -> Callable[[str, Sequence[str]], str]:
    def choose(label: str, options: Sequence[str]) -> str:
        return str(data.draw(st.sampled_from(list(options)), label=label))

    return choose


class DecisionModel(RuleBasedStateMachine):
    env: ClassVar[ModelEnv]
    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.store = self.env.store
        self.notifier = self.env.notifier
        self.trace: list[str] = []
        self.vendor = ModelVendor(trace=self.trace)
        self.fleet_breaker = ModelBreaker(trace=self.trace)
        self.gate = ModelGate()
        self.queue: list[Msg] = []
        self.dead_letters: list[DeadLetterNotice] = []
        self.gave_up: list[GaveUp] = []
        self.alerts: list[tuple[str, ...]] = []
        self.refs: list[OrderRef] = []
        self.callbacks: dict[str, list[dict[str, Any]]] = {}
        self.webhook_failures: list[str] = []
        self.callback_changes: list[str] = []
        #: the order rows as the last invariant check read them (cheap preconditions)
        self.seen: dict[str, dict[str, Any]] = {}
        self.unexpected: list[str] = []
        self.clock = 0.0
        self._seq = itertools.count(1)
        self._step = 0
        with self.store.pool.connection() as conn:
            conn.execute(f"TRUNCATE {TABLES}")
        self.deps = self._deps()
        self.env.current = self
        from fulfillment.services.admin import AdminService

        self.admin_service = AdminService(
            store=self.store, publish=self._publish_retry, max_attempts=POLICY.max_attempts
        )

    # -- wiring ------------------------------------------------------------------------------

    def _deps(self) -> FulfilDeps:
        values: dict[str, Any] = {
            "store": self.store,
            "vendor": self.vendor,
            "policy": POLICY,
            "enabled": True,
            "claim_ttl_s": CLAIM_TTL_S,
            "worker": "model-worker",
            "publish_retry": self._publish_retry,
            "publish_dead_letter": self._publish_dead_letter,
            "alert": lambda *a: self.alerts.append(a),
            "breaker": self.fleet_breaker,
            "gate": self.gate,
            "balance_pause_s": 60.0,
            "wait_in_place_s": 0.0,
        }
        names = {f.name for f in dataclasses.fields(FulfilDeps)}
        if "routes" in names:  # one connection per vendor (an older tree has one vendor)
            from fulfillment.services.ports import VendorConnection, routes_to

            connection = VendorConnection(
                "at-ishare",
                "AT-iShare",
                values.pop("vendor"),
                breaker=values.pop("breaker"),
                gate=values.pop("gate"),
                balance_pause_s=values.pop("balance_pause_s"),
            )
            values["routes"] = routes_to(connection, "at-ishare")
        return FulfilDeps(**{k: v for k, v in values.items() if k in names})

    def _name(self, order_id: str | None) -> str:
        return self.vendor.names.get(order_id or "", str(order_id)[:8])

    def _publish_retry(self, order_id: str, delay_s: float) -> None:
        self.queue.append(Msg(next(self._seq), order_id, self.clock + max(delay_s, 0.0)))
        self.trace.append(f"    publish fulfill_order({self._name(order_id)}) in {delay_s:.0f}s")

    def _publish_dead_letter(self, notice: DeadLetterNotice) -> None:
        self.dead_letters.append(notice)
        self.trace.append(
            f"    publish dead letter {notice.kind} {self._name(notice.order_id)}: {notice.reason}"
        )

    def _say(self, text: str) -> None:
        self._step += 1
        self.vendor.step = self._step
        self.trace.append(f"{self._step:>3}. {text}")

    def _sql(self, query: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.store.pool.connection() as conn:
            cur = conn.execute(query, params or {})
            return list(cur.fetchall()) if cur.description else []

    def _ids(self) -> list[uuid.UUID]:
        return [uuid.UUID(r.id) for r in self.refs]

    def _advance(self, seconds: float) -> None:
        """Time passes: every timestamp of our orders moves back; the model's clock on."""
        self.clock += seconds
        self.fleet_breaker.paused = False  # pauses (429, 402) are seconds to a minute
        if not self.refs:
            return
        sets = sql.SQL(", ").join(
            sql.SQL("{c} = {c} - make_interval(secs => %(s)s)").format(c=sql.Identifier(c))
            for c in self.env.time_columns
        )
        query = sql.SQL("UPDATE orders SET {sets} WHERE id = ANY(%(ids)s)").format(sets=sets)
        self._sql(query, {"s": float(seconds), "ids": self._ids()})

    def _expire_claims(self, order_id: str | None = None) -> None:
        """A dead worker's claim: let its lease run out (as time would)."""
        ids = [uuid.UUID(order_id)] if order_id else self._ids()
        self._sql(
            "UPDATE orders SET claim_expires_at = now() - interval '1 second' "
            "WHERE id = ANY(%(ids)s) AND claim_token IS NOT NULL",
            {"ids": ids},
        )

    def _rows(self) -> dict[str, dict[str, Any]]:
        rows = self._sql(
            "SELECT *, extract(epoch FROM next_attempt_at - now())::float8 AS model_due_in_s "
            "FROM orders WHERE id = ANY(%(ids)s)",
            {"ids": self._ids()},
        )
        return {str(r["id"]): r for r in rows}

    def _row_text(self, row: dict[str, Any]) -> str:
        return (
            f"{self._name(str(row['id']))}: {row['fulfillment_status']}, "
            f"attempts {row['fulfillment_attempts']}, in flight "
            f"{row['fulfillment_in_flight_attempt']}, checks {row['fulfillment_status_checks']}, "
            f"claim {'yes' if row['claim_token'] else 'no'}, "
            + (
                "nothing scheduled, "
                if row["model_due_in_s"] is None
                else f"due in {row['model_due_in_s']:.0f}s, "
            )
            + f"dead letter {row['dead_letter_reason']!r}"
            + (" (flagged)" if row["dead_lettered_at"] else "")
        )

    def _story(self) -> str:
        rows = self._rows()
        lines = ["", "story (newest last):", *self.trace[-80:], "", "now:"]
        for ref in self.refs:
            row = rows.get(ref.id)
            lines.append("  " + (self._row_text(row) if row else f"{ref.name}: no row"))
            lines.append("  " + self.vendor.book(ref.id).describe())
        return "\n".join(lines)

    # -- the worker, as the fulfill_order actor runs it under Dramatiq ----------------------

    def _work(self, msg: Msg, data: Any) -> None:
        oid = msg.order_id
        self.vendor.kills_allowed = data is not None
        self.vendor.chooser = _drawer(data) if data is not None else always_first
        try:
            outcome = delivery.fulfil(oid, self.deps)
            self.trace.append(f"    -> {getattr(outcome, 'value', outcome)}")
        except WorkerKilled:
            self._expire_claims(oid)
            fate = str(data.draw(st.sampled_from(KILL_FATES), label="killed worker's message"))
            self.trace.append(f"    -> worker killed; its claim expires; message {fate}")
            if fate == "redelivered":
                self.queue.append(Msg(next(self._seq), oid, self.clock, msg.retries))
            elif fate == "gave_up":
                last = "dramatiq.middleware.time_limit.TimeLimitExceeded: killed (model)"
                self.gave_up.append(GaveUp(oid, msg.retries, last))
        except OrderNotFound:
            self.trace.append("    -> order not found")
        except Exception as exc:  # Dramatiq retries an unexpected error
            if not isinstance(exc, FulfillmentError):
                self.unexpected.append(f"fulfil({self._name(oid)}) raised {exc!r}")
            retries = msg.retries + 1
            self.trace.append(f"    -> raised {exc!r}; Dramatiq retry {retries}")
            if retries > DRAMATIQ_RETRIES:
                self.gave_up.append(GaveUp(oid, retries, f"{type(exc).__name__}: {exc}"))
            else:
                self.queue.append(Msg(next(self._seq), oid, self.clock + 1.0, retries))
        finally:
            self.vendor.kills_allowed = False
            self.vendor.chooser = always_first

    def _pop(self, items: list[Any], which: int) -> Any:
        return items.pop(which % len(items))

    # -- rules -------------------------------------------------------------------------------

    @initialize(
        target=orders,
        honours_409=st.sampled_from([True, False]),
        breaker_opens_after=st.sampled_from([None, 1, 2, 3]),
    )
    def first_order(self, honours_409: bool, breaker_opens_after: int | None) -> OrderRef:
        """The vendor's kind (its 409 safety net or none), whether the breaker opens by itself
        after N vendor-wide failures in a row, and the first order (published)."""
        if not on("auto_breaker"):
            breaker_opens_after = None
        self.vendor.honours_409 = honours_409
        self.fleet_breaker.open_after = breaker_opens_after
        self._say(f"vendor honours_409={honours_409}; breaker opens after {breaker_opens_after}")
        return self._order("published")

    @precondition(lambda self: on("new_order") and len(self.refs) < MAX_ORDERS)
    @rule(target=orders, message=st.sampled_from(["published", "lost"]))
    def new_order(self, message: str) -> OrderRef:
        return self._order(message)

    def _order(self, message: str) -> OrderRef:
        ref = OrderRef(f"o{len(self.refs) + 1}", str(uuid.uuid4()))
        self.store.insert_order(
            ref.id, phone_number="+233241234567", network="at-ishare", size_gb=2, package_name=None
        )
        self.refs.append(ref)
        self.vendor.register(ref.id, ref.name)
        self._say(f"new order {ref.name}, message {message}")
        if message == "published":
            self.store.mark_enqueued(ref.id)
            self.queue.append(Msg(next(self._seq), ref.id, self.clock))
        return ref

    @precondition(lambda self: on("handle_message") and self.queue)
    @rule(which=st.integers(0, 15), timing=st.sampled_from(TIMINGS), data=st.data())
    def handle_message(self, which: int, timing: str, data: Any) -> None:
        msg = self._pop(self.queue, which)
        wait = msg.due - self.clock
        late = f" ({timing}: due in {wait:.0f}s)" if wait > 0 else ""
        self._say(f"worker handles fulfill_order({self._name(msg.order_id)}){late}")
        if wait > 0 and timing == "when_due":
            self._advance(wait + 1.0)
        self._work(msg, data)

    #: Workers are most of what happens: the rule is listed three times, so it is drawn as
    #: often as three other rules.
    handle_message_2 = handle_message
    handle_message_3 = handle_message

    @precondition(lambda self: on("redis_fault") and self.queue)
    @rule(fault=st.sampled_from(["duplicates", "loses"]), which=st.integers(0, 15))
    def redis_fault(self, fault: str, which: int) -> None:
        msg = self.queue[which % len(self.queue)]
        self._say(f"Redis {fault} fulfill_order({self._name(msg.order_id)})")
        if fault == "duplicates":
            self.queue.append(Msg(next(self._seq), msg.order_id, msg.due, msg.retries))
        else:
            self.queue.remove(msg)

    @precondition(lambda self: on("time_passes"))
    @rule(seconds=st.sampled_from([60, 300, 1000, 4000]))
    def time_passes(self, seconds: int) -> None:
        self._say(f"{seconds}s pass")
        self._advance(seconds)

    @precondition(lambda self: on("reconciler") and self.refs)
    @rule(data=st.data())
    def reconciler(self, data: Any) -> None:
        self._say("the reconciler runs")
        self.vendor.kills_allowed = True
        self.vendor.chooser = _drawer(data)
        try:
            report = reconcile_once(self.deps, self.notifier, grace_s=GRACE_S)
            self.trace.append(f"    -> {report.by_reason}")
        except WorkerKilled:
            self._expire_claims()
            self.trace.append("    -> reconciler killed; its claim expires")
        except FulfillmentError as exc:
            self.trace.append(f"    -> pass failed: {exc!r}")
        finally:
            self.vendor.kills_allowed = False
            self.vendor.chooser = always_first

    @precondition(
        lambda self: (
            on("vendor_settles") and any(b.status == "pending" for b in self.vendor.books.values())
        )
    )
    @rule(order=orders, outcome=st.sampled_from(["success", "failed"]))
    def vendor_settles(self, order: OrderRef, outcome: str) -> None:
        if self.vendor.book(order.id).status == "pending":
            self._say(f"the vendor settles {order.name}: {outcome}")
            self.vendor.settle(order.id, outcome)

    @precondition(
        lambda self: on("vendor_calls_back") and any(b.txns for b in self.vendor.books.values())
    )
    @rule(order=orders, replay=st.sampled_from(["fresh", "replay"]), data=st.data())
    def vendor_calls_back(self, order: OrderRef, replay: str, data: Any) -> None:
        """The vendor calls back about a reference it has: its current status, signed now, or a
        replay of the last callback it sent (the same bytes and signature)."""
        book = self.vendor.book(order.id)
        sent = self.callbacks.setdefault(order.id, [])
        if replay == "replay" and sent:
            callback = sent[-1]
        elif book.txns:
            replay = "fresh"
            txn = book.txns[-1]
            body = {
                "reference": order.id,
                "status": txn.status,
                "transaction_id": txn.transaction_id,
            }
            raw = json.dumps(body).encode()
            headers = signed_headers(
                VENDOR_KEY, VENDOR_SECRET, "POST", WEBHOOK_PATH, raw, time.time()
            )
            callback = {"status": txn.status, "raw": raw, "headers": headers}
            sent.append(callback)
        else:
            return  # the vendor calls back only about what it received
        self._say(f"vendor callback ({replay}) for {order.name}: {callback['status']}")
        # The webhook may run in another thread (route mode): its lookups' faults are drawn here.
        faults = [
            str(data.draw(st.sampled_from(STATUS_FAULTS_NO_KILL), label=f"{order.name} GET"))
            for _ in range(CALLBACK_LOOKUPS)
        ]
        self.vendor.chooser = lambda label, options: faults.pop(0) if faults else options[0]
        before = self._rows().get(order.id)
        lookups = book.lookups
        try:
            if CALLBACKS == "route":
                self._callback_over_http(order, callback)
            else:
                self._callback_direct(order)
        finally:
            self.vendor.chooser = always_first
        after = self._rows().get(order.id)
        if before is None or after is None or after["fulfillment_status"] == "success":
            return
        changed = [k for k in DECISION_FIELDS if before[k] != after[k]]
        if changed == ["next_attempt_at"] and before["next_attempt_at"] is None:
            # A dead worker's order the callback could not settle is made due (release_claim):
            # otherwise nobody would ever take it again. Nothing else of it may change.
            changed = []
        if changed:
            self.callback_changes.append(
                f"a {replay} '{callback['status']}' callback for {order.name} changed "
                + ", ".join(f"{k} {before[k]!r} -> {after[k]!r}" for k in changed)
                + " without completing it"
            )
        if replay == "replay" and CALLBACKS == "route" and book.lookups != lookups:
            self.callback_changes.append(f"a replayed callback for {order.name} asked the vendor")

    def _callback_over_http(self, order: OrderRef, callback: dict[str, Any]) -> None:
        """The real webhook route (web/webhooks.py) in process: signature, replay memory,
        confirmation through confirm_delivery."""
        assert self.env.webhook is not None
        response = self.env.webhook.post(
            WEBHOOK_PATH, content=callback["raw"], headers=callback["headers"]
        )
        self.trace.append(f"    -> HTTP {response.status_code} {response.text[:120]}")
        if response.status_code >= 500:
            self.webhook_failures.append(
                f"callback for {order.name}: HTTP {response.status_code} {response.text[:200]}"
            )
        elif response.status_code in (401, 422):
            self.unexpected.append(f"webhook refused a good callback: {response.text[:200]}")

    def _callback_direct(self, order: OrderRef) -> None:
        """What the webhook did with every signed callback: confirm_delivery."""
        try:
            outcome = delivery.confirm_delivery(order.id, self.deps)
            self.trace.append(f"    -> {getattr(outcome, 'value', outcome)}")
        except OrderNotFound:
            self.trace.append("    -> 404")
        except Exception as exc:  # the app answers 500 to anything else
            self.webhook_failures.append(f"callback for {order.name}: {exc!r} (HTTP 500)")
            self.trace.append(f"    -> HTTP 500: {exc!r}")

    @precondition(lambda self: on("dead_letter_consumer") and self.dead_letters)
    @rule(which=st.integers(0, 7))
    def dead_letter_consumer(self, which: int) -> None:
        notice = self._pop(self.dead_letters, which)
        self._say(f"dead-letter consumer: {notice.kind} {self._name(notice.order_id)}")
        self._consume_dead_letter(notice)

    def _consume_dead_letter(self, notice: DeadLetterNotice) -> None:
        try:
            flagged = handle_dead_letter(notice, self.store, self.notifier)
            self.trace.append(f"    -> {'flagged' if flagged else 'nothing new'}")
        except FulfillmentError as exc:
            self.trace.append(f"    -> raised {exc!r}; retried later")
            self.dead_letters.append(notice)

    @precondition(lambda self: on("dramatiq_gave_up") and self.gave_up)
    @rule(which=st.integers(0, 7), data=st.data())
    def dramatiq_gave_up(self, which: int, data: Any) -> None:
        item = self._pop(self.gave_up, which)
        self._say(f"gave-up consumer: fulfill_order({self._name(item.order_id)})")
        self._consume_gave_up(item, data)

    def _consume_gave_up(self, item: GaveUp, data: Any) -> None:
        message = {
            "message_id": f"model-{item.order_id[:8]}-{item.retries}",
            "args": [item.order_id],
            "kwargs": {},
            "options": {"traceback": f"Traceback (most recent call last):\n{item.last_line}"},
        }
        self.vendor.chooser = _drawer(data) if data is not None else always_first
        try:
            notice = notice_for_gave_up(message, {"retries": item.retries}, self.store)
            if notice is None:
                self.trace.append("    -> no notice (a fleet problem)")
                return
            kwargs: dict[str, Any] = {}
            settle = getattr(delivery, "settle_for_dead_letter", None)
            if settle is not None and "settle" in _parameters(handle_gave_up):
                # as workers.actors.message_gave_up wires it
                kwargs["settle"] = lambda order_id: settle(order_id, self.deps)
            flagged = handle_gave_up(notice, self.store, self.notifier, **kwargs)
            self.trace.append(f"    -> {'flagged' if flagged else 'nothing new'}")
        except FulfillmentError as exc:  # OrderBusy: Dramatiq retries the hook
            self.trace.append(f"    -> raised {exc!r}; retried later")
            self.gave_up.append(item)
        finally:
            self.vendor.chooser = always_first

    @precondition(
        lambda self: (
            on("admin_acts")
            and any(r["fulfillment_status"] == "failed" for r in self.seen.values())
        )
    )
    @rule(order=orders, action=st.sampled_from(["retry", "dismiss"]))
    def admin_acts(self, order: OrderRef, action: str) -> None:
        """An admin retries a failed (or dead-lettered) order, or dismisses its dead letter."""
        self._say(f"admin: {action} {order.name}")
        if action == "retry":
            results = self.admin_service.retry([order.id], actor="model-admin", reason="model")
        else:
            results = self.admin_service.dismiss([order.id], actor="model-admin", reason="model")
        self.trace.append(f"    -> {results[0].code}")

    @precondition(lambda self: on("fleet_changes"))
    @rule(
        change=st.sampled_from(
            ["breaker opens", "breaker half-opens", "breaker closes", "gate fills", "gate frees"]
        )
    )
    def fleet_changes(self, change: str) -> None:
        """The fleet-wide breaker (half-open: its open period ended) or the rate-limit gate
        (full: no slot free) changes."""
        breaker, gate = self.fleet_breaker, self.gate
        if change == "breaker opens" and breaker.state == "closed":
            breaker.state = "open"
        elif change == "breaker half-opens" and breaker.state == "open":
            breaker.state, breaker.probe_out = "half_open", False
        elif change == "breaker closes" and breaker.state != "closed":
            breaker.reset()
        elif change in ("gate fills", "gate frees") and gate.full != (change == "gate fills"):
            gate.full = change == "gate fills"
        else:
            return
        self._say(f"the {change}")

    @precondition(lambda self: bool(SKIP))
    @rule()
    def idle(self) -> None:
        """Nothing happens (only with MODEL_SKIP: some rule must always be possible)."""

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def fleet_promises(self) -> None:
        RUN["steps"] += 1
        if not self.refs:
            return
        rows = self.seen = self._rows()
        books = {ref.id: self.vendor.book(ref.id) for ref in self.refs}
        blind = [v.message for v in self.vendor.violations if v.invariant == "a"]
        if "a" in CHECK:
            assert not blind, (
                "(a) re-purchase after an unknown outcome: " + "; ".join(blind) + self._story()
            )
        known = [v.message for v in self.vendor.violations if v.invariant == "a+"]
        if "a+" in CHECK:
            assert not known, (
                "(a+) re-purchase of what the vendor held: " + "; ".join(known) + self._story()
            )
        hasty = [v.message for v in self.vendor.violations if v.invariant == "k"]
        if "k" in CHECK:
            assert not hasty, "(k) backoff skipped: " + "; ".join(hasty) + self._story()
        twice = [b.describe() for b in books.values() if b.deliveries > 1]
        if "b" in CHECK:
            assert not twice, "(b) delivered more than once: " + "; ".join(twice) + self._story()
        held = [
            (rows[oid], self._row_text(rows[oid]) + " | " + book.describe())
            for oid, book in books.items()
            if oid in rows and rows[oid]["fulfillment_status"] == "failed" and book.holds
        ]
        given_up = [text for row, text in held if row["dead_letter_reason"] is not None]
        if "c" in CHECK:  # first the worse case: given up as failed (an admin may refund it)
            assert not given_up, (
                "(c) dead-lettered as failed while the vendor holds it: "
                + ("; ".join(given_up))
                + self._story()
            )
        failed_held = [text for _, text in held]
        if "c" in CHECK:  # then any 'failed', a retry scheduled included
            assert not failed_held, (
                "(c) failed while the vendor holds it: " + "; ".join(failed_held) + self._story()
            )
        false_success = [
            self._row_text(rows[oid]) + " | " + book.describe()
            for oid, book in books.items()
            if oid in rows and rows[oid]["fulfillment_status"] == "success" and not book.deliveries
        ]
        if "s" in CHECK:
            assert not false_success, (
                "(s) success the vendor did not deliver: "
                + "; ".join(false_success)
                + self._story()
            )
        if "w" in CHECK:
            assert not self.webhook_failures, (
                "(w) webhook failed: " + "; ".join(self.webhook_failures) + self._story()
            )
        if "r" in CHECK:
            assert not self.callback_changes, (
                "(r) callback changed the order: "
                + "; ".join(self.callback_changes)
                + self._story()
            )
        if "x" in CHECK:
            assert not self.unexpected, (
                "(x) unexpected exception: " + "; ".join(self.unexpected) + self._story()
            )

    # -- (d): faults stop; everything must settle ----------------------------------------------

    def teardown(self) -> None:
        RUN["examples"] += 1
        RUN["orders"] += len(self.refs)
        try:
            if sys.exc_info()[0] is not None or not self.refs or "d" not in CHECK:
                return  # a step already failed: its report is the one that matters
            self._converge()
        finally:
            self.env.drop_output()

    def _converge(self) -> None:
        self._say("faults stop: normal answers, breaker closed, gate free, pendings settle")
        self.vendor.chooser = always_first
        self.vendor.kills_allowed = False
        self.fleet_breaker.reset()
        self.fleet_breaker.open_after = None
        self.gate.full = False
        for round_no in range(1, FINAL_ROUNDS + 1):
            for ref in self.refs:
                while self.vendor.settle(ref.id, "success"):
                    pass
            self._say(f"final round {round_no}: 4000s pass")
            self._advance(4000)
            budget = 10 + 6 * len(self.refs)
            while self.queue and budget > 0:
                budget -= 1
                self.queue.sort(key=lambda m: (m.due, m.seq))
                msg = self.queue.pop(0)
                if msg.due > self.clock:
                    self._advance(msg.due - self.clock + 1.0)
                self._say(f"worker handles fulfill_order({self._name(msg.order_id)}) when due")
                self._work(msg, None)
            while self.dead_letters:
                notice = self.dead_letters.pop(0)
                self._say(f"dead-letter consumer: {notice.kind} {self._name(notice.order_id)}")
                self._consume_dead_letter(notice)
            for item in list(self.gave_up):
                self.gave_up.remove(item)
                self._say(f"gave-up consumer: fulfill_order({self._name(item.order_id)})")
                self._consume_gave_up(item, None)
            self._say("the reconciler runs")
            report = reconcile_once(self.deps, self.notifier, grace_s=GRACE_S)
            self.trace.append(f"    -> {report.by_reason}")
            self.fleet_promises()
            if not self.queue and not self.dead_letters and not self._unsettled():
                return
        unsettled = self._unsettled()
        assert not unsettled, (
            f"(d) not settled after {FINAL_ROUNDS} fault-free rounds: "
            + "; ".join(unsettled)
            + self._story()
        )

    def _unsettled(self) -> list[str]:
        rows = self._rows()
        return [
            self._row_text(row)
            for row in rows.values()
            if row["fulfillment_status"] != "success" and row["dead_letter_reason"] is None
        ]


def _parameters(func: Callable[..., Any]) -> set[str]:
    import inspect

    return set(inspect.signature(func).parameters)


def _drop_captured(capture: Any) -> None:
    """Discard the log lines captured so far (the service logs every call; a failing example
    is reported through hypothesis's own output, not pytest's captured stderr)."""
    if capture is not None and getattr(capture, "_global_capturing", None) is not None:
        capture.read_global_capture()


def _time_columns(store: Store) -> list[str]:
    with store.pool.connection() as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'orders' "
            "AND data_type LIKE 'timestamp%%'"
        ).fetchall()
    return [r["column_name"] for r in rows]


#: What a run explored (printed at its end, past pytest's capture, for docs/RELIABILITY.md).
RUN: Counter[str] = Counter()


def test_fulfilment_decision_model(store: Store, request: pytest.FixtureRequest) -> None:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    env = ModelEnv(
        store=store,
        notifier=Notifier(store=store, webhook_url=None),
        time_columns=_time_columns(store),
        drop_output=lambda: _drop_captured(capture),
    )
    DecisionModel.env = env
    with contextlib.ExitStack() as stack:
        if CALLBACKS == "route":
            env.webhook = stack.enter_context(_webhook_client(env))
        run_state_machine_as_test(
            DecisionModel,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                report_multiple_bugs=ALL_BUGS,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink, Phase.explain]
                if os.environ.get("MODEL_EXPLAIN")
                else [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
            ),
        )
    with capture.global_and_fixture_disabled():  # the run's size, for the record
        print(
            f"\nmodel: {RUN['examples']} examples, {RUN['steps']} checked steps, "
            f"{RUN['orders']} orders, every invariant held"
        )


@contextlib.contextmanager
def _webhook_client(env: ModelEnv) -> Iterator[httpx.Client]:
    """The admin app under uvicorn on a free port (as tests/integration/test_webhook.py serves
    it); only its vendor webhook is used, confirming with the current example's deps."""
    import uvicorn

    from fulfillment.services.admin import AdminService
    from fulfillment.services.pauses import PauseService
    from fulfillment.web.app import create_app
    from fulfillment.web.deps import WebDeps

    values: dict[str, Any] = {
        "service": AdminService(store=env.store, publish=lambda *_: None, max_attempts=3),
        "pauses": PauseService(store=env.store, publish=lambda *_: None),
        "dlq": None,
        "store": env.store,
        "api_token": "model-api-token",
        "admin_token": "model-admin-token",
        "vendor_key": VENDOR_KEY,
        "vendor_secret": VENDOR_SECRET,
        "fulfil_deps": lambda: env.current.deps,
        "ping_redis": lambda: None,
    }
    names = {f.name for f in dataclasses.fields(WebDeps)}
    app = create_app(WebDeps(**{k: v for k, v in values.items() if k in names}))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
