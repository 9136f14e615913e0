"""What must hold after the fleet converged, however many faults it went through.

Each check reads the database (chaos/queries.sql) and, where a vendor is the witness, the
simulator's ledger of that vendor (`ledgers`: vendor -> `GET /_sim/ledger` of AT-iShare,
`GET /aggregator/_sim/ledger` of the aggregator: per reference its deliveries, transaction,
purchase requests and blind re-purchases), and for the customers' SMS and the platform's events
the simulated SMS provider's (`GET /sms/_sim/ledger`) and platform receiver's
(`GET /platform/_sim/ledger`). An order belongs to the vendor its network routes
to (chaos.vendors.vendor_of); the ledger checks run once per vendor, and one more says that no
order ever reached the other vendor. A check returns a `Result`: how many things it looked
at, how many broke the rule, and the order ids that broke it, for the evidence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.db import rows
from chaos.vendors import AGGREGATOR, AT_ISHARE, LABELS, VENDORS, vendor_of
from db.store import Row, Store

Ledger = Mapping[str, Any]

MAX_OFFENDERS = 1000  # order ids kept per invariant, for the evidence


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    checked: int
    violations: int
    detail: str
    #: the orders that broke it (first MAX_OFFENDERS), for the evidence
    offenders: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.violations == 0


def _offenders(ids: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))[:MAX_OFFENDERS]


def _parts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{what} {n}" for what, n in counts.items())


def _refs(ledger: Ledger) -> Mapping[str, Any]:
    refs: Mapping[str, Any] = ledger.get("references", {})
    return refs


def _orders_of(store: Store, vendor: str) -> list[Row]:
    return [r for r in rows(store, "orders_final") if vendor_of(r["network"]) == vendor]


def check_terminal(store: Store) -> Result:
    """Every order ends delivered, or dead-lettered (dead_lettered_at) with its notification."""
    orders = rows(store, "orders_final")
    bad = rows(store, "not_terminal")
    by_state: dict[str, int] = {}
    for row in bad:
        state = f"{row['status']}{' flagged-unnotified' if row['flagged'] else ''}"
        by_state[state] = by_state.get(state, 0) + 1
    return Result(
        "every order: success, or dead-lettered + notified",
        checked=len(orders),
        violations=len(bad),
        detail=_parts(by_state) if bad else "all final",
        offenders=_offenders([r["id"] for r in bad]),
    )


def check_deliveries(store: Store, ledger: Ledger, vendor: str) -> Result:
    """The vendor delivered each of its orders at most once; a success order exactly once,
    with the transaction the vendor has; an order that is not a success (failed, refunded,
    dead-lettered) never, unless its outcome is unknown and it waits for a human (still
    processing, dead-lettered): that is not a failure."""
    refs = _refs(ledger)
    twice, missing, not_success, wrong_tx = [], [], [], []
    unknown_delivered = 0
    orders = _orders_of(store, vendor)
    for order in orders:
        entry = refs.get(order["id"], {})
        delivered = int(entry.get("deliveries", 0))
        if delivered > 1:
            twice.append(order["id"])
        if order["status"] == "success":
            if delivered != 1:
                missing.append(order["id"])
            elif order["vendor_transaction_id"] != entry.get("transaction_id"):
                wrong_tx.append(order["id"])
        elif delivered > 0 and order["status"] == "processing" and order["dead_lettered"]:
            unknown_delivered += 1
        elif delivered > 0:
            not_success.append(order["id"])
    counts = {
        "delivered twice+": len(twice),
        "success without one delivery": len(missing),
        "delivered but not success": len(not_success),
        "success with another transaction id": len(wrong_tx),
    }
    bad = twice + missing + not_success + wrong_tx
    total = sum(int(e.get("deliveries", 0)) for e in refs.values())
    unknown = (
        f"; {unknown_delivered} of them outcome unknown, a human's" if unknown_delivered else ""
    )
    return Result(
        f"{LABELS[vendor]}: delivered each order at most once; success <=> one delivery",
        checked=len(orders),
        violations=len(set(bad)),
        detail=f"{total} deliveries; " + _parts({k: v for k, v in counts.items() if v})
        if bad
        else f"{total} deliveries, max 1 per order{unknown}",
        offenders=_offenders(bad),
    )


def check_right_vendor(store: Store, ledgers: Mapping[str, Ledger]) -> Result:
    """An order reaches only the vendor its network routes to: the other vendor has no
    purchase, no status lookup and no delivery of it; and no vendor delivered a reference that
    is no order of ours (an unknown-order message must never buy)."""
    orders = rows(store, "orders_final")
    ids = {r["id"] for r in orders}
    elsewhere, strangers = [], []
    per_vendor: Counter[str] = Counter()
    for order in orders:
        own = vendor_of(order["network"])
        per_vendor[LABELS[own]] += 1
        for vendor, ledger in ledgers.items():
            entry = _refs(ledger).get(order["id"])
            if vendor != own and entry is not None:
                elsewhere.append(order["id"])
    for ledger in ledgers.values():
        strangers += [
            ref for ref, e in _refs(ledger).items() if ref not in ids and int(e["deliveries"])
        ]
    bad = elsewhere + strangers
    counts = {"reached the other vendor": len(elsewhere), "delivered, no order": len(strangers)}
    return Result(
        "each order only at the vendor its network routes to",
        checked=len(orders),
        violations=len(set(bad)),
        detail=_parts({k: v for k, v in counts.items() if v})
        if bad
        else f"{_parts(per_vendor)}; none at the other vendor",
        offenders=_offenders(bad),
    )


def check_no_blind_repurchase(ledger: Ledger, vendor: str) -> Result:
    """No purchase of a reference after an unknown outcome (no answer, a 5xx, an unreadable
    one, one the worker did not wait for) without a readable status lookup between: the
    simulator counts them (Ledger.blind_repurchases). Whether the 409 saved the day or not,
    each one rested on the vendor's idempotency alone."""
    refs = _refs(ledger)
    blind = {ref: int(e.get("blind_repurchases", 0)) for ref, e in refs.items()}
    bad = [ref for ref, n in blind.items() if n > 0]
    purchases = sum(int(e.get("purchase_requests", 0)) for e in refs.values())
    return Result(
        f"{LABELS[vendor]}: no re-purchase after an unknown outcome without a status lookup",
        checked=purchases,
        violations=sum(blind.values()),
        detail=f"{sum(blind.values())} blind re-purchases of {len(bad)} orders"
        if bad
        else f"0 blind re-purchases in {purchases} purchase requests",
        offenders=_offenders(bad),
    )


