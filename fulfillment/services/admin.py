"""Admin use cases: list, search, stats, detail, retry, trigger, dismiss, export, the
three decisions on an outcome unknown (recheck, mark delivered, mark not delivered), and the
outboxes' failures: list the failed customer SMS and platform events, retry or resend them.

The web process and the CLI call these, so both follow the same rules and leave the same
audit rows. No SQL here (db/admin_store.py), no HTTP (fulfillment/web/).
"""

from __future__ import annotations

import base64
import builtins
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from db.admin_store import VIEW_FILTERS, AdminStore, Keyset, OrderFilter
from db.outbox_store import OutboxStore
from db.store import Row, Store
from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.domain.errors import (
    ActionRefused,
    InvalidOrder,
    MalformedMessage,
    OrderNotFound,
    UnsupportedNetwork,
)
from fulfillment.domain.networks import DEFAULT_ROUTES, VENDOR_NAMES, number_note
from fulfillment.domain.order import parse_order_id
from fulfillment.domain.phone import mask_phone, mask_phones_in_text
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.admin")

MAX_PAGE = 500
MAX_REASON = 500
MAX_TRANSACTION_ID = 128
#: the largest SMS or event id (a bigserial)
MAX_ROW_ID = 2**63 - 1


def search_key(typed: str) -> str | None:
    """The msisdn a person meant, from any way of typing a Ghana number (ghana_msisdn in SQL)."""
    digits = re.sub(r"\D", "", typed or "")
    if not digits:
        return None
    if re.fullmatch(r"233\d{9}", digits):
        return digits
    if re.fullmatch(r"00233\d{9}", digits):
        return digits[2:]
    if re.fullmatch(r"0\d{9}", digits):
        return "233" + digits[1:]
    if re.fullmatch(r"\d{9}", digits):
        return "233" + digits
    return digits


def encode_cursor(row: Row) -> str:
    raw = f"{row['created_at'].isoformat()}|{row['id']}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Keyset:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, order_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        return Keyset(datetime.fromisoformat(created), parse_order_id(order_id))
    except (ValueError, UnicodeDecodeError, MalformedMessage) as exc:
        raise InvalidOrder("cursor", "not a cursor this server gave out") from exc


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ActionResult:
    order_id: str  # '' for an SMS or event id that names no row
    ok: bool
    code: str
    message: str
    #: the SMS or event acted on (an outbox action); None for an action on an order
    row_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.row_id is not None:
            return {
                "id": self.row_id,
                "orderId": self.order_id or None,
                "ok": self.ok,
                "code": self.code,
                "message": self.message,
            }
        return {"orderId": self.order_id, "ok": self.ok, "code": self.code, "message": self.message}


class Decision(StrEnum):
    """A person's decision on an outcome unknown; the value is its audit action."""

    RECHECK = "recheck"
    MARK_DELIVERED = "mark_delivered"
    MARK_NOT_DELIVERED = "mark_not_delivered"

    @property
    def slug(self) -> str:
        """Its name in URLs and CLI commands: mark-not-delivered."""
        return self.value.replace("_", "-")

    @property
    def words(self) -> str:
        """Its name in messages: mark not delivered."""
        return self.value.replace("_", " ")


@dataclass(frozen=True, slots=True)
class _Settled:
    """What a decision that went through answers, logs and audits."""

    code: str
    message: str
    event: str
    details: tuple[tuple[str, str], ...]  # (audit detail, column of the updated row)


_SETTLED = {
    Decision.RECHECK: _Settled(
        "RECHECK_SCHEDULED",
        "the vendor will be asked again for this reference",
        "admin.rechecked",
        (
            ("generation", "fulfillment_generation"),
            ("in_flight_attempt", "fulfillment_in_flight_attempt"),
        ),
    ),
    Decision.MARK_DELIVERED: _Settled(
        "MARKED_DELIVERED",
        "the order is recorded as delivered",
        "admin.marked_delivered",
        (("transaction_id", "vendor_transaction_id"),),
    ),
    Decision.MARK_NOT_DELIVERED: _Settled(
        "MARKED_NOT_DELIVERED",
        "the order is failed: retry it or dismiss it",
        "admin.marked_not_delivered",
        (("in_flight_attempt", "fulfillment_in_flight_attempt"),),
    ),
}


