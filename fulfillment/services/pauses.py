"""The runtime pause: admins and SREs pause and resume the whole fleet or one network while
it runs (the dashboard, the admin API, the CLI all call this).

A pause is a row of fleet_pauses; claim_order reads it at every claim, so it holds on every
host at the next claim, without a restart. Nothing is spent while paused: a worker leaves the
order as it is (Outcome.PAUSED) and the reconciler re-enqueues nothing that would be bought.
Resume deletes the row and re-enqueues the scope's waiting orders, oldest due first, up to
MAX_REQUEUE; the reconciler picks up the rest after its grace period. Every pause and resume
is audited (admin_audit) and logged. FULFILLMENT_ENABLED stays the boot-time default: the fleet
is paused when either says so. The scope rules are in fulfillment/domain/pause.py.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from db.admin_store import AdminStore
from db.pause_store import PauseRow, PauseStore
from db.store import Store
from fulfillment.domain.pause import (
    FLEET,
    actor_name,
    holding,
    pause_reason,
    scope_label,
    scope_of,
)
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.admin")

#: Orders one resume re-enqueues; the reconciler re-enqueues any more after its grace period.
MAX_REQUEUE = 10_000


@dataclass(frozen=True, slots=True)
class PauseView:
    scope: str  # "*" or a network code
    label: str  # "the whole fleet" / "network mtn" (words for people)
    reason: str
    paused_by: str
    paused_at: datetime
    age_s: float
    #: pause() found the scope paused already: this is that first pause, kept as it was
    already_paused: bool = False

    @property
    def message(self) -> str:
        """What the pause means, in words for people."""
        if self.already_paused:
            return (
                f"{self.label} was already paused by {self.paused_by} at "
                f"{_iso(self.paused_at)}; that pause is kept"
            )
        return f"{self.label} is paused: workers buy none of its orders until it is resumed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "label": self.label,
            "reason": self.reason,
            "paused_by": self.paused_by,
            "paused_at": _iso(self.paused_at),
            "age_s": round(self.age_s, 3),
            "already_paused": self.already_paused,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class ResumeResult:
    scope: str
    was_paused: bool
    requeued: int  # orders re-enqueued oldest first
    #: pauses still in force that hold some of the scope's orders (a network paused on its
    #: own after the whole fleet's resume; the whole fleet after a network's)
    still_held_by: tuple[str, ...] = ()
    #: the resume re-enqueued as many as it may: the reconciler re-enqueues the rest
    more_waiting: bool = False

    #: waiting orders whose message could not be sent (Redis away): the reconciler's next
    #: pass sends them
    not_sent: int = 0

    @property
    def label(self) -> str:
        return scope_label(self.scope)

    @property
    def message(self) -> str:
        """What happened, in words for people."""
        if not self.was_paused:
            text = f"{self.label} was not paused; nothing re-enqueued"
        else:
            text = (
                f"{self.label} resumed; {self.requeued} waiting order(s) re-enqueued, oldest first"
            )
            if self.not_sent:
                text += (
                    f"; {self.not_sent} could not be sent (Redis did not answer): the "
                    "reconciler sends them at its next pass"
                )
            if self.more_waiting:
                text += (
                    f" (at most {MAX_REQUEUE} per resume: the reconciler re-enqueues the rest "
                    "after its grace period)"
                )
        if self.still_held_by:
            held = ", ".join(scope_label(s) for s in self.still_held_by)
            text += f"; still paused: {held} (its orders keep waiting)"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "label": self.label,
            "was_paused": self.was_paused,
            "requeued": self.requeued,
            "not_sent": self.not_sent,
            "more_waiting": self.more_waiting,
            "still_paused": list(self.still_held_by),
            "message": self.message,
        }


@dataclass
class PauseService:
    store: Store
    #: enqueue fulfill_order(order_id) after N seconds; False: it could not be sent
    publish: Callable[[str, float], bool | None]
    requeue_limit: int = MAX_REQUEUE
    pauses: PauseStore = field(init=False)
    admin: AdminStore = field(init=False)

    def __post_init__(self) -> None:
        self.pauses = PauseStore(self.store)
        self.admin = AdminStore(self.store)

    def list(self) -> builtins.list[PauseView]:
        """Every pause in force, the whole fleet's first."""
        return [_view(row) for row in self.pauses.list()]

    def pause(self, *, network: str | None, reason: str, actor: str) -> PauseView:
        """Pause the whole fleet (network None) or one network. A scope paused already keeps
        its first pause (who, why, since when): the answer says so (already_paused)."""
        scope, why, who = scope_of(network), pause_reason(reason), actor_name(actor)
        row, created = self.pauses.insert(scope, reason=why, paused_by=who)
        view = _view(row, already_paused=not created)
        self.admin.record(
            actor=who,
            action="pause",
            order_id=None,
            reason=why,
            details={
                "scope": scope,
                "already_paused": not created,
                "paused_by": row.paused_by,
                "paused_at": _iso(row.paused_at),
            },
        )
        log.warning(
            "admin.paused",
            scope=scope,
            actor=who,
            reason=why,
            already_paused=not created,
            paused_by=row.paused_by,
        )
        return view

    def resume(self, *, network: str | None, actor: str) -> ResumeResult:
        """Resume the whole fleet (network None) or one network, then re-enqueue its waiting
        orders that no other pause still holds, oldest due first (at most requeue_limit)."""
        scope, who = scope_of(network), actor_name(actor)
        removed = self.pauses.delete(scope)
        ids: builtins.list[str] = []
        sent: builtins.list[str] = []
        try:
            if removed is not None:
                ids = self.pauses.requeue_waiting(
                    None if scope == FLEET else scope, limit=self.requeue_limit
                )
                for oid in ids:
                    if self.publish(oid, 0.0) is not False:
                        sent.append(oid)
        finally:
            # Audited even when publishing failed part of the way. What was stamped enqueued
            # and not sent loses its stamp, so the reconciler's next pass sends it.
            done = set(sent)
            unsent = [oid for oid in ids if oid not in done]
            self.pauses.unmark_enqueued(unsent)
            held = holding(scope, [p.scope for p in self.pauses.list()])
            result = ResumeResult(
                scope=scope,
                was_paused=removed is not None,
                requeued=len(sent),
                still_held_by=held,
                more_waiting=len(ids) >= self.requeue_limit,
                not_sent=len(unsent),
            )
            self._record_resume(result, removed, who, complete=not unsent)
        return result

    def _record_resume(
        self, result: ResumeResult, removed: PauseRow | None, actor: str, *, complete: bool
    ) -> None:
        details: dict[str, Any] = {
            "scope": result.scope,
            "was_paused": result.was_paused,
            "requeued": result.requeued,
            "more_waiting": result.more_waiting,
            "still_paused": list(result.still_held_by),
        }
        if removed is not None:
            details |= {
                "paused_by": removed.paused_by,
                "paused_reason": removed.reason,
                "paused_for_s": round(removed.age_s, 1),
            }
        if not complete:
            details["requeue_interrupted"] = True
        self.admin.record(actor=actor, action="resume", order_id=None, reason=None, details=details)
        log.warning(
            "admin.resumed",
            scope=result.scope,
            actor=actor,
            was_paused=result.was_paused,
            requeued=result.requeued,
            more_waiting=result.more_waiting,
            still_paused=list(result.still_held_by),
            paused_for_s=None if removed is None else round(removed.age_s, 1),
            complete=complete,
        )


def _view(row: PauseRow, *, already_paused: bool = False) -> PauseView:
    return PauseView(
        scope=row.scope,
        label=scope_label(row.scope),
        reason=row.reason,
        paused_by=row.paused_by,
        paused_at=row.paused_at,
        age_s=row.age_s,
        already_paused=already_paused,
    )


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


__all__ = ["MAX_REQUEUE", "PauseService", "PauseView", "ResumeResult"]
