"""The platform webhook client against the simulated receiver over real HTTP on a free port:
a signed event is recorded, a redelivery is acknowledged as one, and a wrong secret, a
receiver's fault or no receiver at all is a PostResult that says why (one try; the outbox
retries). And `sign` / `verify`, the one rule for the signature, which the receiver uses too."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fulfillment.dev.simulator.faults import FaultConfig
from fulfillment.dev.simulator.platform import PlatformFaults, verify_signature
from fulfillment.dev.simulator.server import Simulator
from fulfillment.notify.platform_webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    PlatformWebhookClient,
    PostResult,
    sign,
    verify,
)

pytestmark = pytest.mark.timeout(20)

KEY, SECRET = "test-key", "test-secret"
PLATFORM_SECRET = "platform-secret"
TIMEOUT_S = 0.3


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(
        api_key=KEY,
        api_secret=SECRET,
        faults=FaultConfig(),
        seed=13,
        platform_secret=PLATFORM_SECRET,
        platform_faults=PlatformFaults(timeout_seconds=1.0),
    )
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: Simulator) -> Iterator[PlatformWebhookClient]:
    with PlatformWebhookClient(sim.platform_url, PLATFORM_SECRET, timeout_s=TIMEOUT_S) as webhook:
        yield webhook


def event(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "order.fulfilled",
        "order_id": "order-1",
        "network": "at-ishare",
        "occurred_at": "2024-05-01T10:00:00Z",
        "attempts": 1,
        "transaction_id": "ATX-1",
        "refund_advised": False,
    }
    return {**body, **fields}


def ledger(sim: Simulator) -> dict[str, Any]:
    snapshot: dict[str, Any] = sim.platform.ledger.snapshot()
    return snapshot


def script(sim: Simulator, event_id: str, *responses: str) -> None:
    sim.platform.chaos.script_from_json(
        {"event_id": event_id, "responses": list(responses)}, "event_id"
    )


# -- sign and verify ----------------------------------------------------------------------


def test_sign_is_the_contracts_hmac() -> None:
    body = b'{"event_id": "e"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", 1_700_000_000, body) == expected
    assert sign("s3cret", "1700000000", body) == expected


def test_verify_round_trip_and_tolerance() -> None:
    body, now = '{"event_id": "é"}'.encode(), 1_700_000_000.0
    stamp = str(int(now))
    good = sign("s3cret", stamp, body)
    assert verify("s3cret", stamp, body, good, now=now)
    assert verify("s3cret", stamp, body, good, now=now + 300)
    assert verify("s3cret", stamp, body, good, now=now - 300)
    assert not verify("s3cret", stamp, body, good, now=now + 300.5)
    assert not verify("s3cret", stamp, body, good, now=now - 301)
    assert verify("s3cret", stamp, body, good, now=now + 59, tolerance_s=60)
    assert not verify("s3cret", stamp, body, good, now=now + 61, tolerance_s=60)
    assert not verify("other", stamp, body, good, now=now)
    assert not verify("s3cret", stamp, body[:-1], good, now=now)
    assert not verify("s3cret", str(int(now) + 1), body, good, now=now)
    assert not verify("s3cret", stamp, body, good.upper(), now=now)
    assert not verify("s3cret", stamp, body, "", now=now)
    assert not verify("s3cret", stamp, body, "é" * 64, now=now)


@pytest.mark.parametrize(
    "stamp",
    [
        pytest.param("", id="empty"),
        pytest.param(" 1700000000", id="space"),
        pytest.param("-1", id="negative"),
        pytest.param("+1700000000", id="plus"),
        pytest.param("1.7e9", id="float"),
        pytest.param("1700000000.0", id="decimal"),
        pytest.param("\u0661\u0667" + "\u0660" * 8, id="arabic-indic-digits"),
        pytest.param("9" * 5000, id="too-long-for-int"),
    ],
)
def test_verify_refuses_a_bad_timestamp(stamp: str) -> None:
    body = b"{}"
    assert not verify("s3cret", stamp, body, sign("s3cret", stamp, body), now=1_700_000_000.0)


def test_the_receiver_verifies_with_the_same_rule() -> None:
    body, now = b"{}", 1_700_000_000.0
    good = sign("s3cret", int(now), body)
    assert verify_signature("s3cret", str(int(now)), body, good, now=now)
    assert not verify_signature("s3cret", str(int(now)), body, good, now=now + 30, tolerance_s=10)


# -- posting ----------------------------------------------------------------------------------


def test_a_signed_event_is_recorded(sim: Simulator, client: PlatformWebhookClient) -> None:
    body = event(type="order.failed", refund_advised=True, reason="INVALID_PHONE")
    result = client.post(json.dumps(body))
    assert result == PostResult(delivered=True, http_status=200, error=None)
    snapshot = ledger(sim)
    assert snapshot["events"][body["event_id"]]["type"] == "order.failed"
    assert snapshot["events"][body["event_id"]]["refund_advised"] is True
    totals = snapshot["totals"]
    assert (totals["received"], totals["bad_signatures"], totals["malformed"]) == (1, 0, 0)


def test_the_body_goes_byte_for_byte_and_signed_with_the_clock() -> None:
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    body = '{ "event_id":"e",  "reason": "café" }'
    with PlatformWebhookClient(
        "https://platform.example/events",
        PLATFORM_SECRET,
        transport=httpx.MockTransport(receive),
        clock=lambda: 1_700_000_000.9,
    ) as client:
        assert client.post(body) == PostResult(delivered=True, http_status=204, error=None)
    [request] = seen
    assert request.method == "POST"
    assert request.content == body.encode()
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers[TIMESTAMP_HEADER] == "1700000000"
    assert request.headers[SIGNATURE_HEADER] == sign(PLATFORM_SECRET, 1_700_000_000, body.encode())


def test_the_same_body_twice_is_acknowledged_as_a_redelivery(
    sim: Simulator, client: PlatformWebhookClient
) -> None:
    body = json.dumps(event())
    assert client.post(body).delivered
    assert client.post(body).delivered
    snapshot = ledger(sim)
    [entry] = snapshot["events"].values()
    assert entry["receipts"] == 2
    totals = snapshot["totals"]
    assert (totals["distinct"], totals["redeliveries"], totals["conflicting_bodies"]) == (1, 1, [])


def test_a_wrong_secret_is_not_delivered(sim: Simulator) -> None:
    with PlatformWebhookClient(sim.platform_url, "wrong-secret", timeout_s=TIMEOUT_S) as client:
        result = client.post(json.dumps(event()))
    assert result == PostResult(delivered=False, http_status=401, error="HTTP 401 BAD_SIGNATURE")
    totals = ledger(sim)["totals"]
    assert (totals["bad_signatures"], totals["received"]) == (1, 0)


def test_a_stale_clock_is_not_delivered(sim: Simulator) -> None:
    with PlatformWebhookClient(
        sim.platform_url, PLATFORM_SECRET, timeout_s=TIMEOUT_S, clock=lambda: 1_000_000_000.0
    ) as client:
        result = client.post(json.dumps(event()))
    assert (result.delivered, result.http_status) == (False, 401)


def test_a_body_that_is_not_the_event_is_not_delivered(
    sim: Simulator, client: PlatformWebhookClient
) -> None:
    result = client.post('{"event_id": "not-a-uuid"}')
    assert result == PostResult(delivered=False, http_status=400, error="HTTP 400 VALIDATION_ERROR")
    assert ledger(sim)["totals"]["malformed"] == 1


def test_a_receiver_error_is_not_delivered_and_the_retry_is(
    sim: Simulator, client: PlatformWebhookClient
) -> None:
    body = event()
    script(sim, body["event_id"], "error")
    result = client.post(json.dumps(body))
    assert result == PostResult(delivered=False, http_status=500, error="HTTP 500 INTERNAL_ERROR")
    assert client.post(json.dumps(body)).delivered
    assert ledger(sim)["totals"]["received"] == 1


def test_a_timeout_is_not_delivered(sim: Simulator, client: PlatformWebhookClient) -> None:
    body = json.dumps(event())
    script(sim, json.loads(body)["event_id"], "timeout")
    result = client.post(body)
    assert (result.delivered, result.http_status) == (False, None)
    assert result.error is not None
    assert result.error.startswith("ReadTimeout")
    assert client.post(body).delivered  # recorded the first time: this one is a redelivery
    assert ledger(sim)["totals"]["redeliveries"] == 1


def test_a_lost_answer_is_not_delivered(sim: Simulator, client: PlatformWebhookClient) -> None:
    body = json.dumps(event())
    script(sim, json.loads(body)["event_id"], "lost")
    result = client.post(body)
    assert (result.delivered, result.http_status) == (False, None)
    assert result.error is not None
    assert result.error.startswith("RemoteProtocolError")


def test_an_outage_is_not_delivered(sim: Simulator, client: PlatformWebhookClient) -> None:
    sim.platform.chaos.down_from_json({"seconds": 30})
    result = client.post(json.dumps(event()))
    assert result == PostResult(
        delivered=False, http_status=503, error="HTTP 503 SERVICE_UNAVAILABLE"
    )


def test_no_receiver_is_not_delivered() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/platform/events"
    with PlatformWebhookClient(url, PLATFORM_SECRET, timeout_s=TIMEOUT_S) as client:
        result = client.post(json.dumps(event()))
    assert (result.delivered, result.http_status) == (False, None)
    assert result.error is not None
    assert result.error.startswith("ConnectError")
    assert len(result.error) <= 300


def test_a_closed_client_is_not_delivered(sim: Simulator) -> None:
    client = PlatformWebhookClient(sim.platform_url, PLATFORM_SECRET, timeout_s=TIMEOUT_S)
    client.close()
    result = client.post(json.dumps(event()))
    assert (result.delivered, result.http_status) == (False, None)
    assert ledger(sim)["totals"]["received"] == 0


def test_errors_and_repr_never_show_the_secret() -> None:
    secret = "hunter2-secret"

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(418, json={"error": {"code": f"NO {secret}"}})

    url = "https://user:pw@platform.example/events?token=t"
    with PlatformWebhookClient(url, secret, transport=httpx.MockTransport(echo)) as client:
        result = client.post("{}")
        shown = repr(client)
    assert result.error == "HTTP 418 NO ***"
    assert secret not in shown
    assert "pw" not in shown
    assert "token" not in shown


def test_a_long_refusal_is_clipped() -> None:
    def chatty(_: httpx.Request) -> httpx.Response:
        return httpx.Response(500, content=b"x" * 200_000)

    transport = httpx.MockTransport(chatty)
    with PlatformWebhookClient("https://p.example/e", "s", transport=transport) as client:
        result = client.post("{}")
    assert result == PostResult(delivered=False, http_status=500, error="HTTP 500")
