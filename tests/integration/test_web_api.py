"""The platform API and the admin JSON API over real HTTP, against real PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, get_args

import httpx
import pytest
import redis

from db.admin_store import VIEW_FILTERS
from db.store import Store
from fulfillment.dev.embedded import free_port
from fulfillment.dev.simulator.server import Simulator
from fulfillment.services.deadletter import handle_dead_letter
from fulfillment.services.delivery import fulfil
from fulfillment.services.notifier import Notifier
from fulfillment.services.ports import FulfilDeps, Outcome
from fulfillment.web.api_models import StatusFilter
from fulfillment.web.security import (
    AUTH_FAILURES_MAX,
    AUTH_FAILURES_WINDOW_S,
    SESSION_COOKIE,
    Sessions,
)
from tests.conftest import WebServer, park_dead_messages

from .conftest import Sent
from .test_fulfil import make_due, script

pytestmark = pytest.mark.integration

NewOrder = Callable[..., str]
UNKNOWN = "00000000-0000-4000-8000-000000000000"


# -- helpers --------------------------------------------------------------------------------


def sql(store: Store, query: str, *params: Any) -> list[dict[str, Any]]:
    with store.pool.connection() as conn:
        cur = conn.execute(query, params)
        rows: list[dict[str, Any]] = cur.fetchall() if cur.description else []
        return rows


def succeed(store: Store, order_id: str) -> None:
    sql(
        store,
        "UPDATE orders SET fulfillment_status = 'success', fulfillment_attempts = 1,"
        " fulfilled_at = created_at + interval '10 seconds' WHERE id = %s",
        order_id,
    )


def dead_letter(store: Store, order_id: str, reason: str = "3 attempts used up") -> None:
    """What the dead-letter consumer does to an order (flag it, store its notification)."""
    flagged = store.flag_dead_letter(
        order_id, reason=reason, error_code="VENDOR_5XX", generation=0, source="test"
    )
    assert flagged is not None


def audit(store: Store, order_id: str | None = None) -> list[dict[str, Any]]:
    if order_id is None:
        return sql(store, "SELECT * FROM admin_audit WHERE order_id IS NULL ORDER BY id")
    return sql(store, "SELECT * FROM admin_audit WHERE order_id = %s ORDER BY id", order_id)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body


def listed(admin: httpx.Client, **params: Any) -> list[str]:
    response = admin.get("/api/admin/orders", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return [o["id"] for o in response.json()["orders"]]


# -- authentication --------------------------------------------------------------------------

ROUTES: list[tuple[str, str, str, Any]] = [
    ("POST", "/api/orders/fulfillment", "api", {"action": "trigger", "orderId": UNKNOWN}),
    ("GET", f"/api/orders/fulfillment?orderId={UNKNOWN}", "api", None),
    ("GET", "/api/admin/orders", "admin", None),
    ("GET", f"/api/admin/orders/{UNKNOWN}", "admin", None),
    ("GET", "/api/admin/stats", "admin", None),
    ("POST", "/api/admin/orders/retry", "admin", {"orderIds": [UNKNOWN], "reason": "x"}),
    ("POST", "/api/admin/dead-letters/dismiss", "admin", {"orderIds": [UNKNOWN], "reason": "x"}),
    ("POST", f"/api/admin/orders/{UNKNOWN}/recheck", "admin", {"reason": "x"}),
    ("POST", f"/api/admin/orders/{UNKNOWN}/mark-delivered", "admin", {"reason": "x"}),
    ("POST", f"/api/admin/orders/{UNKNOWN}/mark-not-delivered", "admin", {"reason": "x"}),
    ("GET", "/api/admin/dlq", "admin", None),
    ("POST", "/api/admin/dlq/requeue", "admin", {"ids": ["some-id"]}),
    ("POST", "/api/admin/dlq/delete", "admin", {"ids": ["some-id"]}),
    ("GET", "/api/admin/sms?status=failed", "admin", None),
    ("POST", "/api/admin/sms/retry", "admin", {"ids": [1], "reason": "x"}),
    ("GET", "/api/admin/events?status=failed", "admin", None),
    ("POST", "/api/admin/events/resend", "admin", {"ids": [1], "reason": "x"}),
    ("GET", "/api/admin/pauses", "admin", None),
    ("POST", "/api/admin/pause", "admin", {"network": "mtn", "reason": "x"}),
    ("POST", "/api/admin/resume", "admin", {"network": "mtn"}),
]


@pytest.mark.parametrize(("method", "path", "audience", "body"), ROUTES)
def test_every_route_rejects_a_missing_or_wrong_token(
    web: WebServer, store: Store, method: str, path: str, audience: str, body: Any
) -> None:
    right = web.api_token if audience == "api" else web.admin_token
    other = web.admin_token if audience == "api" else web.api_token
    same_length = ("x" * len(right)) if right[0] != "x" else ("y" * len(right))
    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {same_length}"},
        {"Authorization": f"Bearer {right}x"},
        {"Authorization": f"Basic {right}"},
        {"Authorization": f"Bearer {other}"},  # the other audience's token
        {"Cookie": f"{SESSION_COOKIE}=forged.cookie.value"},
    ]
    with httpx.Client(base_url=web.url, timeout=10) as client:
        for headers in attempts:
            response = client.request(method, path, json=body, headers=headers)
            assert_error(response, 401, "UNAUTHORIZED")
            assert response.headers["WWW-Authenticate"] == "Bearer", headers
            # Credentials come first: a caller without them learns nothing of the body rules.
            garbage = {**headers, "Content-Type": "application/json"}
            response = client.request(method, path, content=b"{not json", headers=garbage)
            assert_error(response, 401, "UNAUTHORIZED")
        ok = client.request(method, path, json=body, headers={"Authorization": f"Bearer {right}"})
        assert ok.status_code != 401
    assert web.published == []


def test_route_list_covers_every_api_route(web: WebServer) -> None:
    doc = httpx.get(f"{web.url}/openapi.json").json()
    documented = {
        (m.upper(), p) for p, ops in doc["paths"].items() for m in ops if p.startswith("/api/")
    }
    covered = {(m, p.split("?")[0].replace(UNKNOWN, "{order_id}")) for m, p, *_ in ROUTES}
    assert documented == covered
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["apiToken"]["description"],
    }
    assert doc["paths"]["/api/orders/fulfillment"]["post"]["security"] == [{"apiToken": []}]
    assert {"adminToken": []} in doc["paths"]["/api/admin/stats"]["get"]["security"]
    assert set(get_args(StatusFilter)) == set(VIEW_FILTERS)


def test_session_cookie_works_and_state_changes_need_its_csrf_token(
    web: WebServer, store: Store, new_order: NewOrder
) -> None:
    oid = new_order()
    dead_letter(store, oid)
    cookie, session = Sessions(web.admin_token).issue("alice")
    with httpx.Client(base_url=web.url, cookies={SESSION_COOKIE: cookie}, timeout=10) as client:
        assert client.get("/api/admin/stats").status_code == 200
        body = {"orderIds": [oid], "reason": "vendor fixed"}
        assert_error(client.post("/api/admin/orders/retry", json=body), 403, "CSRF_FAILED")
        wrong = {"X-CSRF-Token": "not-the-token"}
        assert_error(
            client.post("/api/admin/orders/retry", json=body, headers=wrong), 403, "CSRF_FAILED"
        )
        assert web.published == []
        good = {"X-CSRF-Token": session.csrf}
        response = client.post("/api/admin/orders/retry", json=body, headers=good)
        assert response.status_code == 200, response.text
    assert [(a["actor"], a["action"], a["reason"]) for a in audit(store, oid)] == [
        ("alice", "retry", "vendor fixed")
    ]
    # A session signed with another admin token is not a session here.
    foreign, _ = Sessions("another-admin-token").issue("mallory")
    response = httpx.get(f"{web.url}/api/admin/stats", cookies={SESSION_COOKIE: foreign})
    assert_error(response, 401, "UNAUTHORIZED")


# -- the platform API ------------------------------------------------------------------------


def test_trigger_publishes_a_pending_order_and_records_it(
    api: httpx.Client, web: WebServer, store: Store, new_order: NewOrder
) -> None:
    oid = new_order()
    response = api.post("/api/orders/fulfillment", json={"action": "trigger", "orderId": oid})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": True,
        "message": "fulfillment triggered",
        "fulfillment": {"orderId": oid, "status": "pending", "reference": oid},
    }
    assert web.published == [(oid, 0.0)]
    assert [(a["actor"], a["action"]) for a in audit(store, oid)] == [("api", "trigger")]
    row = store.order_row(oid)
    assert row is not None and row["last_enqueued_at"] is not None


def test_trigger_of_a_delivered_order_is_refused(
    api: httpx.Client, web: WebServer, store: Store, new_order: NewOrder
) -> None:
    oid = new_order()
    succeed(store, oid)
    response = api.post("/api/orders/fulfillment", json={"action": "trigger", "orderId": oid})
    assert_error(response, 409, "ORDER_SUCCEEDED")
    assert web.published == [] and audit(store, oid) == []


def test_retry_of_a_dead_lettered_order_grants_an_attempt_and_leaves_the_list(
    api: httpx.Client,
    admin: httpx.Client,
    web: WebServer,
    store: Store,
    sim: Simulator,
    make_deps: Callable[..., FulfilDeps],
    new_order: NewOrder,
    sent: Sent,
) -> None:
    oid = new_order()
    script(sim, oid, ["invalid_phone"])  # a permanent vendor error: dead-lettered at once
    assert fulfil(oid, make_deps()) is Outcome.DEAD_LETTERED
    handle_dead_letter(sent.dead_letters[0], store, Notifier(store=store, webhook_url=None))
    assert oid in listed(admin, status="open_dead_letters")

    response = api.post("/api/orders/fulfillment", json={"action": "retry", "orderId": oid})
    assert response.status_code == 200, response.text
    assert response.json()["fulfillment"] == {"orderId": oid, "status": "failed", "reference": oid}
    assert response.json()["message"] == "one more attempt granted"
    assert web.published == [(oid, 0.0)]
    assert oid not in listed(admin, status="open_dead_letters")
    assert oid not in listed(admin, status="dead_lettered")
    assert oid in listed(admin, status="failed")
    entries = audit(store, oid)
    assert [(a["actor"], a["action"], a["reason"]) for a in entries] == [
        ("api", "retry", "retry requested by the platform API")
    ]
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_generation"] == 1
    assert row["dead_lettered_at"] is None and row["dead_letter_reason"] is None
    # The granted attempt is real: the worker buys once more, and the vendor delivers.
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    assert sim.ledger.deliveries(oid) == 1


def test_retry_with_a_reason_keeps_it(api: httpx.Client, store: Store, new_order: NewOrder) -> None:
    oid = new_order()
    dead_letter(store, oid)
    body = {"action": "retry", "orderId": oid, "reason": "customer called"}
    assert api.post("/api/orders/fulfillment", json=body).status_code == 200
    assert [a["reason"] for a in audit(store, oid)] == ["customer called"]


def test_retry_is_refused_for_delivered_in_flight_and_pending_orders(
    api: httpx.Client, web: WebServer, store: Store, new_order: NewOrder
) -> None:
    delivered, in_flight, pending = new_order(), new_order(), new_order()
    succeed(store, delivered)
    assert (
        store.claim(in_flight, str(uuid.uuid4()), ttl_s=60, early_s=0, networks=["at-ishare"])
        is not None
    )
    for oid, code in (
        (delivered, "ORDER_SUCCEEDED"),
        (in_flight, "ORDER_IN_FLIGHT"),
        (pending, "ORDER_PENDING"),
    ):
        response = api.post("/api/orders/fulfillment", json={"action": "retry", "orderId": oid})
        assert_error(response, 409, code)
        assert "cannot retry" in response.json()["error"]["message"]
    assert web.published == []
    assert all(audit(store, oid) == [] for oid in (delivered, in_flight, pending))


def test_unknown_and_malformed_ids_are_404_and_422_never_500(
    api: httpx.Client, admin: httpx.Client
) -> None:
    for action in ("trigger", "retry"):
        response = api.post("/api/orders/fulfillment", json={"action": action, "orderId": UNKNOWN})
        assert_error(response, 404, "ORDER_NOT_FOUND")
        response = api.post("/api/orders/fulfillment", json={"action": action, "orderId": "12"})
        assert_error(response, 422, "VALIDATION_ERROR")
        assert "orderId" in response.json()["error"]["message"]
    assert_error(api.get("/api/orders/fulfillment", params={"orderId": UNKNOWN}), 404)
    assert_error(api.get("/api/orders/fulfillment", params={"orderId": "x' OR 1=1"}), 422)
    assert_error(api.get("/api/orders/fulfillment"), 422, "VALIDATION_ERROR")
    for body in (
        {"action": "refund", "orderId": UNKNOWN},
        {"orderId": UNKNOWN},
        {"action": "trigger"},
        {"action": "trigger", "orderId": 12},
        {"action": "trigger", "orderId": UNKNOWN, "reason": "a\x00b"},
        [UNKNOWN],
        "trigger",
    ):
        assert_error(api.post("/api/orders/fulfillment", json=body), 422, "VALIDATION_ERROR")
    bad_json = api.post(
        "/api/orders/fulfillment",
        content=b'{"action": "trigger", "orderId": ',
        headers={"Content-Type": "application/json"},
    )
    assert_error(bad_json, 422, "VALIDATION_ERROR")
    assert_error(admin.get(f"/api/admin/orders/{UNKNOWN}"), 404, "ORDER_NOT_FOUND")
    assert_error(admin.get("/api/admin/orders/not-a-uuid"), 422)
    assert_error(admin.get("/api/admin/orders", params={"status": "bogus"}), 422)
    assert_error(admin.get("/api/admin/orders", params={"cursor": "bm90LWEtY3Vyc29y"}), 422)
    assert_error(admin.get("/api/admin/orders", params={"limit": 0}), 422)
    assert_error(admin.get("/api/admin/orders", params={"network": "mtn\x00"}), 422)
    assert_error(admin.get("/api/admin/orders", params={"phone": "call me"}), 422)


def test_get_returns_the_state_and_the_latest_attempt(
    api: httpx.Client,
    store: Store,
    sim: Simulator,
    make_deps: Callable[..., FulfilDeps],
    new_order: NewOrder,
) -> None:
    oid = new_order()
    script(sim, oid, ["error"])
    deps = make_deps(publish_retry=lambda *_: None)
    assert fulfil(oid, deps) is Outcome.RETRY_SCHEDULED

    response = api.get("/api/orders/fulfillment", params={"orderId": oid})
    assert response.status_code == 200, response.text
    state = response.json()["fulfillment"]
    assert response.json()["success"] is True
    assert (state["orderId"], state["reference"], state["status"]) == (oid, oid, "failed")
    assert state["attempts"] == 1 and state["lastErrorCode"] == "VENDOR_5XX"
    assert state["nextRetryAt"].endswith("Z")
    latest = state["latestAttempt"]
    assert (latest["attemptNumber"], latest["action"], latest["status"]) == (
        1,
        "purchase",
        "failed",
    )
    assert latest["errorCode"] == "VENDOR_5XX" and latest["latencyMs"] is not None

    make_due(store, oid)
    assert fulfil(oid, deps) is Outcome.SUCCESS
    state = api.get("/api/orders/fulfillment", params={"orderId": oid}).json()["fulfillment"]
    assert state["status"] == "success" and state["fulfilledAt"] and state["transactionId"]
    assert (state["latestAttempt"]["attemptNumber"], state["latestAttempt"]["status"]) == (
        2,
        "success",
    )


# -- the admin API ------------------------------------------------------------------------------


def test_pagination_walks_every_order_exactly_once(
    admin: httpx.Client, store: Store, new_order: NewOrder
) -> None:
    ids = [new_order() for _ in range(120)]
    # Ties on created_at: the keyset's id tiebreak must neither skip nor repeat rows.
    sql(
        store,
        "UPDATE orders SET created_at = now() - (floor(random() * 4) || ' seconds')::interval"
        " WHERE id = ANY(%s::uuid[])",
        ids,
    )
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 50}
        if cursor:
            params["cursor"] = cursor
        body = admin.get("/api/admin/orders", params=params).json()
        pages.append(body["orders"])
        cursor = body["nextCursor"]
        if cursor is None:
            break
        assert len(pages) < 10
    assert [len(p) for p in pages] == [50, 50, 20]
    seen = [o["id"] for page in pages for o in page]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 120
    keys = [(o["created_at"], o["id"]) for page in pages for o in page]
    assert keys == sorted(keys, reverse=True)  # newest first


def test_phone_search_finds_the_order_however_the_number_is_typed(
    admin: httpx.Client, new_order: NewOrder
) -> None:
    target = new_order(phone="+233241234567")
    new_order(phone="0241234568")
    new_order(phone="+233201234567")
    for typed in ("024 123 4567", "+233241234567", "233241234567", "0241234567", "241234567"):
        assert listed(admin, phone=typed) == [target], typed
    body = admin.get("/api/admin/orders", params={"phone": "024 123 4567"}).json()
    assert body["orders"][0]["phone"] == "+23324*****67"  # masked in every answer
    assert listed(admin, phone="0550000000") == []


def test_stats_count_each_status(admin: httpx.Client, store: Store, new_order: NewOrder) -> None:
    pending = [new_order(), new_order()]
    delivered, in_flight, dead, failed = new_order(), new_order(), new_order(), new_order()
    succeed(store, delivered)
    assert (
        store.claim(in_flight, str(uuid.uuid4()), ttl_s=60, early_s=0, networks=["at-ishare"])
        is not None
    )
    dead_letter(store, dead)
    sql(
        store,
        "UPDATE orders SET fulfillment_status = 'failed', next_attempt_at = now() + interval '1h'"
        " WHERE id = %s",
        failed,
    )
    new_order(network="mtn")  # not ours (mtn not served): no fleet status, not counted
    unknown = new_order()  # outcome unknown: processing, in review; neither processing nor dead
    sql(
        store,
        "UPDATE orders SET fulfillment_status = 'processing', fulfillment_in_flight_attempt = 1,"
        " dead_letter_reason = 'vendor outcome still unknown', dead_lettered_at = now()"
        " WHERE id = %s",
        unknown,
    )
    response = admin.get("/api/admin/stats")
    assert response.status_code == 200, response.text
    stats = response.json()["stats"]
    assert stats == {
        "total": 7,
        "success": 1,
        "failed": 1,
        "processing": 1,
        "pending": len(pending),
        "outcome_unknown": 1,
        "dead_lettered": 1,
        "open_dead_letters": 1,
        "success_rate": 0.5,
        "median_fulfil_s_24h": 10.0,
    }


def test_detail_shows_attempts_audit_and_notifications(
    admin: httpx.Client,
    store: Store,
    sim: Simulator,
    make_deps: Callable[..., FulfilDeps],
    new_order: NewOrder,
    sent: Sent,
) -> None:
    oid = new_order()
    script(sim, oid, ["invalid_phone"])
    assert fulfil(oid, make_deps()) is Outcome.DEAD_LETTERED
    handle_dead_letter(sent.dead_letters[0], store, Notifier(store=store, webhook_url=None))
    admin.post("/api/admin/orders/retry", json={"orderIds": [oid], "reason": "number fixed"})
    response = admin.get(f"/api/admin/orders/{oid}")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["order"]["id"] == oid and detail["order"]["phone"] == "+23324*****67"
    (attempt,) = detail["attempts"]
    assert (attempt["action"], attempt["status"], attempt["error_code"]) == (
        "purchase",
        "failed",
        "INVALID_PHONE",
    )
    assert attempt["phone"] == "+23324*****67" and "phone_number" not in attempt
    assert attempt["api_response"]["error"]["code"] == "INVALID_PHONE"
    assert attempt["created_at"].endswith("Z")
    assert [(a["actor"], a["action"], a["reason"]) for a in detail["audit"]] == [
        ("admin-token", "retry", "number fixed")
    ]
    assert [n["kind"] for n in detail["notifications"]] == ["dead_letter"]
    assert "241234567" not in response.text


def test_admin_retry_of_selected_and_of_all_filtered_orders(
    admin: httpx.Client, web: WebServer, store: Store, new_order: NewOrder
) -> None:
    dead = [new_order(phone="0241234567"), new_order(phone="0241234567"), new_order()]
    for oid in dead:
        dead_letter(store, oid)
    delivered = new_order(phone="0241234567")
    succeed(store, delivered)

    response = admin.post(
        "/api/admin/orders/retry",
        json={"orderIds": [dead[2], delivered, "nope"], "reason": "vendor fixed"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["succeeded"], body["refused"]) == (3, 1, 2)
    assert [(r["orderId"], r["ok"], r["code"]) for r in body["results"]] == [
        (dead[2], True, "RETRY_SCHEDULED"),
        (delivered, False, "ORDER_SUCCEEDED"),
        ("nope", False, "INVALID_ORDER_ID"),
    ]

    response = admin.post(
        "/api/admin/orders/retry",
        json={
            "allFiltered": {"status": "dead_lettered", "phone": "+233 24 123 4567"},
            "reason": "bulk after outage",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["succeeded"]) == (2, 2)
    assert {r["orderId"] for r in body["results"]} == set(dead[:2])
    assert sorted(web.published) == sorted((oid, 0.0) for oid in dead)
    assert listed(admin, status="open_dead_letters") == []
    for oid in dead[:2]:
        assert [(a["action"], a["reason"]) for a in audit(store, oid)] == [
            ("retry", "bulk after outage")
        ]


def test_admin_retry_validates_its_body(admin: httpx.Client, web: WebServer) -> None:
    too_many = [str(uuid.uuid4()) for _ in range(1001)]
    for body in (
        {"orderIds": too_many, "reason": "x"},
        {"orderIds": [], "reason": "x"},
        {"orderIds": [UNKNOWN], "allFiltered": {}, "reason": "x"},
        {"reason": "x"},
        {"orderIds": [UNKNOWN]},
        {"orderIds": [UNKNOWN], "reason": ""},
        {"orderIds": [UNKNOWN], "reason": "   "},
        {"allFiltered": {"status": "everything"}, "reason": "x"},
    ):
        assert_error(admin.post("/api/admin/orders/retry", json=body), 422)
    assert web.published == []


def test_dismiss_takes_a_dead_letter_off_the_list(
    admin: httpx.Client, store: Store, new_order: NewOrder
) -> None:
    oid = new_order()
    dead_letter(store, oid)
    body = {"orderIds": [oid], "reason": "refunded"}
    first = admin.post("/api/admin/dead-letters/dismiss", json=body).json()
    assert [(r["ok"], r["code"]) for r in first["results"]] == [(True, "DISMISSED")]
    assert listed(admin, status="open_dead_letters") == []
    assert listed(admin, status="dead_lettered") == [oid]
    again = admin.post("/api/admin/dead-letters/dismiss", json=body).json()
    assert [(r["ok"], r["code"]) for r in again["results"]] == [(False, "ALREADY_DISMISSED")]
    assert [(a["action"], a["reason"]) for a in audit(store, oid)] == [("dismiss", "refunded")]
    detail = admin.get(f"/api/admin/orders/{oid}").json()
    assert detail["order"]["dismissed_at"] is not None


# -- Dramatiq's dead-letter queue -----------------------------------------------------------------


def put_dead_message(web: WebServer, order_id: str) -> str:
    """Park a message in Dramatiq's XQ as its Redis broker does when it gives up."""
    (message_id,) = park_dead_messages(
        web.namespace, [order_id], options={"retries": 20, "max_retries": 20}
    )
    return message_id


