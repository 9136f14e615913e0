"""The SMS provider side of the simulator, over real HTTP on a free port: auth, validation,
status progression, every fault, outages, control routes, the ledger's duplicate and blind
sends, and the command line's environment."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fulfillment.dev.simulator.faults import FaultConfig
from fulfillment.dev.simulator.server import (
    DEFAULT_SMS_CLIENT_ID,
    DEFAULT_SMS_CLIENT_SECRET,
    Simulator,
    simulator_from_args,
)
from fulfillment.dev.simulator.sms import SmsFaults

KEY, SECRET = "test-key", "test-secret"
SMS_ID, SMS_SECRET = "sms-id", "sms-secret"
TO = "233241234567"
DELIVERY_S = 0.3


def sms_faults(**changes: Any) -> SmsFaults:
    return SmsFaults(delivery_seconds=DELIVERY_S, timeout_seconds=0.5, **changes)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(
        api_key=KEY,
        api_secret=SECRET,
        faults=FaultConfig(),
        seed=3,
        sms_client_id=SMS_ID,
        sms_client_secret=SMS_SECRET,
        sms_faults=sms_faults(),
    )
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def api(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.sms_url, auth=(SMS_ID, SMS_SECRET), timeout=2.0) as http:
        yield http


@pytest.fixture
def control(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.sms_url.removesuffix("/v1") + "/_sim", timeout=2.0) as http:
        yield http


def send(
    api: httpx.Client, reference: str, *, timeout: float = 2.0, **fields: Any
) -> httpx.Response:
    body = {"From": "DataShop", "To": TO, "Content": "Your 2GB is on its way", **fields}
    return api.post("/messages/send", json={"ClientReference": reference, **body}, timeout=timeout)


def lookup(api: httpx.Client, reference: str) -> list[dict[str, Any]]:
    response = api.get("/messages", params={"clientReference": reference})
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def script(control: httpx.Client, reference: str, *responses: str) -> None:
    response = control.post("/script", json={"reference": reference, "responses": list(responses)})
    assert response.status_code == 200, response.text


def ledger(control: httpx.Client) -> dict[str, Any]:
    snapshot: dict[str, Any] = control.get("/ledger").json()
    return snapshot


# -- contract ---------------------------------------------------------------------


def test_urls_and_default_credentials() -> None:
    simulator = Simulator(api_key=KEY, api_secret=SECRET, faults=FaultConfig())
    try:
        assert simulator.sms_url == simulator.url.removesuffix("/v1") + "/sms/v1"
        assert (simulator.sms.client_id, simulator.sms.client_secret) == (
            DEFAULT_SMS_CLIENT_ID,
            DEFAULT_SMS_CLIENT_SECRET,
        )
        assert simulator.sms.chaos.config == SmsFaults()
    finally:
        simulator.stop()


def test_send_then_pending_then_delivered(api: httpx.Client, control: httpx.Client) -> None:
    response = send(api, "sms-1")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == 0
    message_id = body["messageId"]

    [pending] = lookup(api, "sms-1")
    assert pending["messageId"] == message_id
    assert pending["clientReference"] == "sms-1"
    assert pending["status"] == "Pending"
    assert pending["updateTime"].endswith("Z")

    time.sleep(DELIVERY_S + 0.1)
    by_id = api.get(f"/messages/{message_id}")
    assert by_id.status_code == 200
    assert by_id.json()["status"] == "Delivered"
    assert by_id.json()["updateTime"] > pending["updateTime"]

    entry = ledger(control)["references"]["sms-1"]
    assert entry == {
        "sends": 1,
        "lookups": 1,
        "message_ids": [message_id],
        "statuses": ["Delivered"],
        "to": "23324*****67",
        "content": "Your 2GB is on its way",
    }


def test_unknown_reference_and_message(api: httpx.Client) -> None:
    assert lookup(api, "never") == []
    assert api.get("/messages/no-such-id").status_code == 404
    assert api.get("/messages").status_code == 400
    assert api.get("/messages/send").status_code == 405


def test_undeliverable_suffix_and_failed_rate(
    sim: Simulator, api: httpx.Client, control: httpx.Client
) -> None:
    sim.sms.update_faults({"delivery_seconds": 0})
    assert send(api, "undeliverable", To="233240009999").status_code == 201
    assert [m["status"] for m in lookup(api, "undeliverable")] == ["Undeliverable"]

    assert control.post("/faults", json={"failed_rate": 1.0}).status_code == 200
    assert send(api, "failed").status_code == 201
    assert [m["status"] for m in lookup(api, "failed")] == ["Failed"]


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(None, id="missing"),
        pytest.param((SMS_ID, "wrong"), id="wrong-secret"),
        pytest.param(("wrong", SMS_SECRET), id="wrong-id"),
    ],
)
def test_bad_credentials_are_refused(
    sim: Simulator, control: httpx.Client, auth: tuple[str, str] | None
) -> None:
    with httpx.Client(base_url=sim.sms_url, auth=auth, timeout=2.0) as http:
        response = send(http, "auth")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert http.get("/messages", params={"clientReference": "auth"}).status_code == 401
    assert ledger(control)["references"] == {}


def test_garbled_basic_header_is_refused(sim: Simulator) -> None:
    headers = {"Authorization": "Basic not*base64"}
    response = httpx.get(f"{sim.sms_url}/messages?clientReference=x", headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"To": "0241234567"}, "INVALID_RECIPIENT", id="local-form"),
        pytest.param({"To": "+233241234567"}, "INVALID_RECIPIENT", id="plus"),
        pytest.param({"To": "23324123456"}, "INVALID_RECIPIENT", id="short"),
        pytest.param({"From": ""}, "INVALID_SENDER", id="empty-sender"),
        pytest.param({"From": "TwelveLetter"}, "INVALID_SENDER", id="long-sender"),
        pytest.param({"Content": ""}, "CONTENT_TOO_LONG", id="empty-content"),
        pytest.param({"Content": "x" * 613}, "CONTENT_TOO_LONG", id="long-content"),
    ],
)
def test_refused_messages(
    api: httpx.Client, control: httpx.Client, fields: dict[str, str], code: str
) -> None:
    response = send(api, "bad", **fields)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert ledger(control)["totals"]["sends"] == 0


def test_longest_content_and_sender_are_sent(api: httpx.Client) -> None:
    assert send(api, "long", Content="x" * 612, From="ElevenChars").status_code == 201


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[]", id="not-object"),
        pytest.param(b'{"From": "A", "To": "233241234567", "Content": "hi"}', id="no-reference"),
        pytest.param(
            b'{"From": "A", "To": 233241234567, "Content": "hi", "ClientReference": "r"}',
            id="number-to",
        ),
        pytest.param(
            b'{"From": "A", "To": "233241234567", "Content": "hi", "ClientReference": ""}',
            id="empty-reference",
        ),
    ],
)
def test_malformed_body_is_400(api: httpx.Client, content: bytes) -> None:
    response = api.post(
        "/messages/send", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


# -- faults -----------------------------------------------------------------------


def test_error_sends_nothing(api: httpx.Client, control: httpx.Client) -> None:
    script(control, "err", "error")
    assert send(api, "err").status_code == 500
    assert lookup(api, "err") == []
    totals = ledger(control)["totals"]
    assert (totals["sends"], totals["faults"]) == (0, {"error": 1})


def test_rate_limit_and_insufficient_credit_send_nothing(
    sim: Simulator, api: httpx.Client, control: httpx.Client
) -> None:
    sim.sms.update_faults({"retry_after_seconds": 7})
    script(control, "refused", "rate_limit", "insufficient_credit")
    limited = send(api, "refused")
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
    broke = send(api, "refused")
    assert broke.status_code == 402
    assert broke.json()["error"]["code"] == "INSUFFICIENT_CREDIT"
    assert lookup(api, "refused") == []
    totals = ledger(control)["totals"]
    assert totals["faults"] == {"rate_limit": 1, "insufficient_credit": 1}
    assert (totals["sends"], totals["duplicate_sends"], totals["blind_resends"]) == (0, [], [])


def test_timeout_sends_then_holds_the_answer(api: httpx.Client, control: httpx.Client) -> None:
    script(control, "slow", "timeout")
    with pytest.raises(httpx.ReadTimeout):
        send(api, "slow", timeout=0.2)
    assert len(lookup(api, "slow")) == 1


def test_timeout_answers_late(api: httpx.Client, control: httpx.Client) -> None:
    script(control, "late", "timeout")
    started = time.monotonic()
    response = send(api, "late")
    assert response.status_code == 201
    assert time.monotonic() - started >= 0.5


def test_lost_sends_then_drops(api: httpx.Client, control: httpx.Client) -> None:
    script(control, "lost", "lost")
    with pytest.raises(httpx.RemoteProtocolError):
        send(api, "lost")
    assert len(lookup(api, "lost")) == 1
    assert ledger(control)["totals"]["faults"] == {"lost": 1}


def test_garbage_sends_then_answers_nonsense(api: httpx.Client, control: httpx.Client) -> None:
    script(control, "garbage", "garbage")
    response = send(api, "garbage")
    assert response.status_code == 201
    with pytest.raises(ValueError):  # noqa: PT011 - json's error is a ValueError
        response.json()
    assert len(lookup(api, "garbage")) == 1


def test_random_faults_by_rate(sim: Simulator, api: httpx.Client, control: httpx.Client) -> None:
    sim.sms.update_faults({"error_rate": 1.0})
    assert send(api, "dice").status_code == 500
    sim.sms.update_faults({"error_rate": 0.0, "rate_limit_rate": 1.0})
    assert send(api, "dice").status_code == 429
    assert ledger(control)["totals"]["faults"] == {"error": 1, "rate_limit": 1}


def test_outage(api: httpx.Client, control: httpx.Client) -> None:
    assert control.post("/down", json={"seconds": 30}).status_code == 200
    assert send(api, "down").status_code == 503
    assert api.get("/messages", params={"clientReference": "down"}).status_code == 503
    assert control.post("/down", json={"seconds": 0}).status_code == 200
    assert send(api, "down").status_code == 201
    totals = ledger(control)["totals"]
    assert (totals["sends"], totals["faults"]) == (1, {"outage": 2})


def test_control_routes_validate(control: httpx.Client) -> None:
    assert control.post("/faults", json={"error_rate": 2}).status_code == 400
    assert control.post("/faults", json={"nope": 1}).status_code == 400
    assert control.post("/down", json={"seconds": -1}).status_code == 400
    bad_script = {"reference": "r", "responses": ["explode"]}
    assert control.post("/script", json=bad_script).status_code == 400
    assert control.get("/faults").json()["delivery_seconds"] == DELIVERY_S
    assert control.get("/health").json() == {"ok": True}


def test_faults_are_kept_apart_from_the_vendors(sim: Simulator, control: httpx.Client) -> None:
    assert control.post("/faults", json={"error_rate": 1.0}).status_code == 200
    assert sim.chaos.config.error_rate == 0.0
    assert sim.aggregator.chaos.config.error_rate == 0.0


def test_reset_clears_books_scripts_and_outage(
    sim: Simulator, api: httpx.Client, control: httpx.Client
) -> None:
    send(api, "before")
    script(control, "scripted", "error")
    control.post("/down", json={"seconds": 30})
    assert control.post("/reset").status_code == 200
    assert ledger(control)["references"] == {}
    assert send(api, "scripted").status_code == 201
    assert sim.sms.chaos.config.delivery_seconds == DELIVERY_S


# -- what the ledger counts ---------------------------------------------------------


def test_the_provider_does_not_deduplicate(api: httpx.Client, control: httpx.Client) -> None:
    first, second = send(api, "twice"), send(api, "twice")
    assert first.json()["messageId"] != second.json()["messageId"]
    assert len(lookup(api, "twice")) == 2
    send(api, "once")
    snapshot = ledger(control)
    assert snapshot["references"]["twice"]["sends"] == 2
    assert len(snapshot["references"]["twice"]["message_ids"]) == 2
    assert snapshot["totals"]["duplicate_sends"] == ["twice"]
    assert snapshot["totals"]["sends"] == 3
    assert snapshot["totals"]["blind_resends"] == []


@pytest.mark.parametrize("fault", ["timeout", "lost", "garbage"])
def test_resend_after_an_unreadable_answer_is_blind(
    api: httpx.Client, control: httpx.Client, fault: str
) -> None:
    script(control, "blind", fault)
    with contextlib.suppress(httpx.TransportError):  # the timeout and the lost answer
        send(api, "blind", timeout=0.2)
    assert send(api, "blind").status_code == 201
    totals = ledger(control)["totals"]
    assert totals["blind_resends"] == ["blind"]
    assert totals["duplicate_sends"] == ["blind"]


def test_lookup_between_makes_a_resend_not_blind(api: httpx.Client, control: httpx.Client) -> None:
    script(control, "careful", "lost")
    with pytest.raises(httpx.RemoteProtocolError):
        send(api, "careful")
    lookup(api, "careful")
    send(api, "careful")
    totals = ledger(control)["totals"]
    assert totals["blind_resends"] == []
    assert totals["lookups"] == 1
    assert totals["duplicate_sends"] == ["careful"]  # the lookup said it was sent already


def test_resend_after_a_refusal_is_neither_blind_nor_duplicate(
    api: httpx.Client, control: httpx.Client
) -> None:
    script(control, "retry", "error", "rate_limit")
    assert send(api, "retry").status_code == 500
    assert send(api, "retry").status_code == 429
    assert send(api, "retry").status_code == 201
    totals = ledger(control)["totals"]
    assert (totals["sends"], totals["duplicate_sends"], totals["blind_resends"]) == (1, [], [])


# -- command line -------------------------------------------------------------------


def test_environment_configures_the_provider() -> None:
    env = {
        "SIM_SMS_CLIENT_ID": "env-id",
        "SIM_SMS_CLIENT_SECRET": "env-secret",
        "SIM_SMS_ERROR_RATE": "0.25",
        "SIM_SMS_DELIVERY_SECONDS": "0.5",
        "SIM_SMS_UNDELIVERABLE_SUFFIX": "1111",
        "SIM_ERROR_RATE": "0.5",
        "AT_ISHARE_API_KEY": KEY,
        "AT_ISHARE_API_SECRET": SECRET,
    }
    simulator = simulator_from_args(["--port", "0"], env)
    try:
        assert (simulator.sms.client_id, simulator.sms.client_secret) == ("env-id", "env-secret")
        config = simulator.sms.chaos.config
        assert (config.error_rate, config.delivery_seconds) == (0.25, 0.5)
        assert config.undeliverable_suffix == "1111"
        assert simulator.chaos.config.error_rate == 0.5
    finally:
        simulator.stop()


def test_environment_falls_back_to_the_fleet_credentials_then_defaults() -> None:
    base = {"AT_ISHARE_API_KEY": KEY, "AT_ISHARE_API_SECRET": SECRET}
    fleet = {**base, "SMS_CLIENT_ID": "fleet-id", "SMS_CLIENT_SECRET": "fleet-secret"}
    simulator = simulator_from_args(["--port", "0"], fleet)
    try:
        assert (simulator.sms.client_id, simulator.sms.client_secret) == (
            "fleet-id",
            "fleet-secret",
        )
    finally:
        simulator.stop()
    simulator = simulator_from_args(["--port", "0"], base)
    try:
        assert simulator.sms.client_id == DEFAULT_SMS_CLIENT_ID
    finally:
        simulator.stop()


def test_invalid_environment_is_a_usage_error() -> None:
    env = {"SIM_SMS_ERROR_RATE": "2", "AT_ISHARE_API_KEY": KEY, "AT_ISHARE_API_SECRET": SECRET}
    with pytest.raises(SystemExit):
        simulator_from_args(["--port", "0"], env)