def check_attempt_log(store: Store, ledgers: Mapping[str, Ledger]) -> Result:
    """Every purchase attempt has its log row: attempt numbers per order are exactly {1..max}
    and cover the attempts the order counts; the vendors saw no more purchase requests than
    there are purchase rows; a success order has a success row."""
    requests: Counter[str] = Counter()
    for ledger in ledgers.values():
        for ref, entry in _refs(ledger).items():
            requests[ref] += int(entry.get("purchase_requests", 0))
    gaps = [r["id"] for r in rows(store, "attempt_gaps")]
    no_success_row = [r["id"] for r in rows(store, "success_without_success_row")]
    logged = {r["id"]: int(r["n"]) for r in rows(store, "purchase_rows_per_order")}
    unlogged = [ref for ref, n in requests.items() if n > logged.get(ref, 0)]
    counts = {
        "attempt numbers not {1..max}": len(gaps),
        "vendor requests without a row": len(unlogged),
        "success without a success row": len(no_success_row),
    }
    bad = gaps + unlogged + no_success_row
    return Result(
        "every purchase attempt logged; attempt numbers {1..max}",
        checked=sum(logged.values()),
        violations=len(set(bad)),
        detail=_parts({k: v for k, v in counts.items() if v})
        if bad
        else f"{sum(logged.values())} purchase rows for {requests.total()} vendor requests",
        offenders=_offenders(bad),
    )


def check_nothing_in_flight(store: Store) -> Result:
    bad = rows(store, "left_in_flight")
    processing = sum(1 for r in bad if r["status"] == "processing")
    claimed = sum(1 for r in bad if r["claimed"])
    pending = sum(1 for r in bad if r["status"] == "pending")
    return Result(
        "no order left pending/processing; no claim left",
        checked=len(rows(store, "orders_final")),
        violations=len(bad),
        detail=f"processing {processing}, pending {pending}, claimed {claimed}" if bad else "none",
        offenders=_offenders([r["id"] for r in bad]),
    )


