"""The outboxes' rows (customer_sms, platform_events), by name: the notifier's claims and
results, the reconciler's overdue sweep, and what admins list and retry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db.store import Row, Store, clean_text


@dataclass(frozen=True, slots=True)
class SmsRow:
    """One claimed SMS, with what its text needs from the order."""

    id: int
    order_id: str
    generation: int
    kind: str  # delivered | failed
    client_reference: str
    network: str | None
    phone_number: str | None
    refund_advised: bool
    status: str  # queued | sent
    content: str | None
    provider_message_id: str | None
    attempts: int
    status_checks: int
    in_flight: bool
    package_name: str | None
    size_gb: object


@dataclass(frozen=True, slots=True)
class EventRow:
    """One claimed outcome event: its body is POSTed as stored."""

    id: int
    event_id: str
    order_id: str
    generation: int
    type: str
    body: str
    attempts: int


def _sms(row: Row) -> SmsRow:
    return SmsRow(
        id=int(row["id"]),
        order_id=str(row["order_id"]),
        generation=int(row["generation"]),
        kind=str(row["kind"]),
        client_reference=str(row["client_reference"]),
        network=row["network"],
        phone_number=row["phone_number"],
        refund_advised=bool(row["refund_advised"]),
        status=str(row["status"]),
        content=row["content"],
        provider_message_id=row["provider_message_id"],
        attempts=int(row["attempts"]),
        status_checks=int(row["status_checks"]),
        in_flight=bool(row["in_flight"]),
        package_name=row["package_name"],
        size_gb=row["size_gb"],
    )


def _error(text: str | None) -> str | None:
    return None if text is None else clean_text(text)[:500]


class OutboxStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- customer SMS ----------------------------------------------------------------------

    def claim_sms(self, sms_id: int, token: str, *, ttl_s: float) -> SmsRow | None:
        row = self.store.fetch_one("claim_sms", {"id": sms_id, "token": token, "ttl_s": ttl_s})
        return None if row is None else _sms(row)

    def sms_sending(self, sms_id: int, token: str, content: str) -> str | None:
        """Mark the send in flight (before the POST); the text to send, None if the claim is
        lost."""
        row = self.store.fetch_one(
            "sms_sending", {"id": sms_id, "token": token, "content": content}
        )
        return None if row is None else str(row["content"])

    def sms_sent(
        self, sms_id: int, token: str, *, message_id: str, provider_status: str, delay_s: float
    ) -> bool:
        params = {
            "id": sms_id,
            "token": token,
            "message_id": message_id,
            "provider_status": provider_status,
            "delay_s": delay_s,
        }
        return self.store.execute_named("sms_sent", params) == 1

    def sms_later(
        self,
        sms_id: int,
        token: str,
        *,
        delay_s: float,
        in_flight: bool,
        error: str | None,
        checked: bool = False,
        provider_status: str | None = None,
    ) -> bool:
        params = {
            "id": sms_id,
            "token": token,
            "delay_s": delay_s,
            "in_flight": in_flight,
            "error": _error(error),
            "checked": 1 if checked else 0,
            "provider_status": provider_status,
        }
        return self.store.execute_named("sms_later", params) == 1

    def sms_final(
        self,
        sms_id: int,
        token: str,
        status: str,
        *,
        provider_status: str | None = None,
        error: str | None = None,
        skip_reason: str | None = None,
        content: str | None = None,
    ) -> bool:
        params = {
            "id": sms_id,
            "token": token,
            "status": status,
            "provider_status": provider_status,
            "error": _error(error),
            "skip_reason": skip_reason,
            "content": content,
        }
        return self.store.execute_named("sms_final", params) == 1

    def due_sms(self, *, grace_s: float, limit: int = 500) -> list[int]:
        rows = self.store.fetch_all("due_sms", {"grace_s": grace_s, "limit": limit})
        return [int(r["id"]) for r in rows]

    def order_sms(self, order_id: str) -> list[Row]:
        return self.store.fetch_all("order_sms", {"order_id": order_id})

    def failed_sms(self, limit: int = 50) -> list[Row]:
        return self.store.fetch_all("failed_sms", {"limit": limit})

    def retry_sms(self, sms_id: int) -> Row | None:
        """Queue a failed SMS again (an admin's retry); None if it is not failed."""
        return self.store.fetch_one("retry_sms", {"id": sms_id})

    # -- platform events -------------------------------------------------------------------

    def claim_event(self, row_id: int, token: str, *, ttl_s: float) -> EventRow | None:
        row = self.store.fetch_one("claim_event", {"id": row_id, "token": token, "ttl_s": ttl_s})
        if row is None:
            return None
        return EventRow(
            id=int(row["id"]),
            event_id=str(row["event_id"]),
            order_id=str(row["order_id"]),
            generation=int(row["generation"]),
            type=str(row["type"]),
            body=str(row["body"]),
            attempts=int(row["attempts"]),
        )

    def event_blocked_by(self, row_id: int) -> Row | None:
        return self.store.fetch_one("event_blocked_by", {"id": row_id})

    def event_result(
        self,
        row_id: int,
        token: str,
        status: str,
        *,
        http_status: int | None,
        error: str | None,
        delay_s: float = 0.0,
        counted: bool = True,
    ) -> bool:
        """`counted`: the try was a POST (False: nothing was sent, e.g. no URL set)."""
        params = {
            "counted": 1 if counted else 0,
            "id": row_id,
            "token": token,
            "status": status,
            "http_status": http_status,
            "error": _error(error),
            "delay_s": delay_s,
        }
        return self.store.fetch_one("event_result", params) is not None

    def event_next_of_order(self, row_id: int) -> int | None:
        row = self.store.fetch_one("event_next_of_order", {"id": row_id})
        return None if row is None else int(row["id"])

    def due_events(self, *, grace_s: float, limit: int = 500) -> list[int]:
        rows = self.store.fetch_all("due_events", {"grace_s": grace_s, "limit": limit})
        return [int(r["id"]) for r in rows]

    def order_events(self, order_id: str) -> list[Row]:
        return self.store.fetch_all("order_events", {"order_id": order_id})

    def failed_events(self, limit: int = 50) -> list[Row]:
        return self.store.fetch_all("failed_events", {"limit": limit})

    def resend_event(self, row_id: int) -> Row | None:
        """Make an event given up on pending again (an admin's resend); None if not failed."""
        return self.store.fetch_one("resend_event", {"id": row_id})

    # -- both ------------------------------------------------------------------------------

    def order_outbox_due(self, order_id: str) -> list[tuple[str, int]]:
        """(box, id) of an order's rows due now: 'sms' or 'event'."""
        rows = self.store.fetch_all("order_outbox_due", {"order_id": order_id})
        return [(str(r["box"]), int(r["id"])) for r in rows]

    def counts(self) -> dict[tuple[str, str, str], int]:
        """{(box, kind or type, status): n}."""
        rows: list[dict[str, Any]] = self.store.fetch_all("outbox_counts")
        return {(str(r["box"]), str(r["kind"]), str(r["status"])): int(r["n"]) for r in rows}

    # -- the admin's outbox actions (fulfillment/services/admin.py) ------------------------

    def sms_state(self, sms_id: int) -> Row | None:
        """id, order_id, kind, status of one SMS; None if there is none."""
        return self.store.fetch_one("sms_state", {"id": sms_id})

    def event_state(self, row_id: int) -> Row | None:
        """id, event_id, order_id, type, status of one event; None if there is none."""
        return self.store.fetch_one("event_state", {"id": row_id})
