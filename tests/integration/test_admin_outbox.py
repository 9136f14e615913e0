"""The outboxes' failures on the admin side, against real PostgreSQL (and, for the admin API,
the web process over real HTTP): list the failed customer SMS and platform events, retry or
resend them (audited with the actor; any other row refused and left as it was), and an
order's SMS and events in its detail, never with the phone number.

Rows are made by driving real outcomes (a delivery, a dead letter), then failed with SQL as
the notifier leaves a row it gave up on."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from db.outbox_store import OutboxStore
from db.store import Store
from fulfillment.dev.simulator.server import Simulator
from fulfillment.domain.errors import InvalidOrder
from fulfillment.services.admin import AdminService
from fulfillment.services.deadletter import handle_dead_letter
from fulfillment.services.delivery import fulfil
from fulfillment.services.notifier import Notifier
from fulfillment.services.outbox import OutboxPublisher
from fulfillment.services.ports import FulfilDeps, Outcome

from .conftest import Sent
from .test_fulfil import script
from .test_web_api import assert_error, sql

pytestmark = pytest.mark.integration

NewOrder = Callable[..., str]
PHONE = "+233241234567"
DIGITS = "241234567"  # what a phone number leaks
MISSING = 999_999_999
#: what the notifier leaves when the provider took an SMS and reported it failed (an error
#: message may quote a number: the admin never sees it unmasked)
FAILED_AT_PROVIDER = (
    "status = 'failed', attempts = 1, provider_message_id = 'msg-1', provider_status = 'Failed',"
    " content = 'Sorry, your 2GB AT-iShare bundle for 024*****67 could not be delivered.',"
    " last_error = 'provider reported Failed for 0241234567', next_attempt_at = NULL,"
    " in_flight = false, updated_at = now()"
)
#: ...and when it gave up before the provider took one
FAILED_UNSENT = (
    "status = 'failed', attempts = 4, provider_message_id = NULL, in_flight = true,"
    " last_error = 'timeout (4 tries)', next_attempt_at = NULL, updated_at = now()"
)
FAILED_EVENT = (
    "status = 'failed', attempts = 8, last_http_status = 503,"
    " last_error = 'HTTP 503 from the platform', next_attempt_at = NULL, updated_at = now()"
)


# -- outcomes, driven for real; failures, set with SQL ----------------------------------------


@pytest.fixture
def outbox(store: Store) -> OutboxStore:
    """Empty outboxes (the run's store fixture empties the orders' tables only)."""
    sql(store, "TRUNCATE customer_sms, platform_events")
    return OutboxStore(store)


@pytest.fixture
def delivered(new_order: NewOrder, make_deps: Callable[..., FulfilDeps]) -> Callable[[], str]:
    """An order delivered by the fleet: its SMS queued, its order.fulfilled event pending."""

    def make() -> str:
        oid = new_order(phone=PHONE)
        assert fulfil(oid, make_deps()) is Outcome.SUCCESS
        return oid

    return make


@pytest.fixture
def dead_lettered(
    store: Store,
    sim: Simulator,
    new_order: NewOrder,
    make_deps: Callable[..., FulfilDeps],
    sent: Sent,
) -> Callable[[], str]:
    """An order the vendor refused and the dead-letter consumer flagged: its failed SMS queued,
    its order.failed event pending."""

    def make() -> str:
        oid = new_order(phone=PHONE)
        script(sim, oid, ["invalid_phone"])
        assert fulfil(oid, make_deps()) is Outcome.DEAD_LETTERED
        notice = next(n for n in sent.dead_letters if n.order_id == oid)
        assert handle_dead_letter(notice, store, Notifier(store=store, webhook_url=None))
        return oid

    return make


def fail_sms(store: Store, order_id: str, how: str = FAILED_AT_PROVIDER) -> int:
    (row,) = sql(store, f"UPDATE customer_sms SET {how} WHERE order_id = %s RETURNING id", order_id)
    return int(row["id"])


def fail_event(store: Store, order_id: str) -> int:
    (row,) = sql(
        store,
        f"UPDATE platform_events SET {FAILED_EVENT} WHERE order_id = %s RETURNING id",
        order_id,
    )
    return int(row["id"])


def sms_row(store: Store, sms_id: int) -> dict[str, Any]:
    (row,) = sql(store, "SELECT * FROM customer_sms WHERE id = %s", sms_id)
    return row


def event_row(store: Store, row_id: int) -> dict[str, Any]:
    (row,) = sql(store, "SELECT * FROM platform_events WHERE id = %s", row_id)
    return row


def audit(store: Store) -> list[tuple[str, str, str, str | None, dict[str, Any]]]:
    rows = sql(store, "SELECT * FROM admin_audit ORDER BY id")
    return [(r["actor"], r["action"], str(r["order_id"]), r["reason"], r["details"]) for r in rows]


class Announced:
    """The notifier's two queues as the admin's announce fills them: (box, row id)."""

    def __init__(self, outbox: OutboxStore) -> None:
        self.sent: list[tuple[str, int]] = []
        self.publisher = OutboxPublisher(
            outbox,
            sms=lambda i, _d: self.sent.append(("sms", i)),
            event=lambda i, _d: self.sent.append(("event", i)),
        )


@pytest.fixture
def announced(outbox: OutboxStore) -> Announced:
    return Announced(outbox)


@pytest.fixture
def service(store: Store, announced: Announced) -> AdminService:
    """The admin service as bootstrap wires it: announce enqueues the order's due rows."""
    return AdminService(
        store=store,
        publish=lambda *_: None,
        max_attempts=3,
        announce=announced.publisher.announce,
    )