def check_notifications(store: Store, malformed_sent: int) -> Result:
    """No notification twice: dedupe keys unique, one dead_letter notification per order and
    generation, none for an order that is not dead-lettered, and no more malformed-message
    notifications than malformed messages were sent."""
    keys = rows(store, "duplicate_dedupe_keys")
    doubled = rows(store, "duplicate_dead_letter_notifications")
    lies = rows(store, "dead_letter_notified_but_not_dead")
    kinds = {r["kind"]: int(r["n"]) for r in rows(store, "notification_kinds")}
    malformed = kinds.get("malformed_message", 0)
    too_many_malformed = max(0, malformed - malformed_sent)
    counts = {
        "dedupe key repeated": len(keys),
        "dead_letter notified twice": len(doubled),
        "dead_letter for an order not dead-lettered": len(lies),
        "malformed notifications beyond messages sent": too_many_malformed,
    }
    violations = len(keys) + len(doubled) + len(lies) + too_many_malformed
    return Result(
        "no admin notification duplicated",
        checked=sum(kinds.values()),
        violations=violations,
        detail=_parts({k: v for k, v in counts.items() if v})
        if violations
        else ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "no notifications",
        offenders=_offenders([r["id"] for r in doubled] + [r["id"] for r in lies]),
    )


def check_callbacks(answers: Mapping[str, int], failures: Sequence[tuple[str, str, str]]) -> Result:
    """Every signed vendor callback, replays included, answered 200 or 202 (never a 5xx),
    whatever the breaker and the rate limiter were doing (restarts of PostgreSQL and Redis
    excused: chaos.callbacks)."""
    sent = sum(answers.values())
    return Result(
        "signed vendor callbacks (replays too) answered 200/202, never 5xx",
        checked=sent,
        violations=len(failures),
        detail=", ".join(f"{k} {v}" for k, v in sorted(answers.items())) or "none sent",
        offenders=_offenders([order_id for order_id, _, _ in failures]),
    )


def check_quiet_outage(
    store: Store, ledgers: Mapping[str, Ledger], order_ids: Sequence[str]
) -> Result:
    """The orders that arrived one at a time during an outage of both vendors (no other
    fault, no other traffic) are all delivered once their vendor is back, with the one
    attempt that delivered them: the outage spent none (principle 4, at any volume)."""
    wanted = set(order_ids)
    orders = [r for r in rows(store, "orders_final") if r["id"] in wanted]

    def deliveries(order: Row) -> int:
        entry = _refs(ledgers[vendor_of(order["network"])]).get(order["id"], {})
        return int(entry.get("deliveries", 0))

    bad = [
        r["id"]
        for r in orders
        if r["status"] != "success"
        or r["dead_lettered"]
        or int(r["attempts"] or 0) > 1
        or deliveries(r) != 1
    ]
    vendors = Counter(LABELS[vendor_of(r["network"])] for r in orders)
    attempts = Counter(int(r["attempts"] or 0) for r in orders)
    checks = sum(int(r["status_checks"] or 0) for r in orders)
    states = Counter(
        f"{r['status']}{' dead-lettered' if r['dead_lettered'] else ''}" for r in orders
    )
    return Result(
        "quiet outage: every order delivered, no attempt spent on the outage",
        checked=len(orders),
        violations=len(bad) + len(wanted) - len(orders),
        detail=f"{_parts(vendors)}: {_parts(states)}; attempts "
        + ", ".join(f"{n}x{a}" for a, n in sorted(attempts.items()))
        + f"; status checks spent {checks}",
        offenders=_offenders(bad),
    )


def check_aggregator_outage(store: Store, outages: Sequence[tuple[float, float]]) -> Result:
    """While the aggregator was down (chaos.faults Kind.AGGREGATOR_OUTAGE), AT-iShare's orders
    kept being delivered: its outage holds up no order of the other vendor."""
    starved, parts = 0, []
    for began, ended in outages:
        counts = {
            r["network"]: int(r["n"])
            for r in rows(store, "deliveries_between", {"began": began, "ended": ended})
        }
        by_vendor = Counter(dict.fromkeys(VENDORS, 0))
        for network, n in counts.items():
            by_vendor[vendor_of(network)] += n
        at_ishare, aggregator = by_vendor[AT_ISHARE], by_vendor[AGGREGATOR]
        starved += at_ishare == 0
        parts.append(f"{ended - began:.0f} s: AT-iShare {at_ishare}, aggregator {aggregator}")
    return Result(
        "aggregator down: AT-iShare's orders delivered all the same",
        checked=len(outages),
        violations=starved,
        detail="deliveries while it was down, " + "; ".join(parts) if parts else "no outage",
    )


