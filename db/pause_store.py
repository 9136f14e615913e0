"""The runtime pause's rows (fleet_pauses) and the resume's re-enqueue, by name.

The worker's side of the pause is in claim_order itself (and Store.paused_scope on its rare
path); this is what admins and the metrics read and write.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from db.store import Row, Store
from fulfillment.domain.errors import StoreError


@dataclass(frozen=True, slots=True)
class PauseRow:
    scope: str
    reason: str
    paused_by: str
    paused_at: datetime
    #: seconds since paused_at, by the database's clock
    age_s: float


def _pause(row: Row) -> PauseRow:
    return PauseRow(
        scope=str(row["scope"]),
        reason=str(row["reason"]),
        paused_by=str(row["paused_by"]),
        paused_at=row["paused_at"],
        age_s=max(float(row.get("age_s") or 0.0), 0.0),
    )


class PauseStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self) -> list[PauseRow]:
        """Every pause in force, the whole fleet's first."""
        return [_pause(r) for r in self.store.fetch_all("list_pauses")]

    def insert(self, scope: str, *, reason: str, paused_by: str) -> tuple[PauseRow, bool]:
        """Pause `scope`: the pause in force after it, and whether it is this one (False: the
        scope was paused already, and that first pause is kept)."""
        params = {"scope": scope, "reason": reason, "paused_by": paused_by}
        for _ in range(3):
            row = self.store.fetch_one("insert_pause", params)
            if row is not None:
                return _pause(row), bool(row["created"])
            # a concurrent pause committed after this statement's snapshot began, or a
            # concurrent resume removed the one in the way: try again
        raise StoreError(f"pausing {scope!r} raced with other pauses and resumes; try again")

    def delete(self, scope: str) -> PauseRow | None:
        """Resume `scope`: the pause that was in force, or None when there was none."""
        row = self.store.fetch_one("delete_pause", {"scope": scope})
        return None if row is None else _pause(row)

    def requeue_waiting(self, network: str | None, *, limit: int) -> builtins.list[str]:
        """Stamp as enqueued, and return oldest due first, at most `limit` orders of `network`
        (None: every network) that wait for a worker and that no pause holds any more."""
        rows = self.store.fetch_all("requeue_waiting_orders", {"network": network, "limit": limit})
        return [str(r["id"]) for r in rows]

    def unmark_enqueued(self, order_ids: Sequence[str]) -> None:
        """Their messages were not sent: the reconciler's next pass takes them."""
        if order_ids:
            self.store.fetch_all("unmark_enqueued", {"order_ids": list(order_ids)})
