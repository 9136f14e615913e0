"""Raise an admin notification: store it once (by dedupe key), POST it, log it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from db.store import Store
from fulfillment.notify.admin_webhook import deliver
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.notifications")


@dataclass(frozen=True, slots=True)
class Notifier:
    store: Store
    webhook_url: str | None
    attempts: int = 3
    timeout_s: float = 5.0

    def raise_once(
        self,
        *,
        kind: str,
        message: str,
        dedupe_key: str,
        order_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> bool:
        """Store and send a notification unless one with this key exists. True when new."""
        details = details or {}
        notification_id = self.store.insert_notification(
            kind=kind, order_id=order_id, message=message, details=details, dedupe_key=dedupe_key
        )
        if notification_id is None:
            log.info("notification.duplicate_skipped", kind=kind, order_id=order_id)
            return False
        self.send(notification_id, kind=kind, order_id=order_id, message=message, details=details)
        return True

    def send(
        self,
        notification_id: int,
        *,
        kind: str,
        order_id: str | None,
        message: str,
        details: dict[str, Any],
        created_at: datetime | None = None,
    ) -> str:
        """POST one stored notification and record how that went; returns the webhook state."""
        payload = {
            "id": notification_id,
            "kind": kind,
            "order_id": order_id,
            "message": message,
            "details": details,
            "created_at": (created_at or datetime.now(UTC)).isoformat(),
        }
        result = deliver(
            self.webhook_url, payload, attempts=self.attempts, timeout_s=self.timeout_s
        )
        self.store.record_webhook_delivery(
            notification_id,
            state=result.state,
            attempts=result.attempts,
            last_error=result.last_error,
        )
        event = "notification.raised" if result.state != "failed" else "notification.webhook_failed"
        log.warning(
            event,
            kind=kind,
            order_id=order_id,
            notification_id=notification_id,
            webhook=result.state,
            webhook_attempts=result.attempts,
            webhook_error=result.last_error,
            message=message,
        )
        return result.state