def check_all(
    store: Store,
    ledgers: Mapping[str, Ledger],
    *,
    malformed_sent: int,
    callback_answers: Mapping[str, int] | None = None,
    callback_failures: Sequence[tuple[str, str, str]] = (),
    quiet_orders: Sequence[str] = (),
    aggregator_outages: Sequence[tuple[float, float]] = (),
    sms_ledger: Ledger | None = None,
    platform_ledger: Ledger | None = None,
) -> list[Result]:
    """Every invariant; `ledgers` has every vendor of chaos.vendors.VENDORS; `sms_ledger` and
    `platform_ledger` are the notify: process's parties' (their checks run when given)."""
    results = [check_terminal(store)]
    results += [check_deliveries(store, ledgers[vendor], vendor) for vendor in VENDORS]
    results.append(check_right_vendor(store, ledgers))
    results += [check_no_blind_repurchase(ledgers[vendor], vendor) for vendor in VENDORS]
    results += [
        check_attempt_log(store, ledgers),
        check_nothing_in_flight(store),
        check_notifications(store, malformed_sent),
    ]
    if callback_answers is not None:
        results.append(check_callbacks(callback_answers, callback_failures))
    if aggregator_outages:
        results.append(check_aggregator_outage(store, aggregator_outages))
    if quiet_orders:
        results.append(check_quiet_outage(store, ledgers, quiet_orders))
    results.append(check_outcome_outbox(store))
    if sms_ledger is not None:
        results.append(check_sms_provider(store, sms_ledger))
    if platform_ledger is not None:
        results.append(check_platform_events(store, platform_ledger))
    return results


# -- the customers' SMS and the platform's events (the notify: process) ----------------------


def _expected_outbox(order: Row) -> tuple[int, int, str]:
    """(delivered-kind SMS, failed-kind SMS) the order's current generation must have, and its
    state's name: a delivery one of each delivered, a final failure one of each failed, an
    outcome unknown (processing, in a human's queue) or anything not final none."""
    if order["status"] == "success":
        return 1, 0, "success"
    if order["status"] == "failed" and order["dead_lettered"]:
        return 0, 1, "failed"
    if order["status"] == "processing" and order["dead_lettered"]:
        return 0, 0, "outcome unknown"
    return 0, 0, "not final"


def check_outcome_outbox(store: Store) -> Result:
    """Every final outcome wrote its SMS row and its event, and nothing else did: a success one
    delivered-kind SMS (sent or skipped) and one order.fulfilled per generation; a final
    failure (dead-lettered, failed) one failed-kind SMS and one order.failed; an order whose
    outcome is unknown (processing, dead-lettered) neither; no row of an order we do not have."""
    orders = rows(store, "outbox_per_order")
    wrong: Counter[str] = Counter()
    bad: list[str] = []
    states: Counter[str] = Counter()
    for order in orders:
        delivered, failed, state = _expected_outbox(order)
        states[state] += 1
        got = (
            int(order["sms_delivered"]),
            int(order["sms_failed"]),
            int(order["ev_fulfilled"]),
            int(order["ev_failed"]),
        )
        if got != (delivered, failed, delivered, failed):
            wrong[f"{state}: sms {got[0]}+{got[1]}, events {got[2]}+{got[3]}"] += 1
            bad.append(order["id"])
        elif int(order["all_sms"]) != delivered + failed or int(order["all_events"]) != (
            delivered + failed
        ):  # no admin action in a chaos run: no other generation may have rows
            wrong[f"{state}: rows of another generation"] += 1
            bad.append(order["id"])
    strangers = rows(store, "outbox_strangers")
    if strangers:
        wrong["rows of no order"] += len(strangers)
    return Result(
        "one SMS + one event per final outcome (success, failed); none for outcome unknown",
        checked=len(orders),
        violations=len(bad) + len(strangers),
        detail=_parts(dict(wrong.most_common(6))) if wrong else _parts(states),
        offenders=_offenders(bad + [r["id"] for r in strangers]),
    )