# -- the service ----------------------------------------------------------------------------------


def test_the_lists_hold_only_failed_rows_and_never_a_phone_number(
    service: AdminService,
    store: Store,
    delivered: Callable[[], str],
    dead_lettered: Callable[[], str],
) -> None:
    fine, failing = delivered(), dead_lettered()
    sms_id, event_id = fail_sms(store, failing), fail_event(store, failing)
    (sms,) = service.failed_sms()
    assert (sms["id"], sms["order_id"], sms["kind"], sms["status"]) == (
        sms_id,
        failing,
        "failed",
        "failed",
    )
    assert sms["provider_status"] == "Failed" and sms["attempts"] == 1
    assert sms["last_error"] == "provider reported Failed for 024*****67"
    assert sms["updated_at"].endswith("Z")
    (event,) = service.failed_events()
    assert (event["id"], event["order_id"], event["type"], event["last_http_status"]) == (
        event_id,
        failing,
        "order.failed",
        503,
    )
    assert event["event_id"] == str(event_row(store, event_id)["event_id"])
    assert service.outbox_counts() == {
        "sms": {"queued": 1, "failed": 1},
        "event": {"pending": 1, "failed": 1},
    }
    assert fine not in repr(service.failed_sms()) + repr(service.failed_events())
    assert "phone_number" not in sms and DIGITS not in repr(sms)


