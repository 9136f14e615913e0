"""The runtime pause over the admin JSON API (real HTTP, PostgreSQL and Redis): list, pause,
resume, their validation, authentication and audit. (Every route's 401 without the admin
token is in test_web_api.py's ROUTES.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import httpx
import pytest

from db.store import Store
from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.web.api_models import NetworkCode
from fulfillment.web.security import SESSION_COOKIE, Sessions
from tests.conftest import WebServer

from .test_web_api import assert_error, sql

pytestmark = pytest.mark.integration

NewOrder = Callable[..., str]


def pauses_of(admin: httpx.Client) -> dict[str, Any]:
    response = admin.get("/api/admin/pauses")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_network_codes_of_the_api_are_the_known_networks() -> None:
    assert set(get_args(NetworkCode)) == KNOWN_NETWORKS


def test_pause_list_and_resume(
    admin: httpx.Client, web: WebServer, store: Store, new_order: NewOrder
) -> None:
    assert pauses_of(admin) == {"success": True, "paused": False, "pauses": []}
    waiting = new_order()

    response = admin.post("/api/admin/pause", json={"reason": "vendor maintenance"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert {k: body[k] for k in ("scope", "label", "reason", "paused_by", "already_paused")} == {
        "scope": "*",
        "label": "the whole fleet",
        "reason": "vendor maintenance",
        "paused_by": "admin-token",
        "already_paused": False,
    }
    assert body["paused_at"].endswith("Z") and body["age_s"] >= 0
    assert "is paused" in body["message"]

    again = admin.post("/api/admin/pause", json={"network": None, "reason": "other"}).json()
    assert again["already_paused"] is True and again["reason"] == "vendor maintenance"
    assert admin.post("/api/admin/pause", json={"network": "mtn", "reason": "MTN down"}).is_success

    listed = pauses_of(admin)
    assert listed["paused"] is True
    assert [(p["scope"], p["label"], p["reason"]) for p in listed["pauses"]] == [
        ("*", "the whole fleet", "vendor maintenance"),
        ("mtn", "network mtn", "MTN down"),
    ]

    response = admin.post("/api/admin/resume", json={})
    assert response.status_code == 200, response.text
    result = response.json()
    assert {k: result[k] for k in ("success", "scope", "was_paused", "requeued")} == {
        "success": True,
        "scope": "*",
        "was_paused": True,
        "requeued": 1,
    }
    assert result["still_paused"] == ["mtn"] and "still paused: network mtn" in result["message"]
    assert web.published == [(waiting, 0.0)]
    assert [p["scope"] for p in pauses_of(admin)["pauses"]] == ["mtn"]

    result = admin.post("/api/admin/resume", json={"network": "mtn"}).json()
    assert (result["was_paused"], result["requeued"], result["still_paused"]) == (True, 0, [])
    assert pauses_of(admin)["paused"] is False

    rows = sql(store, "SELECT actor, action, reason, details FROM admin_audit ORDER BY id")
    assert [(r["actor"], r["action"], r["details"]["scope"]) for r in rows] == [
        ("admin-token", "pause", "*"),
        ("admin-token", "pause", "*"),
        ("admin-token", "pause", "mtn"),
        ("admin-token", "resume", "*"),
        ("admin-token", "resume", "mtn"),
    ]


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/api/admin/pause", {}, "reason"),
        ("/api/admin/pause", {"reason": ""}, "reason"),
        ("/api/admin/pause", {"reason": "   "}, "reason"),
        ("/api/admin/pause", {"reason": "x" * 501}, "reason"),
        ("/api/admin/pause", {"network": "vodafone", "reason": "x"}, "network"),
        ("/api/admin/pause", {"network": "MTN", "reason": "x"}, "network"),
        ("/api/admin/pause", {"network": "*", "reason": "x"}, "network"),
        ("/api/admin/pause", {"network": 7, "reason": "x"}, "network"),
        ("/api/admin/pause", {"reason": "x", "scope": "mtn"}, "scope"),
        ("/api/admin/resume", {"network": "vodafone"}, "network"),
        ("/api/admin/resume", {"networks": ["mtn"]}, "networks"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_the_field(
    admin: httpx.Client, web: WebServer, store: Store, path: str, body: Any, says: str
) -> None:
    response = admin.post(path, json=body)
    assert_error(response, 422, "VALIDATION_ERROR")
    assert response.json()["error"]["message"].startswith(says), response.text
    assert pauses_of(admin)["paused"] is False
    assert sql(store, "SELECT * FROM admin_audit") == []
    assert web.published == []


def test_a_dashboard_session_pauses_as_its_user_with_the_csrf_token(
    web: WebServer, store: Store
) -> None:
    cookie, session = Sessions(web.admin_token).issue("alice")
    with httpx.Client(base_url=web.url, cookies={SESSION_COOKIE: cookie}, timeout=10) as client:
        body = {"network": "telecel", "reason": "Telecel maintenance"}
        assert_error(client.post("/api/admin/pause", json=body), 403, "CSRF_FAILED")
        assert client.get("/api/admin/pauses").json()["paused"] is False
        good = {"X-CSRF-Token": session.csrf}
        response = client.post("/api/admin/pause", json=body, headers=good)
        assert response.status_code == 200, response.text
        assert response.json()["paused_by"] == "alice"
        assert_error(client.post("/api/admin/resume", json={"network": "telecel"}), 403)
        response = client.post("/api/admin/resume", json={"network": "telecel"}, headers=good)
        assert response.status_code == 200, response.text
    rows = sql(store, "SELECT actor, action FROM admin_audit ORDER BY id")
    assert [(r["actor"], r["action"]) for r in rows] == [("alice", "pause"), ("alice", "resume")]


def test_the_platform_token_cannot_pause(web: WebServer) -> None:
    headers = {"Authorization": f"Bearer {web.api_token}"}
    response = httpx.post(
        f"{web.url}/api/admin/pause", json={"reason": "x"}, headers=headers, timeout=10
    )
    assert_error(response, 401, "UNAUTHORIZED")