def check_sms_provider(store: Store, ledger: Ledger) -> Result:
    """At the SMS provider (GET /sms/_sim/ledger), which does not deduplicate: no
    ClientReference sent twice, none sent again after an unread answer without a lookup
    between; every reference it has is one of our rows, not skipped; every row it delivered or
    could not deliver is there; no row left queued or sent (its report unread)."""
    sms = rows(store, "sms_rows")
    ours = {r["client_reference"]: r for r in sms}
    refs = _refs(ledger)
    totals: Mapping[str, Any] = ledger.get("totals", {})
    twice = list(totals.get("duplicate_sends", []))
    blind = list(totals.get("blind_resends", []))
    strangers = [ref for ref in refs if ref not in ours or ours[ref]["status"] == "skipped"]
    unseen = [
        r["client_reference"]
        for r in sms
        if r["status"] in ("delivered", "undeliverable") and r["client_reference"] not in refs
    ]
    open_rows = [r["client_reference"] for r in sms if r["status"] in ("queued", "sent")]
    counts = {
        "sent twice+": len(twice),
        "blind resends": len(blind),
        "at the provider, not ours (or skipped)": len(strangers),
        "delivered, not at the provider": len(unseen),
        "left queued/sent": len(open_rows),
    }
    bad = twice + blind + strangers + unseen + open_rows
    statuses = Counter(str(r["status"]) for r in sms)
    return Result(
        "SMS provider: each SMS sent at most once, never resent blind; all settled",
        checked=len(sms),
        violations=len(set(bad)),
        detail=_parts({k: v for k, v in counts.items() if v})
        if bad
        else f"{totals.get('sends', 0)} sends, {totals.get('lookups', 0)} lookups; "
        + _parts(dict(sorted(statuses.items()))),
        offenders=_offenders([ref.split(":", 1)[0] for ref in bad]),
    )


def check_platform_events(store: Store, ledger: Ledger) -> Result:
    """At the platform's receiver (GET /platform/_sim/ledger): every event row delivered, the
    receiver has exactly those event_ids (each with its order and type), none with two bodies,
    none of an order out of order, no bad signature and no malformed body."""
    events = rows(store, "event_rows")
    received: Mapping[str, Any] = ledger.get("events", {})
    totals: Mapping[str, Any] = ledger.get("totals", {})
    ours = {r["event_id"]: r for r in events}
    undelivered = [r["id"] for r in events if r["status"] != "delivered"]
    missing = [ours[e]["id"] for e in ours.keys() - received.keys()]
    strangers = [str(received[e].get("order_id")) for e in received.keys() - ours.keys()]
    mismatched = [
        r["id"]
        for e, r in ours.items()
        if e in received
        and (received[e].get("order_id"), received[e].get("type")) != (r["id"], r["type"])
    ]
    conflicting = list(totals.get("conflicting_bodies", []))
    out_of_order = list(totals.get("out_of_order", []))
    bad_signatures = int(totals.get("bad_signatures", 0))
    malformed = int(totals.get("malformed", 0))
    counts = {
        "not delivered": len(undelivered),
        "delivered, not at the platform": len(missing),
        "at the platform, not ours": len(strangers),
        "another order or type": len(mismatched),
        "conflicting bodies": len(conflicting),
        "out of order": len(out_of_order),
        "bad signatures": bad_signatures,
        "malformed": malformed,
    }
    violations = (
        len(set(undelivered + missing + strangers + mismatched))
        + len(conflicting)
        + len(out_of_order)
        + bad_signatures
        + malformed
    )
    types = Counter(str(r["type"]) for r in events)
    return Result(
        "platform: every event delivered, exactly our event_ids, in order, one body, signed",
        checked=len(events),
        violations=violations,
        detail=_parts({k: v for k, v in counts.items() if v})
        if violations
        else f"{totals.get('received', 0)} POSTs of {totals.get('distinct', 0)} events "
        f"({totals.get('redeliveries', 0)} redeliveries); " + _parts(dict(sorted(types.items()))),
        offenders=_offenders(undelivered + missing + strangers + mismatched + out_of_order),
    )
