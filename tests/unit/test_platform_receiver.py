"""The platform's event receiver in the simulator, over real HTTP on a free port: signatures,
the event JSON, deduplication, every fault, outages, control routes, what the ledger counts
(redeliveries, conflicting bodies, out-of-order events, bad signatures), `verify_signature`
and the command line's environment."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fulfillment.dev.simulator.faults import FaultConfig
from fulfillment.dev.simulator.platform import PlatformFaults, verify_signature
from fulfillment.dev.simulator.server import (
    DEFAULT_PLATFORM_SECRET,
    Simulator,
    simulator_from_args,
)

KEY, SECRET = "test-key", "test-secret"
PLATFORM_SECRET = "platform-secret"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(
        api_key=KEY,
        api_secret=SECRET,
        faults=FaultConfig(),
        seed=5,
        platform_secret=PLATFORM_SECRET,
        platform_faults=PlatformFaults(timeout_seconds=0.5),
    )
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def http(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.platform_url.removesuffix("/events"), timeout=2.0) as client:
        yield client


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def event(order_id: str = "order-1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "order.fulfilled",
        "order_id": order_id,
        "network": "AT_ISHARE",
        "occurred_at": "2024-05-01T10:00:00Z",
        "attempts": 1,
        "transaction_id": "ATX-1",
        "refund_advised": False,
    }
    return {**body, **fields}


def post(
    http: httpx.Client,
    body: dict[str, Any] | bytes,
    *,
    secret: str = PLATFORM_SECRET,
    timestamp: float | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 2.0,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    stamp = str(int(time.time() if timestamp is None else timestamp))
    signed = {
        "Content-Type": "application/json",
        "X-Fulfillment-Timestamp": stamp,
        "X-Fulfillment-Signature": sign(secret, stamp, raw),
    }
    return http.post(
        "/events", content=raw, headers=signed if headers is None else headers, timeout=timeout
    )


def ledger(http: httpx.Client) -> dict[str, Any]:
    snapshot: dict[str, Any] = http.get("/_sim/ledger").json()
    return snapshot


def script(http: httpx.Client, event_id: str, *responses: str) -> None:
    body = {"event_id": event_id, "responses": list(responses)}
    response = http.post("/_sim/script", json=body)
    assert response.status_code == 200, response.text


# -- verify_signature -------------------------------------------------------------------


def test_verify_signature() -> None:
    body, now = b'{"event_id": "e"}', 1_700_000_000.0
    stamp = str(int(now))
    good = sign("s3cret", stamp, body)
    assert verify_signature("s3cret", stamp, body, good, now=now)
    assert verify_signature("s3cret", stamp, body, good, now=now + 300)
    assert not verify_signature("s3cret", stamp, body, good, now=now + 301)
    assert not verify_signature("s3cret", stamp, body, good, now=now - 301)
    assert verify_signature("s3cret", stamp, body, good, now=now + 30, tolerance_s=60)
    assert not verify_signature("other", stamp, body, good, now=now)
    assert not verify_signature("s3cret", stamp, body + b" ", good, now=now)
    assert not verify_signature("s3cret", str(int(now) + 1), body, good, now=now)
    assert not verify_signature("s3cret", stamp, body, good.upper(), now=now)
    assert not verify_signature("s3cret", stamp, body, "", now=now)
    assert not verify_signature("s3cret", stamp, body, "é" * 64, now=now)
    assert not verify_signature("s3cret", "", body, good, now=now)
    assert not verify_signature("s3cret", "-1", body, good, now=now)
    assert not verify_signature("s3cret", "1.7e9", body, good, now=now)


# -- the contract -------------------------------------------------------------------


def test_urls_and_default_secret() -> None:
    simulator = Simulator(api_key=KEY, api_secret=SECRET, faults=FaultConfig())
    try:
        assert simulator.platform_url == simulator.url.removesuffix("/v1") + "/platform/events"
        assert simulator.platform.secret == DEFAULT_PLATFORM_SECRET
        assert simulator.platform.chaos.config == PlatformFaults()
    finally:
        simulator.stop()


def test_a_signed_event_is_recorded(http: httpx.Client) -> None:
    body = event(type="order.failed", refund_advised=True, reason="INVALID_PHONE")
    response = post(http, body)
    assert response.status_code == 200
    assert response.json()["duplicate"] is False
    snapshot = ledger(http)
    assert snapshot["events"] == {
        body["event_id"]: {
            "order_id": "order-1",
            "type": "order.failed",
            "receipts": 1,
            "refund_advised": True,
            "occurred_at": "2024-05-01T10:00:00Z",
        }
    }
    assert snapshot["orders"] == {"order-1": ["order.failed"]}
    totals = snapshot["totals"]
    assert (totals["received"], totals["distinct"], totals["redeliveries"]) == (1, 1, 0)


def test_optional_fields_may_be_absent_or_null(http: httpx.Client) -> None:
    body = event(transaction_id=None)
    del body["transaction_id"]
    assert post(http, body).status_code == 200
    assert post(http, event(transaction_id=None, reason=None)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"X-Fulfillment-Timestamp": "1"}, id="no-signature"),
        pytest.param({"X-Fulfillment-Signature": "ab" * 32}, id="no-timestamp"),
    ],
)
def test_unsigned_event_is_401(http: httpx.Client, headers: dict[str, str]) -> None:
    assert post(http, event(), headers=headers).status_code == 401
    totals = ledger(http)["totals"]
    assert (totals["bad_signatures"], totals["received"]) == (1, 0)


def test_wrong_secret_and_stale_timestamp_are_401(http: httpx.Client) -> None:
    assert post(http, event(), secret="wrong").status_code == 401
    assert post(http, event(), timestamp=time.time() - 600).status_code == 401
    assert post(http, event(), timestamp=time.time() + 600).status_code == 401
    assert ledger(http)["totals"]["bad_signatures"] == 3


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[]", id="not-object"),
        pytest.param(event(type="order.shipped"), id="unknown-type"),
        pytest.param(event(event_id="not-a-uuid"), id="event-id-not-uuid"),
        pytest.param(event(occurred_at="2024-05-01T10:00:00+00:00"), id="no-z"),
        pytest.param(event(occurred_at="yesterdayZ"), id="not-iso"),
        pytest.param(event(attempts="1"), id="attempts-string"),
        pytest.param(event(refund_advised="false"), id="refund-string"),
        pytest.param(event(order_id=""), id="empty-order"),
        pytest.param(event(extra=1), id="unknown-field"),
        pytest.param({k: v for k, v in event().items() if k != "network"}, id="no-network"),
    ],
)
def test_not_the_event_json_is_400(http: httpx.Client, body: dict[str, Any] | bytes) -> None:
    response = post(http, body)
    assert response.status_code == 400
    totals = ledger(http)["totals"]
    assert (totals["malformed"], totals["received"], totals["bad_signatures"]) == (1, 0, 0)


def test_only_post_events(http: httpx.Client) -> None:
    assert http.get("/events").status_code == 405
    assert http.post("/other", content=b"{}").status_code == 404


# -- deduplication and ordering ------------------------------------------------------------


def test_redelivery_is_acknowledged_and_counted(http: httpx.Client) -> None:
    body = event()
    assert post(http, body).json()["duplicate"] is False
    again = post(http, body)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    snapshot = ledger(http)
    assert snapshot["events"][body["event_id"]]["receipts"] == 2
    assert snapshot["orders"] == {"order-1": ["order.fulfilled"]}
    totals = snapshot["totals"]
    assert (totals["received"], totals["distinct"], totals["redeliveries"]) == (2, 1, 1)
    assert totals["conflicting_bodies"] == []


def test_same_event_id_with_another_body_is_a_conflict(http: httpx.Client) -> None:
    body = event()
    post(http, body)
    post(http, {**body, "attempts": 2})
    post(http, {**body, "attempts": 3})
    totals = ledger(http)["totals"]
    assert totals["conflicting_bodies"] == [body["event_id"]]
    assert totals["redeliveries"] == 2


def test_key_order_alone_is_not_a_conflict(http: httpx.Client) -> None:
    body = event()
    post(http, body)
    post(http, dict(reversed(body.items())))
    assert ledger(http)["totals"]["conflicting_bodies"] == []


def test_events_of_an_order_out_of_order(http: httpx.Client) -> None:
    post(http, event("late", type="order.failed", occurred_at="2024-05-01T10:05:00Z"))
    post(http, event("late", type="order.resolved", occurred_at="2024-05-01T10:01:00Z"))
    post(http, event("fine", occurred_at="2024-05-01T10:00:00Z"))
    post(http, event("fine", type="order.failed", occurred_at="2024-05-01T10:00:00Z"))
    post(http, event("fine", type="order.resolved", occurred_at="2024-05-01T10:02:00Z"))
    snapshot = ledger(http)
    assert snapshot["totals"]["out_of_order"] == ["late"]
    assert snapshot["orders"]["late"] == ["order.failed", "order.resolved"]
    assert snapshot["orders"]["fine"] == ["order.fulfilled", "order.failed", "order.resolved"]


# -- faults -----------------------------------------------------------------------------


def test_error_records_nothing(http: httpx.Client) -> None:
    body = event()
    script(http, body["event_id"], "error")
    assert post(http, body).status_code == 500
    assert post(http, body).json()["duplicate"] is False  # the retry is the first receipt
    totals = ledger(http)["totals"]
    assert (totals["received"], totals["faults"]) == (1, {"error": 1})


def test_timeout_records_then_holds_the_answer(http: httpx.Client) -> None:
    body = event()
    script(http, body["event_id"], "timeout")
    with pytest.raises(httpx.ReadTimeout):
        post(http, body, timeout=0.2)
    assert ledger(http)["totals"]["received"] == 1
    assert post(http, body).json()["duplicate"] is True


def test_timeout_answers_late(http: httpx.Client) -> None:
    body = event()
    script(http, body["event_id"], "timeout")
    started = time.monotonic()
    assert post(http, body).status_code == 200
    assert time.monotonic() - started >= 0.5


def test_lost_records_then_drops(http: httpx.Client) -> None:
    body = event()
    script(http, body["event_id"], "lost")
    with pytest.raises(httpx.RemoteProtocolError):
        post(http, body)
    totals = ledger(http)["totals"]
    assert (totals["received"], totals["faults"]) == (1, {"lost": 1})


def test_random_faults_by_rate(sim: Simulator, http: httpx.Client) -> None:
    assert http.post("/_sim/faults", json={"error_rate": 1.0}).status_code == 200
    assert post(http, event()).status_code == 500
    sim.platform.update_faults({"error_rate": 0.0})
    assert post(http, event()).status_code == 200
    assert ledger(http)["totals"]["faults"] == {"error": 1}


def test_outage(http: httpx.Client) -> None:
    assert http.post("/_sim/down", json={"seconds": 30}).status_code == 200
    assert post(http, event()).status_code == 503
    assert post(http, event(), secret="wrong").status_code == 503
    assert http.post("/_sim/down", json={"seconds": 0}).status_code == 200
    assert post(http, event()).status_code == 200
    totals = ledger(http)["totals"]
    assert (totals["received"], totals["bad_signatures"], totals["faults"]) == (1, 0, {"outage": 2})


def test_control_routes_validate(http: httpx.Client) -> None:
    assert http.post("/_sim/faults", json={"lost_rate": -0.1}).status_code == 400
    assert http.post("/_sim/faults", json={"nope": 1}).status_code == 400
    assert http.post("/_sim/down", json={}).status_code == 400
    bad_script = {"event_id": "e", "responses": ["garbage"]}  # not a fault of the platform
    assert http.post("/_sim/script", json=bad_script).status_code == 400
    assert http.get("/_sim/faults").json()["timeout_seconds"] == 0.5
    assert http.get("/_sim/health").json() == {"ok": True}


def test_reset_clears_books_scripts_and_outage(sim: Simulator, http: httpx.Client) -> None:
    body = event()
    post(http, body)
    post(http, body, secret="wrong")
    script(http, "other", "error")
    http.post("/_sim/down", json={"seconds": 30})
    assert http.post("/_sim/reset").status_code == 200
    snapshot = ledger(http)
    assert (snapshot["events"], snapshot["orders"]) == ({}, {})
    assert snapshot["totals"]["bad_signatures"] == 0
    assert post(http, body).json()["duplicate"] is False
    assert sim.platform.chaos.config.timeout_seconds == 0.5


def test_vendor_routes_are_untouched(sim: Simulator, http: httpx.Client) -> None:
    assert http.get("/_sim/ledger").status_code == 200
    assert httpx.get(sim.url.removesuffix("/v1") + "/_sim/health").json() == {"ok": True}
    assert httpx.get(sim.url.removesuffix("/v1") + "/platform").status_code == 404


# -- command line -------------------------------------------------------------------


def test_environment_configures_the_receiver() -> None:
    base = {"AT_ISHARE_API_KEY": KEY, "AT_ISHARE_API_SECRET": SECRET}
    env = {
        **base,
        "SIM_PLATFORM_SECRET": "env-secret",
        "PLATFORM_WEBHOOK_SECRET": "fleet-secret",
        "SIM_PLATFORM_LOST_RATE": "0.1",
        "SIM_PLATFORM_TIMEOUT_SECONDS": "2",
    }
    simulator = simulator_from_args(["--port", "0"], env)
    try:
        assert simulator.platform.secret == "env-secret"
        config = simulator.platform.chaos.config
        assert (config.lost_rate, config.timeout_seconds) == (0.1, 2.0)
    finally:
        simulator.stop()
    fleet = {**base, "PLATFORM_WEBHOOK_SECRET": "fleet-secret"}
    simulator = simulator_from_args(["--port", "0"], fleet)
    try:
        assert simulator.platform.secret == "fleet-secret"
    finally:
        simulator.stop()


def test_invalid_environment_is_a_usage_error() -> None:
    env = {"SIM_PLATFORM_ERROR_RATE": "x", "AT_ISHARE_API_KEY": KEY, "AT_ISHARE_API_SECRET": SECRET}
    with pytest.raises(SystemExit):
        simulator_from_args(["--port", "0"], env)