def test_dlq_list_requeue_and_delete_over_redis(
    admin: httpx.Client, web: WebServer, store: Store, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    requeue_id = put_dead_message(web, first)
    delete_id = put_dead_message(web, second)

    listing = admin.get("/api/admin/dlq", params={"limit": 10}).json()
    assert listing["count"] == 2
    assert {m["id"] for m in listing["messages"]} == {requeue_id, delete_id}
    by_id = {m["id"]: m for m in listing["messages"]}
    assert by_id[requeue_id]["actor"] == "fulfill_order"
    assert by_id[requeue_id]["args"] == [first]
    assert by_id[requeue_id]["queue"] == "fulfillment"
    assert by_id[requeue_id]["failed_at"].endswith("Z")
    assert json.loads(by_id[requeue_id]["body"])["args"] == [first]

    response = admin.post("/api/admin/dlq/requeue", json={"ids": [requeue_id, "unknown-id"]})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "done": 1}
    queued = client.hvals(f"{web.namespace}:fulfillment.msgs")
    assert [json.loads(m)["args"] for m in queued] == [[first]]
    assert client.llen(f"{web.namespace}:fulfillment") == 1

    response = admin.post("/api/admin/dlq/delete", json={"ids": [delete_id]})
    assert response.json() == {"success": True, "done": 1}
    assert admin.get("/api/admin/dlq").json() == {"success": True, "count": 0, "messages": []}
    assert client.hlen(f"{web.namespace}:fulfillment.XQ.msgs") == 0

    entries = [
        (a["actor"], a["action"], a["details"])
        for a in audit(store)
        if a["action"].startswith("dlq_") and set(a["details"]["ids"]) & {requeue_id, delete_id}
    ]
    assert entries == [
        ("admin-token", "dlq_requeue", {"ids": [requeue_id, "unknown-id"]}),
        ("admin-token", "dlq_delete", {"ids": [delete_id]}),
    ]
    assert_error(admin.post("/api/admin/dlq/requeue", json={"ids": []}), 422)
    assert_error(admin.post("/api/admin/dlq/delete", json={}), 422)