@pytest.mark.parametrize(
    ("how", "reference"),
    [(FAILED_AT_PROVIDER, "{oid}:0:failed:r1"), (FAILED_UNSENT, "{oid}:0:failed")],
    ids=["failed-at-the-provider", "given-up-unsent"],
)
def test_a_retried_sms_is_queued_now_audited_and_announced(
    service: AdminService,
    store: Store,
    announced: Announced,
    dead_lettered: Callable[[], str],
    how: str,
    reference: str,
) -> None:
    oid = dead_lettered()
    sms_id, event_id = fail_sms(store, oid, how), fail_event(store, oid)
    (result,) = service.retry_sms([sms_id, str(sms_id)], actor="ama", reason="credit topped up")
    assert (result.ok, result.code, result.order_id, result.row_id) == (
        True,
        "SMS_QUEUED",
        oid,
        sms_id,
    )
    assert result.as_dict() == {
        "id": sms_id,
        "orderId": oid,
        "ok": True,
        "code": "SMS_QUEUED",
        "message": "the SMS is queued to send again",
    }
    row = sms_row(store, sms_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("queued", 0, None)
    assert row["provider_message_id"] is None and row["next_attempt_at"] is not None
    # the provider does not deduplicate: one it took and failed is a new SMS to it; one it
    # may never have seen keeps its reference (the next try looks it up first)
    assert row["client_reference"] == reference.format(oid=oid)
    assert announced.sent == [("sms", sms_id)]  # its event is still failed: not sent
    assert event_row(store, event_id)["status"] == "failed"
    assert audit(store) == [
        (
            "ama",
            "sms_retry",
            oid,
            "credit topped up",
            {"sms_id": sms_id, "client_reference": reference.format(oid=oid)},
        )
    ]
    # once queued it is not failed: a second retry is refused and changes nothing
    (again,) = service.retry_sms([sms_id], actor="ama", reason="again")
    assert (again.ok, again.code, again.order_id) == (False, "SMS_NOT_FAILED", oid)
    assert "queued" in again.message
    assert sms_row(store, sms_id) == row and len(audit(store)) == 1


def test_a_resent_event_is_pending_now_with_the_same_body_audited_and_announced(
    service: AdminService,
    store: Store,
    announced: Announced,
    dead_lettered: Callable[[], str],
) -> None:
    oid = dead_lettered()
    fail_sms(store, oid)
    row_id = fail_event(store, oid)
    before = event_row(store, row_id)
    (result,) = service.resend_events([row_id], actor="kofi", reason="platform back up")
    assert (result.ok, result.code, result.order_id, result.row_id) == (
        True,
        "EVENT_QUEUED",
        oid,
        row_id,
    )
    after = event_row(store, row_id)
    assert (after["status"], after["attempts"], after["last_error"]) == ("pending", 0, None)
    assert (after["event_id"], after["body"]) == (before["event_id"], before["body"])
    assert json.loads(after["body"])["type"] == "order.failed"
    assert announced.sent == [("event", row_id)]
    assert audit(store) == [
        (
            "kofi",
            "event_resend",
            oid,
            "platform back up",
            {"event_row": row_id, "event_id": str(before["event_id"]), "type": "order.failed"},
        )
    ]
    (again,) = service.resend_events([row_id], actor="kofi", reason="again")
    assert (again.ok, again.code) == (False, "EVENT_NOT_FAILED")
    assert "being sent" in again.message
    assert event_row(store, row_id) == after and len(audit(store)) == 1


def test_unknown_and_unfailed_rows_are_refused_and_malformed_ids_change_nothing(
    service: AdminService,
    store: Store,
    announced: Announced,
    delivered: Callable[[], str],
) -> None:
    oid = delivered()
    (queued,) = [int(r["id"]) for r in sql(store, "SELECT id FROM customer_sms")]
    (pending,) = [int(r["id"]) for r in sql(store, "SELECT id FROM platform_events")]
    sql(store, "UPDATE platform_events SET status = 'delivered' WHERE id = %s", pending)
    results = service.retry_sms([MISSING, queued], actor="ama", reason="x")
    assert [(r.row_id, r.ok, r.code, r.order_id) for r in results] == [
        (MISSING, False, "SMS_NOT_FOUND", ""),
        (queued, False, "SMS_NOT_FAILED", oid),
    ]
    assert results[0].as_dict()["orderId"] is None
    assert results[0].message == f"no SMS with id {MISSING}"
    results = service.resend_events([pending, MISSING], actor="ama", reason="x")
    assert [(r.ok, r.code) for r in results] == [
        (False, "EVENT_NOT_FAILED"),
        (False, "EVENT_NOT_FOUND"),
    ]
    assert "the platform acknowledged it" in results[0].message
    sms_id = queued
    sql(store, f"UPDATE customer_sms SET {FAILED_AT_PROVIDER} WHERE id = %s", sms_id)
    for bad in ("abc", "0", "-1", str(2**63), "1.5", "", "\u0661"):
        with pytest.raises(InvalidOrder):
            service.retry_sms([sms_id, bad], actor="ama", reason="x")
    with pytest.raises(InvalidOrder, match="say why"):
        service.retry_sms([sms_id], actor="ama", reason="  ")
    with pytest.raises(InvalidOrder, match="say why"):
        service.resend_events([pending], actor="ama", reason="")
    assert sms_row(store, sms_id)["status"] == "failed"  # nothing was done
    assert audit(store) == [] and announced.sent == []


def test_the_detail_has_the_orders_sms_and_events_without_the_number(
    service: AdminService,
    store: Store,
    dead_lettered: Callable[[], str],
) -> None:
    oid = dead_lettered()
    fail_sms(store, oid)
    detail = service.detail(oid)
    (sms,) = detail["sms"]
    assert (sms["kind"], sms["status"], sms["generation"], sms["provider_status"]) == (
        "failed",
        "failed",
        0,
        "Failed",
    )
    assert (
        sms["content"] == "Sorry, your 2GB AT-iShare bundle for 024*****67 could not be delivered."
    )
    assert sms["client_reference"] == f"{oid}:0:failed" and sms["created_at"].endswith("Z")
    (event,) = detail["events"]
    assert (event["type"], event["status"], event["attempts"]) == ("order.failed", "pending", 0)
    assert "phone_number" not in sms and "body" not in event
    assert DIGITS not in repr(detail["sms"]) + repr(detail["events"])


# -- the admin API --------------------------------------------------------------------------------


def test_api_lists_failed_sms_and_events_and_retries_and_resends_them(
    admin: httpx.Client,
    store: Store,
    outbox: OutboxStore,
    dead_lettered: Callable[[], str],
) -> None:
    oid = dead_lettered()
    sms_id, event_id = fail_sms(store, oid), fail_event(store, oid)

    answer = admin.get("/api/admin/sms", params={"status": "failed"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True and body["count"] == 1
    (sms,) = body["sms"]
    assert (sms["id"], sms["order_id"], sms["kind"], sms["provider_status"]) == (
        sms_id,
        oid,
        "failed",
        "Failed",
    )
    assert DIGITS not in answer.text and "phone" not in answer.text
    answer = admin.get("/api/admin/events")
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 1
    (event,) = answer.json()["events"]
    assert (event["id"], event["type"], event["last_http_status"]) == (
        event_id,
        "order.failed",
        503,
    )

    answer = admin.post("/api/admin/sms/retry", json={"ids": [sms_id, MISSING], "reason": "credit"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["total"], body["succeeded"], body["refused"]) == (2, 1, 1)
    assert [(r["id"], r["orderId"], r["ok"], r["code"]) for r in body["results"]] == [
        (sms_id, oid, True, "SMS_QUEUED"),
        (MISSING, None, False, "SMS_NOT_FOUND"),
    ]
    answer = admin.post("/api/admin/events/resend", json={"ids": [event_id], "reason": "back"})
    assert answer.status_code == 200, answer.text
    assert [(r["id"], r["ok"], r["code"]) for r in answer.json()["results"]] == [
        (event_id, True, "EVENT_QUEUED")
    ]
    assert admin.get("/api/admin/sms").json() == {"success": True, "count": 0, "sms": []}
    assert admin.get("/api/admin/events").json()["events"] == []
    assert [(a[0], a[1], a[3]) for a in audit(store)] == [
        ("admin-token", "sms_retry", "credit"),
        ("admin-token", "event_resend", "back"),
    ]


def test_api_refuses_malformed_outbox_calls_with_422(
    admin: httpx.Client, store: Store, outbox: OutboxStore, dead_lettered: Callable[[], str]
) -> None:
    oid = dead_lettered()
    sms_id = fail_sms(store, oid)
    for path in ("/api/admin/sms/retry", "/api/admin/events/resend"):
        for body in (
            {"ids": [], "reason": "x"},
            {"ids": [sms_id]},
            {"ids": [sms_id], "reason": "  "},
            {"ids": ["abc"], "reason": "x"},
            {"ids": [0], "reason": "x"},
            {"ids": [2**63], "reason": "x"},
            {"ids": [2**53], "reason": "x"},
            {"ids": list(range(1, 1002)), "reason": "x"},
            {"ids": [sms_id], "reason": "x", "orderIds": [oid]},
            {"reason": "x"},
        ):
            assert_error(admin.post(path, json=body), 422)
    for path in ("/api/admin/sms", "/api/admin/events"):
        assert_error(admin.get(path, params={"status": "queued"}), 422)
        assert_error(admin.get(path, params={"limit": 0}), 422)
    assert_error(admin.get("/api/admin/sms/retry"), 405)
    assert sms_row(store, sms_id)["status"] == "failed" and audit(store) == []


def test_api_order_detail_carries_its_sms_and_events(
    admin: httpx.Client,
    store: Store,
    outbox: OutboxStore,
    delivered: Callable[[], str],
) -> None:
    oid = delivered()
    answer = admin.get(f"/api/admin/orders/{oid}")
    assert answer.status_code == 200, answer.text
    detail = answer.json()
    (sms,) = detail["sms"]
    assert (sms["kind"], sms["status"], sms["generation"], sms["attempts"]) == (
        "delivered",
        "queued",
        0,
        0,
    )
    assert sms["content"] is None and sms["provider_status"] is None  # not rendered yet
    assert set(sms) >= {"last_error", "skip_reason", "client_reference", "in_flight"}
    (event,) = detail["events"]
    (row,) = sql(store, "SELECT event_id FROM platform_events WHERE order_id = %s", oid)
    assert (event["type"], event["status"], event["event_id"]) == (
        "order.fulfilled",
        "pending",
        str(row["event_id"]),
    )
    assert {"last_http_status", "last_error", "attempts"} <= set(event)
    assert DIGITS not in answer.text
