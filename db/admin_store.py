"""The admin surface's reads and actions (dashboard, platform API, CLI), by name.

list_orders (one page, or with limit NULL every row, for the CSV export) is a named query
completed with named filter fragments from queries.sql: fixed text chosen from a closed set,
every value a parameter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from db.queries import q
from db.store import Row, Store, translate_errors

#: The dashboard's status filter -> the fragment that implements it (None: no filter).
VIEW_FILTERS: dict[str, str | None] = {
    "all": None,
    "pending": "filter_pending",
    "processing": "filter_processing",
    "outcome_unknown": "filter_outcome_unknown",
    "success": "filter_success",
    "failed": "filter_failed",
    "dead_lettered": "filter_dead_lettered",
    "open_dead_letters": "filter_open_dead_letters",
}


@dataclass(frozen=True, slots=True)
class OrderFilter:
    view: str = "all"
    msisdn: str | None = None  # digits with country code, e.g. 233241234567
    network: str | None = None
    since: datetime | None = None

    def __post_init__(self) -> None:
        if self.view not in VIEW_FILTERS:
            raise ValueError(f"unknown status filter {self.view!r}")


@dataclass(frozen=True, slots=True)
class Keyset:
    created_at: datetime
    order_id: str


class AdminStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _compose(
        self, flt: OrderFilter, after: Keyset | None, limit: int | None
    ) -> tuple[sql.Composed, dict[str, Any]]:
        """list_orders (a page of `limit` rows, or with no limit every row: LIMIT NULL),
        its {filters} slot filled with the fragments of `flt` and the keyset after `after`;
        and every parameter they take."""
        base = "list_orders"
        names: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        view = VIEW_FILTERS[flt.view]
        if view:
            names.append(view)
        if flt.msisdn:
            names.append("filter_phone")
            params["msisdn"] = flt.msisdn
        if flt.network:
            names.append("filter_network")
            params["network"] = flt.network
        if flt.since:
            names.append("filter_since")
            params["since"] = flt.since
        if after:
            names.append("filter_after")
            params["after_created"] = after.created_at
            params["after_id"] = after.order_id
        filters = sql.SQL("\n").join(sql.SQL(q(n)) for n in names)
        query = sql.SQL(q(base)).format(filters=filters)
        return query, params

    def list_orders(self, flt: OrderFilter, *, after: Keyset | None, limit: int) -> list[Row]:
        query, params = self._compose(flt, after, limit)
        with translate_errors(), self.store.pool.connection() as conn:
            rows: list[Row] = conn.execute(query, params).fetchall()
            return rows

    def iter_orders(self, flt: OrderFilter, *, batch: int = 2000) -> Iterator[Row]:
        """Every matching order, streamed through a server-side cursor (constant memory)."""
        query, params = self._compose(flt, None, None)
        with (
            translate_errors(),
            self.store.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(name="export_orders") as cur,
        ):
            cur.itersize = batch
            cur.execute(query, params)
            yield from cur

    def stats(self, network: str | None = None) -> Row:
        row = self.store.fetch_one("order_stats", {"network": network})
        assert row is not None
        return row

    def audit(self, order_id: str) -> list[Row]:
        return self.store.fetch_all("order_audit", {"order_id": order_id})

    def notifications(self, order_id: str) -> list[Row]:
        return self.store.fetch_all("order_notifications", {"order_id": order_id})

    def latest_log(self, order_id: str) -> Row | None:
        return self.store.fetch_one("latest_log", {"order_id": order_id})

    def record(
        self,
        *,
        actor: str,
        action: str,
        order_id: str | None,
        reason: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.store.fetch_one(
            "insert_audit",
            {
                "actor": actor,
                "action": action,
                "order_id": order_id,
                "reason": reason,
                "details": Jsonb(details or {}),
            },
        )

    def retry(self, order_id: str, *, max_attempts: int, allow_resolved: bool) -> Row | None:
        return self.store.fetch_one(
            "admin_retry",
            {"order_id": order_id, "max_attempts": max_attempts, "allow_resolved": allow_resolved},
        )

    def trigger(self, order_id: str) -> Row | None:
        return self.store.fetch_one("admin_trigger", {"order_id": order_id})

    def dismiss(self, order_id: str, *, actor: str, reason: str | None = None) -> Row | None:
        """Resolve a dead letter by hand; the platform's order.resolved carries `reason`."""
        return self.store.fetch_one(
            "admin_dismiss", {"order_id": order_id, "actor": actor, "reason": reason}
        )

    def settle_review(
        self,
        order_id: str,
        *,
        decision: str,
        reason: str | None = None,
        transaction_id: str | None = None,
    ) -> Row | None:
        """A person's decision on an outcome unknown: recheck, mark_delivered (with the vendor's
        transaction id, if known) or mark_not_delivered (with the dead letter's reason). No row
        unless the order was in that state and unclaimed."""
        return self.store.fetch_one(
            "admin_settle_review",
            {
                "order_id": order_id,
                "decision": decision,
                "reason": reason,
                "transaction_id": transaction_id,
            },
        )

    def outcome_unknown_count(self) -> int:
        row = self.store.fetch_one("outcome_unknown_count", {})
        return int(row["n"]) if row else 0

    def orders(self, order_ids: Sequence[str]) -> list[Row]:
        return [r for oid in order_ids if (r := self.store.order_row(oid)) is not None]