# -- the process: `fulfillment web` -----------------------------------------------------------


def _web_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ADMIN_TOKEN", "API_TOKEN", "FULFILLMENT_DEMO", "PORT")
        and not k.startswith("AT_ISHARE_")
    }
    env.update(LOG_FORMAT="console", **extra)
    return env


def _run_web(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    code = "import sys; from fulfillment.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, "web", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_web_refuses_to_start_without_its_tokens(database_url: str, redis_url: str) -> None:
    env = _web_env(DATABASE_URL=database_url, REDIS_URL=redis_url)
    process = _run_web(["--port", str(free_port())], env)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, (stdout, stderr)
    assert stdout == ""
    assert "ADMIN_TOKEN" in stderr and "API_TOKEN" in stderr and "refusing" in stderr
    process = _run_web(["--port", str(free_port())], {**env, "ADMIN_TOKEN": "set"})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and "API_TOKEN" in stderr and "ADMIN_TOKEN" not in stderr


def test_demo_mode_generates_tokens_prints_the_login_url_and_serves(
    database_url: str, redis_url: str, redis_namespace: str
) -> None:
    port = free_port()
    env = _web_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        REDIS_NAMESPACE=redis_namespace,
        FULFILLMENT_DEMO="1",
        API_TOKEN="given-api-token",
        PORT=str(port),
    )
    process = _run_web([], env)
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    token = "not-read-yet"
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "web did not start"
            time.sleep(0.1)
        text = "".join(lines)
        assert f"{base}/dashboard/admin/fulfillment" in text
        assert "given-api-token" not in text  # only generated tokens are shown
        token = next(
            line.rsplit(" ", 1)[1].strip() for line in lines if line.startswith("ADMIN_TOKEN")
        )
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/api/admin/stats", headers=auth).status_code == 200
        platform = {"Authorization": "Bearer given-api-token"}
        response = httpx.get(
            f"{base}/api/orders/fulfillment", params={"orderId": UNKNOWN}, headers=platform
        )
        assert_error(response, 404, "ORDER_NOT_FOUND")
        # No vendor configured: the process serves, only the webhook says so.
        assert_error(httpx.post(f"{base}/webhooks/at-ishare", content=b"{}"), 503)
        assert httpx.get(f"{base}/readyz").json()["ready"] is True
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=5)
    assert process.stderr is not None and process.stdout is not None
    stderr = process.stderr.read()
    process.stderr.close()
    process.stdout.close()
    assert token not in stderr and "given-api-token" not in stderr  # never logged


def test_an_address_that_guesses_wrong_too_often_is_refused_even_with_the_right_token(
    web: WebServer,
) -> None:
    """Ten wrong bearer tokens (either audience) from one address: every token is refused
    from it for the window, with 429 and Retry-After; no token at all is still a plain 401."""
    with httpx.Client(base_url=web.url, timeout=10) as client:
        for n in range(AUTH_FAILURES_MAX):
            path = "/api/admin/stats" if n % 2 else f"/api/orders/fulfillment?orderId={UNKNOWN}"
            response = client.get(path, headers={"Authorization": f"Bearer guess-{n}"})
            assert_error(response, 401, "UNAUTHORIZED")
        for path, token in (
            ("/api/admin/stats", web.admin_token),
            (f"/api/orders/fulfillment?orderId={UNKNOWN}", web.api_token),
        ):
            refused = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert_error(refused, 429, "TOO_MANY_ATTEMPTS")
            assert 290 <= int(refused.headers["Retry-After"]) <= AUTH_FAILURES_WINDOW_S
        assert_error(client.get("/api/admin/stats"), 401, "UNAUTHORIZED")