def _network(network: str | None) -> str | None:
    """A network filter: None or '' for every network; UnsupportedNetwork for one the
    platform does not sell."""
    if not network:
        return None
    if network not in KNOWN_NETWORKS:
        raise UnsupportedNetwork(f"unknown network {network[:40]!r}")
    return network


@dataclass
class AdminService:
    store: Store
    #: enqueue fulfill_order(order_id) after N seconds
    publish: Callable[[str, float], None]
    max_attempts: int
    #: network -> the vendor connection that serves it (NETWORK_VENDORS over the defaults)
    routes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ROUTES))
    #: after an outcome an admin recorded committed: its SMS and event sent now (unset: the
    #: reconciler's outbox sweep sends them)
    announce: Callable[[str], None] | None = None
    admin: AdminStore = field(init=False)
    outbox: OutboxStore = field(init=False)

    def __post_init__(self) -> None:
        self.admin = AdminStore(self.store)
        self.outbox = OutboxStore(self.store)

    # -- reading -----------------------------------------------------------------------

    def make_filter(
        self,
        *,
        view: str = "all",
        phone: str | None = None,
        network: str | None = None,
        since: datetime | None = None,
    ) -> OrderFilter:
        if view not in VIEW_FILTERS:
            raise InvalidOrder(
                "status", f"unknown status filter {view!r}; one of {', '.join(VIEW_FILTERS)}"
            )
        msisdn = search_key(phone) if phone else None
        if phone and not msisdn:
            raise InvalidOrder("phone", "type a phone number to search for (digits)")
        return OrderFilter(
            view=view,
            msisdn=msisdn,
            network=_network(network),
            since=since,
        )

    def list(self, flt: OrderFilter, *, cursor: str | None = None, limit: int = 50) -> Page:
        limit = max(1, min(limit, MAX_PAGE))
        after = decode_cursor(cursor) if cursor else None
        rows = self.admin.list_orders(flt, after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([view_row(r) for r in rows], encode_cursor(rows[-1]) if more and rows else None)

    def stats(self, network: str | None = None) -> dict[str, Any]:
        """The dashboard's counts, of every network or of one."""
        row = dict(self.admin.stats(_network(network)))
        done = row["success"] + row["dead_lettered"]
        row["success_rate"] = round(row["success"] / done, 4) if done else None
        median = row.pop("median_fulfil_s_24h")
        row["median_fulfil_s_24h"] = float(median) if median is not None else None
        return {k: (int(v) if isinstance(v, int) else v) for k, v in row.items()}

    def detail(self, order_id: str) -> dict[str, Any]:
        oid = _order_id(order_id)
        row = self.store.order_row(oid)
        if row is None:
            raise OrderNotFound(oid)
        attempts = [
            {**log, "phone_number": mask_phone(log.get("phone_number"))}
            for log in self.store.order_logs(oid)
        ]
        vendor = self.routes.get(str(row.get("network")))
        return {
            "order": view_row(row),
            "vendor": VENDOR_NAMES.get(vendor, vendor) if vendor else None,
            "issued_on": number_note(row.get("network"), row.get("phone_number")),
            "attempts": attempts,
            "audit": self.admin.audit(oid),
            "notifications": self.admin.notifications(oid),
            "sms": [outbox_view(r, SMS_FIELDS) for r in self.outbox.order_sms(oid)],
            "events": [outbox_view(r, EVENT_FIELDS) for r in self.outbox.order_events(oid)],
        }

    def order(self, order_id: str) -> dict[str, Any]:
        """One order as admins see it (view_row)."""
        oid = _order_id(order_id)
        row = self.store.order_row(oid)
        if row is None:
            raise OrderNotFound(oid)
        return view_row(row)

    def latest(self, order_id: str) -> dict[str, Any]:
        """The platform API's view: the order's state and its latest attempt."""
        oid = _order_id(order_id)
        row = self.store.order_row(oid)
        if row is None or row["fulfillment_status"] is None:
            raise OrderNotFound(oid)
        last = self.admin.latest_log(oid)
        return {
            "orderId": oid,
            "reference": oid,
            "status": view_status(row),
            "attempts": row["fulfillment_attempts"],
            "lastErrorCode": row["last_error_code"],
            "lastErrorMessage": row["last_error_message"],
            "nextRetryAt": _iso(row["next_attempt_at"]),
            "deadLetterReason": row["dead_letter_reason"],
            "fulfilledAt": _iso(row["fulfilled_at"]),
            "transactionId": row["vendor_transaction_id"],
            "latestAttempt": None
            if last is None
            else {
                "attemptNumber": last["attempt_number"],
                "action": last["action"],
                "status": last["status"],
                "errorCode": last["error_code"],
                "errorMessage": last["error_message"],
                "httpStatus": last["http_status"],
                "latencyMs": last["latency_ms"],
                "retryAfter": _iso(last["retry_after"]),
                "createdAt": _iso(last["created_at"]),
            },
        }

    # -- acting ------------------------------------------------------------------------

    def retry(
        self, order_ids: Sequence[str], *, actor: str, reason: str, platform: bool = False
    ) -> builtins.list[ActionResult]:
        """One more attempt for each failed or dead-lettered order; others are refused.

        platform: the purchase platform asks (the API_TOKEN API). For it a dead letter resolved
        by hand (dismissed: perhaps refunded) is final, refused as ORDER_RESOLVED; an admin
        (ADMIN_TOKEN, the dashboard, the CLI) may still reopen one."""
        why = _reason(reason)
        return [
            self._retry_one(oid, actor=actor, reason=why, allow_resolved=not platform)
            for oid in order_ids
        ]

    def retry_filtered(
        self, flt: OrderFilter, *, actor: str, reason: str
    ) -> builtins.list[ActionResult]:
        """Retry every failed or open dead-lettered order the filter matches, however many.

        Dismissed dead letters are never retried in bulk (they were resolved by hand, e.g.
        refunded); retry one by id if that is really meant."""
        why = _reason(reason)
        results = []
        wanted = {
            "all": ("failed", "open_dead_letters"),
            "failed": ("failed",),
            "dead_lettered": ("open_dead_letters",),
            "open_dead_letters": ("open_dead_letters",),
        }.get(flt.view, ())
        for view in wanted:
            scoped = OrderFilter(
                view=view,
                msisdn=flt.msisdn,
                network=flt.network,
                since=flt.since,
            )
            ids = [str(r["id"]) for r in self.admin.iter_orders(scoped)]
            results += [self._retry_one(oid, actor=actor, reason=why) for oid in ids]
        return results

    def _retry_one(
        self, order_id: str, *, actor: str, reason: str, allow_resolved: bool = True
    ) -> ActionResult:
        try:
            oid = _order_id(order_id)
        except InvalidOrder as exc:
            return ActionResult(str(order_id)[:64], False, "INVALID_ORDER_ID", str(exc))
        row = self.admin.retry(oid, max_attempts=self.max_attempts, allow_resolved=allow_resolved)
        if row is None:
            return self._refusal(oid, "retry")
        self.admin.record(
            actor=actor,
            action="retry",
            order_id=oid,
            reason=reason,
            details={
                "generation": row["fulfillment_generation"],
                "extra_attempts": row["fulfillment_extra_attempts"],
            },
        )
        self.publish(oid, 0.0)
        log.info("admin.retried", order_id=oid, actor=actor, attempt=row["fulfillment_attempts"])
        return ActionResult(oid, True, "RETRY_SCHEDULED", "one more attempt granted")

    def trigger(self, order_id: str, *, actor: str) -> ActionResult:
        oid = _order_id(order_id)
        if self.admin.trigger(oid) is None:
            return self._refusal(oid, "trigger")
        self.admin.record(actor=actor, action="trigger", order_id=oid, reason=None)
        self.publish(oid, 0.0)
        return ActionResult(oid, True, "PUBLISHED", "fulfillment triggered")

    def dismiss(
        self, order_ids: Sequence[str], *, actor: str, reason: str
    ) -> builtins.list[ActionResult]:
        why = _reason(reason)
        results = []
        for order_id in order_ids:
            try:
                oid = _order_id(order_id)
            except InvalidOrder as exc:
                results.append(
                    ActionResult(str(order_id)[:64], False, "INVALID_ORDER_ID", str(exc))
                )
                continue
            if self.admin.dismiss(oid, actor=actor, reason=why) is None:
                results.append(self._refusal(oid, "dismiss"))
                continue
            self.admin.record(actor=actor, action="dismiss", order_id=oid, reason=why)
            self._announce(oid)
            results.append(ActionResult(oid, True, "DISMISSED", "dead letter resolved by hand"))
        return results

    def _announce(self, oid: str) -> None:
        if self.announce is not None:
            self.announce(oid)

    def _refusal(self, oid: str, action: str) -> ActionResult:
        row = self.store.order_row(oid)
        if row is None:
            return ActionResult(oid, False, "ORDER_NOT_FOUND", f"no order with id {oid}")
        status = view_status(row)
        messages = {
            "success": ("ORDER_SUCCEEDED", "the order was delivered; nothing to do"),
            "processing": ("ORDER_IN_FLIGHT", "a worker or the vendor is on it; wait"),
            "pending": ("ORDER_PENDING", "the order has not been attempted; use trigger"),
            "failed": ("ORDER_RETRYING", "the order is failed and waiting for its retry"),
            "dead_lettered": ("ORDER_DEAD_LETTERED", "the order is dead-lettered; use retry"),
            "outcome_unknown": (
                "ORDER_OUTCOME_UNKNOWN",
                "the vendor may have delivered it; recheck, mark delivered or mark not delivered",
            ),
            "unmanaged": ("ORDER_NOT_MANAGED", "the order predates or is outside the fleet"),
        }
        if row["network"] != "at-ishare":
            code, text = "UNSUPPORTED_NETWORK", f"{row['network']} orders are not ours"
        elif row["claim_token"] is not None:
            code, text = messages["processing"]
        elif status == "outcome_unknown":
            code, text = messages["outcome_unknown"]
        elif (
            action == "retry"
            and status == "dead_lettered"
            and row["dead_letter_dismissed_at"] is not None
        ):
            # a failed, unclaimed order refused by admin_retry: the platform's, resolved
            code, text = (
                "ORDER_RESOLVED",
                "the dead letter was resolved by hand (perhaps refunded); only an admin can "
                "reopen it",
            )
        elif action == "dismiss" and row["dead_letter_dismissed_at"] is not None:
            code, text = "ALREADY_DISMISSED", "the dead letter was already resolved by hand"
        elif action == "dismiss" and status != "dead_lettered":
            code, text = "NOT_DEAD_LETTERED", f"the order is {status}, not an open dead letter"
        else:
            code, text = messages.get(status, ("ACTION_REFUSED", status))
        return ActionResult(oid, False, code, f"cannot {action}: {text}")

    # -- outcome unknown: a person decides ------------------------------------------------

    def decide(
        self,
        order_id: str,
        decision: Decision,
        *,
        actor: str,
        reason: str,
        transaction_id: str | None = None,
    ) -> ActionResult:
        """Carry out and audit a person's decision on an outcome unknown; refused (nothing
        changed) when the order is not one or a worker or callback holds it.

        - recheck: the order goes back to a worker, due now, with fresh status check and
          deferral budgets; its attempt stays in flight, so the worker looks the reference up
          before any purchase.
        - mark delivered: a person confirmed the delivery (the vendor's dashboard, the
          customer): success, with the vendor's transaction id when given.
        - mark not delivered: a person confirmed nothing was delivered: failed, an open dead
          letter from which retry or dismiss work as on any other. The attempt stays marked in
          flight, so a retry still asks the vendor about the reference before buying."""
        oid, why = _order_id(order_id), _reason(reason)
        tx = _transaction_id(transaction_id)
        if tx is not None and decision is not Decision.MARK_DELIVERED:
            raise InvalidOrder("transactionId", "only mark delivered takes a transaction id")
        flagged = f"not delivered, confirmed by hand: {why}"[:MAX_REASON]
        row = self.admin.settle_review(
            oid,
            decision=decision.value,
            reason=flagged if decision is Decision.MARK_NOT_DELIVERED else None,
            transaction_id=tx,
        )
        if row is None:
            raise self._not_outcome_unknown(oid, decision)
        settled = _SETTLED[decision]
        self.admin.record(
            actor=actor,
            action=decision.value,
            order_id=oid,
            reason=why,
            details={detail: row[column] for detail, column in settled.details},
        )
        if decision is Decision.RECHECK:
            self.publish(oid, 0.0)
        else:
            self._announce(oid)
        log.info(settled.event, order_id=oid, actor=actor, attempt=row["fulfillment_attempts"])
        return ActionResult(oid, True, settled.code, settled.message)

    def _not_outcome_unknown(self, oid: str, decision: Decision) -> ActionRefused | OrderNotFound:
        """Why a decision on an outcome unknown was refused (it changed nothing)."""
        row = self.store.order_row(oid)
        if row is None:
            return OrderNotFound(oid)
        action, status = decision.words, view_status(row)
        if status == "outcome_unknown" and row["network"] != "at-ishare":
            return ActionRefused(
                "UNSUPPORTED_NETWORK", f"cannot {action}: {row['network']} orders are not ours"
            )
        if status == "outcome_unknown":  # in that state, so a live claim refused it
            return ActionRefused(
                "ORDER_IN_FLIGHT",
                f"cannot {action}: a worker or a vendor callback holds the order; try again",
            )
        return ActionRefused(
            "ORDER_NOT_OUTCOME_UNKNOWN",
            f"cannot {action}: the order is {status}, not outcome unknown",
        )

    # -- the outboxes: the customer's SMS and the platform's events --------------------

    def failed_sms(self, limit: int = 50) -> builtins.list[dict[str, Any]]:
        """SMS given up on or failed at the provider, newest first (outbox_view: never the
        number): what an admin may retry."""
        rows = self.outbox.failed_sms(max(1, min(limit, MAX_PAGE)))
        return [outbox_view(r, SMS_FIELDS) for r in rows]

    def failed_events(self, limit: int = 50) -> builtins.list[dict[str, Any]]:
        """Outcome events given up on, newest first: what an admin may resend."""
        rows = self.outbox.failed_events(max(1, min(limit, MAX_PAGE)))
        return [outbox_view(r, EVENT_FIELDS) for r in rows]

    def outbox_counts(self) -> dict[str, dict[str, int]]:
        """{"sms" | "event": {status: n}}, every kind or type summed."""
        counts: dict[str, dict[str, int]] = {"sms": {}, "event": {}}
        for (box, _kind, status), n in self.outbox.counts().items():
            by_status = counts.setdefault(box, {})
            by_status[status] = by_status.get(status, 0) + n
        return counts

    def retry_sms(
        self, sms_ids: Sequence[int | str], *, actor: str, reason: str
    ) -> builtins.list[ActionResult]:
        """Queue each failed SMS again, now, audited (sms_retry); any other is refused and left
        as it was. One the provider took gets a new ClientReference (to the provider a new
        SMS); one it never took keeps its own, so an unanswered send is looked up first."""
        why, ids = _reason(reason), _row_ids(sms_ids)
        results = []
        for sms_id in ids:
            row = self.outbox.retry_sms(sms_id)
            if row is None:
                results.append(_outbox_refusal("sms", sms_id, self.outbox.sms_state(sms_id)))
                continue
            oid = str(row["order_id"])
            details = {"sms_id": sms_id, "client_reference": row["client_reference"]}
            self.admin.record(
                actor=actor, action="sms_retry", order_id=oid, reason=why, details=details
            )
            self._announce(oid)
            log.info("admin.sms_retried", order_id=oid, sms_id=sms_id, actor=actor)
            results.append(
                ActionResult(oid, True, "SMS_QUEUED", "the SMS is queued to send again", sms_id)
            )
        return results

    def resend_events(
        self, event_ids: Sequence[int | str], *, actor: str, reason: str
    ) -> builtins.list[ActionResult]:
        """Make each failed event pending again, now, audited (event_resend); the platform gets
        the same event_id and body (it deduplicates). Any other is refused, left as it was."""
        why, ids = _reason(reason), _row_ids(event_ids)
        results = []
        for row_id in ids:
            row = self.outbox.resend_event(row_id)
            state = self.outbox.event_state(row_id)
            if row is None:
                results.append(_outbox_refusal("event", row_id, state))
                continue
            oid = str(row["order_id"])
            details: dict[str, Any] = {"event_row": row_id}
            if state is not None:
                details |= {"event_id": str(state["event_id"]), "type": state["type"]}
            self.admin.record(
                actor=actor, action="event_resend", order_id=oid, reason=why, details=details
            )
            self._announce(oid)
            log.info(
                "admin.event_resent",
                order_id=oid,
                event_row=row_id,
                event_id=details.get("event_id"),
                actor=actor,
            )
            results.append(
                ActionResult(oid, True, "EVENT_QUEUED", "the event is queued to send again", row_id)
            )
        return results

    # -- export --------------------------------------------------------------------------

    def export_rows(self, flt: OrderFilter) -> Iterator[builtins.list[str]]:
        """CSV rows (header first) of every matching order, streamed."""
        yield list(EXPORT_COLUMNS)
        for row in self.admin.iter_orders(flt):
            view = view_row(row)
            yield [_cell(view.get(col)) for col in EXPORT_COLUMNS]


EXPORT_COLUMNS = (
    "id",
    "created_at",
    "phone",
    "network",
    "size_gb",
    "package_name",
    "status",
    "attempts",
    "last_error_code",
    "last_error_message",
    "next_retry_at",
    "dead_letter_reason",
    "dead_lettered_at",
    "fulfilled_at",
    "vendor_transaction_id",
)


def view_status(row: Row) -> str:
    if row.get("fulfillment_status") is None:
        return "unmanaged"
    if row.get("fulfillment_status") == "processing" and row.get("dead_letter_reason"):
        return "outcome_unknown"  # the vendor may have delivered: a human decides, no refund
    if row.get("dead_lettered_at") is not None:
        return "dead_lettered"
    return str(row["fulfillment_status"])


def view_row(row: Row) -> dict[str, Any]:
    """An order as admins see it: masked phone, one status, ISO-8601 UTC times."""
    return {
        "id": str(row["id"]),
        "created_at": _iso(row["created_at"]),
        "phone": mask_phone(row.get("phone_number")),
        "network": row.get("network"),
        "size_gb": None if row.get("size_gb") is None else str(row["size_gb"]),
        "package_name": row.get("package_name"),
        "status": view_status(row),
        "attempts": row.get("fulfillment_attempts"),
        "last_error_code": row.get("last_error_code"),
        "last_error_message": row.get("last_error_message"),
        "next_retry_at": _iso(row.get("next_attempt_at")),
        "dead_letter_reason": row.get("dead_letter_reason"),
        "dead_lettered_at": _iso(row.get("dead_lettered_at")),
        "dismissed_at": _iso(row.get("dead_letter_dismissed_at")),
        "fulfilled_at": _iso(row.get("fulfilled_at")),
        "vendor_transaction_id": row.get("vendor_transaction_id"),
    }


#: what admins see of an SMS or an event (outbox_view): never the phone number; the keys a
#: query's row has (an order's detail has more than a list of failures)
SMS_FIELDS = (
    "id",
    "order_id",
    "generation",
    "kind",
    "status",
    "provider_status",
    "provider_message_id",
    "client_reference",
    "attempts",
    "status_checks",
    "in_flight",
    "content",
    "last_error",
    "skip_reason",
    "sent_at",
    "next_attempt_at",
    "created_at",
    "updated_at",
)
EVENT_FIELDS = (
    "id",
    "event_id",
    "order_id",
    "generation",
    "type",
    "status",
    "attempts",
    "last_http_status",
    "last_error",
    "delivered_at",
    "next_attempt_at",
    "created_at",
    "updated_at",
)
_FREE_TEXT = frozenset({"content", "last_error", "skip_reason"})


def outbox_view(row: Row, fields: Sequence[str]) -> dict[str, Any]:
    """An SMS or event row as admins see it: only `fields` (never phone_number), phone-like
    text masked in its text and errors, ISO-8601 UTC times, ids as text."""
    out: dict[str, Any] = {}
    for key in fields:
        if key not in row:
            continue
        value = row[key]
        if isinstance(value, datetime):
            value = _iso(value)
        elif isinstance(value, UUID):
            value = str(value)
        elif key in _FREE_TEXT and value is not None:
            value = mask_phones_in_text(str(value))
        out[key] = value
    return out


_NOT_FAILED = {
    "queued": "it is queued to be sent",
    "sent": "the provider took it; its report is being read",
    "delivered": "it was delivered",
    "undeliverable": "the provider reported the number cannot take it",
    "skipped": "it was skipped on purpose (see its skip reason)",
    "pending": "it is being sent",
}


def _outbox_refusal(box: str, row_id: int, state: Row | None) -> ActionResult:
    """Why a retry (SMS) or resend (event) changed nothing: no such row, or not failed."""
    noun, verb, code = ("SMS", "retry", "SMS") if box == "sms" else ("event", "resend", "EVENT")
    if state is None:
        return ActionResult("", False, f"{code}_NOT_FOUND", f"no {noun} with id {row_id}", row_id)
    status = str(state["status"])
    if status == "delivered" and box == "event":
        why = "the platform acknowledged it"
    else:
        why = _NOT_FAILED.get(status, f"it is {status}")
    return ActionResult(
        str(state["order_id"]),
        False,
        f"{code}_NOT_FAILED",
        f"cannot {verb}: {why}; only a failed {noun} is sent again",
        row_id,
    )


def _row_ids(values: Sequence[int | str]) -> list[int]:
    """Distinct SMS or event ids in the order given; InvalidOrder, before anything is done,
    for one that is not a whole number from 1 to MAX_ROW_ID."""
    ids = []
    for value in values:
        text = str(value).strip()
        if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,19}", text):
            raise InvalidOrder("ids", f"{text[:40]!r} is not an id (a whole number)")
        if not 1 <= int(text) <= MAX_ROW_ID:
            raise InvalidOrder("ids", f"{text} is not an id (1 to {MAX_ROW_ID})")
        ids.append(int(text))
    return list(dict.fromkeys(ids))


def _cell(value: object) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _iso(value: object) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return None


def _order_id(value: str) -> str:
    try:
        return parse_order_id(value)
    except MalformedMessage as exc:
        raise InvalidOrder("orderId", str(exc)) from exc


def _transaction_id(value: str | None) -> str | None:
    text = (value or "").strip()
    if len(text) > MAX_TRANSACTION_ID:
        raise InvalidOrder("transactionId", f"at most {MAX_TRANSACTION_ID} characters")
    if "\x00" in text:
        raise InvalidOrder("transactionId", "must not contain NUL characters")
    return text or None


def _reason(reason: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise InvalidOrder("reason", "say why (it goes into the audit trail)")
    return text[:MAX_REASON]


__all__ = ["ActionRefused", "ActionResult", "AdminService", "Decision", "Page", "search_key"]
