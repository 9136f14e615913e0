"""The aggregator side of the simulator, over real HTTP on a free port: contract, idempotency,
progress, faults kept apart from AT-iShare's, ledger, signed callbacks, command line."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from fulfillment.dev.simulator.aggregator import order_status
from fulfillment.dev.simulator.faults import FaultConfig
from fulfillment.dev.simulator.ledger import Ending, Ledger, TxStatus
from fulfillment.dev.simulator.server import (
    DEFAULT_AGGREGATOR_TOKEN,
    Simulator,
    simulator_from_args,
)
from fulfillment.vendors import aggregator_signing
from fulfillment.vendors.atishare_signing import signed_headers as atishare_headers

TOKEN = "agg-token"
KEY, SECRET = "test-key", "test-secret"
RECIPIENT = "0241234567"
ORDERS = "/v1/orders"
WEBHOOK_SECRET = "hook-secret"


def aggregator_faults(**changes: Any) -> FaultConfig:
    return FaultConfig(pending_seconds=0.3, timeout_seconds=0.5, balance=1000.0, **changes)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(
        api_key=KEY,
        api_secret=SECRET,
        faults=FaultConfig(balance=1000.0),
        seed=7,
        aggregator_token=TOKEN,
        aggregator_faults=aggregator_faults(),
    )
    simulator.start()
    yield simulator
    simulator.stop()


def aggregator_client(sim: Simulator) -> httpx.Client:
    return httpx.Client(base_url=sim.aggregator_url.removesuffix("/v1"), timeout=2.0)


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with aggregator_client(sim) as http:
        yield http


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def order_body(request_id: str, **fields: Any) -> dict[str, Any]:
    body = {"request_id": request_id, "network": "MTN", "recipient": RECIPIENT, "volume_mb": 2048}
    return {**body, **fields}


def order(
    client: httpx.Client,
    request_id: str,
    /,
    *,
    key: str | None = None,
    token: str = TOKEN,
    timeout: float = 2.0,
    **fields: Any,
) -> httpx.Response:
    headers = {**auth(token), "Idempotency-Key": key or f"{request_id}:1"}
    body = order_body(request_id, **fields)
    return client.post(ORDERS, json=body, headers=headers, timeout=timeout)


def lookup(client: httpx.Client, request_id: str) -> httpx.Response:
    return client.get(f"{ORDERS}/{request_id}", headers=auth())


def script(client: httpx.Client, request_id: str, **scripts: list[str]) -> None:
    response = client.post("/_sim/script", json={"request_id": request_id, **scripts})
    assert response.status_code == 200, response.text


def totals(client: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/_sim/ledger").json()["totals"]
    return result


def atishare_purchase(sim: Simulator, reference: str) -> httpx.Response:
    payload = {"reference": reference, "phone_number": "+233241234567", "size_gb": 2}
    body = json.dumps({**payload, "network": "at-ishare"}).encode()
    path = "/v1/data/purchase"
    headers = atishare_headers(KEY, SECRET, "POST", path, body, time.time())
    return httpx.post(sim.url.removesuffix("/v1") + path, content=body, headers=headers)


def wait_for(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# -- contract ---------------------------------------------------------------------


def test_urls_and_default_token() -> None:
    simulator = Simulator(api_key=KEY, api_secret=SECRET, faults=FaultConfig())
    try:
        assert simulator.url.endswith("/v1")
        assert simulator.aggregator_url == simulator.url.removesuffix("/v1") + "/aggregator/v1"
        assert simulator.aggregator.token == DEFAULT_AGGREGATOR_TOKEN
        assert simulator.aggregator.chaos.config == FaultConfig()
    finally:
        simulator.stop()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param(auth("wrong"), id="wrong-token"),
        pytest.param({"Authorization": TOKEN}, id="no-scheme"),
    ],
)
def test_bad_token_is_unauthenticated(
    sim: Simulator, client: httpx.Client, headers: dict[str, str]
) -> None:
    requests = [
        client.post(ORDERS, json=order_body("r"), headers={**headers, "Idempotency-Key": "r:1"}),
        client.get(f"{ORDERS}/r", headers=headers),
        client.get("/v1/wallet", headers=headers),
    ]
    for response in requests:
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHENTICATED"
    assert sim.aggregator.ledger.snapshot()["totals"]["purchase_requests"] == 0


def test_an_order_is_delivered_and_paid_for(sim: Simulator, client: httpx.Client) -> None:
    response = order(client, "o1")
    assert response.status_code == 201
    data = response.json()["data"]
    assert (data["request_id"], data["status"]) == ("o1", "delivered")
    assert data["order_ref"].startswith("AGG-")
    assert sim.aggregator.ledger.deliveries("o1") == 1
    assert lookup(client, "o1").json() == {"data": data}
    wallet = client.get("/v1/wallet", headers=auth()).json()
    assert wallet == {"data": {"balance": "990.00", "currency": "GHS"}}  # 2 GB at 5 GHS


def test_status_of_an_unknown_request_is_404(client: httpx.Client) -> None:
    response = lookup(client, "never")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_a_request_id_taken_is_409_with_the_existing_order(
    sim: Simulator, client: httpx.Client
) -> None:
    first = order(client, "o1").json()["data"]
    response = order(client, "o1", key="o1:2")
    assert response.status_code == 409
    body = response.json()
    assert body["error"]["code"] == "DUPLICATE_REQUEST"
    assert body["data"] == first
    assert sim.aggregator.ledger.deliveries("o1") == 1


def test_a_repeat_of_one_key_gets_the_first_answer(sim: Simulator, client: httpx.Client) -> None:
    first = order(client, "o1")
    again = order(client, "o1")
    assert (again.status_code, again.content) == (first.status_code, first.content)
    refused = order(client, "bad", recipient="123")
    assert refused.status_code == 422
    sim.aggregator.update_faults({"error_rate": 1.0})  # a repeat does not reach the dice
    repeat = order(client, "bad", recipient="123")
    assert (repeat.status_code, repeat.content) == (422, refused.content)
    snapshot = client.get("/_sim/ledger").json()
    assert snapshot["idempotency"] == {"keys": 2, "replays": 2}
    assert snapshot["references"]["o1"]["deliveries"] == 1


def test_a_key_belongs_to_its_request(client: httpx.Client) -> None:
    assert order(client, "o1", key="k").status_code == 201
    response = order(client, "o2", key="k")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert lookup(client, "o2").status_code == 404


def test_a_purchase_needs_a_key_and_a_request_id(sim: Simulator, client: httpx.Client) -> None:
    no_key = client.post(ORDERS, json=order_body("o1"), headers=auth())
    assert no_key.status_code == 400
    assert no_key.json()["error"]["code"] == "VALIDATION_ERROR"
    for body in (["a list"], {"request_id": ""}, {"request_id": 5}):
        headers = {**auth(), "Idempotency-Key": "x:1"}
        response = client.post(ORDERS, json=body, headers=headers)
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert sim.aggregator.ledger.snapshot()["references"] == {}


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"recipient": "+233241234567"}, "INVALID_RECIPIENT"),
        ({"recipient": "024123456"}, "INVALID_RECIPIENT"),
        ({"recipient": "1241234567"}, "INVALID_RECIPIENT"),
        ({"recipient": None}, "INVALID_RECIPIENT"),
        ({"network": "AT_ISHARE"}, "NETWORK_NOT_SUPPORTED"),
        ({"network": ["MTN"]}, "NETWORK_NOT_SUPPORTED"),
        ({"volume_mb": 0}, "INVALID_VOLUME"),
        ({"volume_mb": 1.5}, "INVALID_VOLUME"),
        ({"volume_mb": "2048"}, "INVALID_VOLUME"),
        ({"volume_mb": True}, "INVALID_VOLUME"),
    ],
)
def test_invalid_orders_are_422(
    sim: Simulator, client: httpx.Client, fields: dict[str, Any], code: str
) -> None:
    response = order(client, "bad", **fields)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert sim.aggregator.ledger.snapshot()["totals"]["deliveries"] == 0
    failed = lookup(client, "bad").json()["data"]
    assert (failed["status"], failed["failure_reason"]) == ("failed", code)


def test_configured_refused_recipients(sim: Simulator, client: httpx.Client) -> None:
    sim.aggregator.update_faults({"invalid_phones": ["0209990001"]})
    response = client.post("/_sim/faults", json={"invalid_phone_suffix": "0000"})
    assert response.json()["invalid_phone_suffix"] == "0000"
    for recipient in ("0209990001", "0201110000"):
        response = order(client, f"r-{recipient}", recipient=recipient)
        assert (response.status_code, response.json()["error"]["code"]) == (
            422,
            "INVALID_RECIPIENT",
        )
    assert order(client, "fine", recipient="0209990002").status_code == 201
    assert sim.chaos.config.invalid_phones == frozenset()  # AT-iShare's stay as they were


def test_low_wallet_is_402(sim: Simulator, client: httpx.Client) -> None:
    assert order(client, "a", volume_mb=102_400).status_code == 201  # 100 GB: 500 GHS
    assert order(client, "b", volume_mb=102_400).status_code == 201
    response = order(client, "c", volume_mb=500)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "LOW_WALLET"
    assert sim.aggregator.ledger.deliveries("c") == 0
    assert client.get("/v1/wallet", headers=auth()).json()["data"]["balance"] == "0.00"
    sim.aggregator.update_faults({"balance": 10})
    assert order(client, "c", key="c:2", volume_mb=500).status_code == 201  # a failed one
    wallet = client.get("/v1/wallet", headers=auth()).json()["data"]["balance"]
    assert wallet == "7.56"  # 10 - 500/1024*5


def test_rate_limited_with_retry_after(client: httpx.Client) -> None:
    script(client, "busy", responses=["rate_limit"])
    response = order(client, "busy")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "TOO_MANY_REQUESTS"
    assert lookup(client, "busy").status_code == 404
    assert order(client, "busy").status_code == 201  # nothing kept for the key: answered afresh


# -- progress over time -----------------------------------------------------------


def test_a_queued_order_is_processed_then_delivered(sim: Simulator, client: httpx.Client) -> None:
    script(client, "slow", responses=["pending"])
    response = order(client, "slow")
    assert (response.status_code, response.json()["data"]["status"]) == (201, "queued")
    assert lookup(client, "slow").json()["data"]["status"] == "queued"
    assert order(client, "slow", key="slow:2").status_code == 409
    time.sleep(0.18)
    assert lookup(client, "slow").json()["data"]["status"] == "processing"
    assert sim.aggregator.ledger.deliveries("slow") == 0
    time.sleep(0.17)
    assert lookup(client, "slow").json()["data"]["status"] == "delivered"
    assert sim.aggregator.ledger.deliveries("slow") == 1


@pytest.mark.parametrize(
    ("fault", "status"),
    [("pending_then_failed", "failed"), ("pending_then_refunded", "refunded")],
)
def test_after_failed_or_refunded_the_request_id_can_be_bought_again(
    sim: Simulator, client: httpx.Client, fault: str, status: str
) -> None:
    script(client, "o1", responses=[fault, "ok"])
    first = order(client, "o1").json()["data"]
    assert first["status"] == "queued"
    time.sleep(0.35)
    ended = lookup(client, "o1").json()["data"]
    assert ended["status"] == status
    assert ended["failure_reason"]
    assert client.get("/v1/wallet", headers=auth()).json()["data"]["balance"] == "1000.00"
    again = order(client, "o1", key="o1:2")
    assert again.status_code == 201
    assert again.json()["data"]["order_ref"] != first["order_ref"]
    assert sim.aggregator.ledger.deliveries("o1") == 1
    assert sim.aggregator.ledger.blind_repurchases() == 0


# -- faults -------------------------------------------------------------------------


def test_transient_faults_deliver_nothing(sim: Simulator, client: httpx.Client) -> None:
    script(client, "e", responses=["error"])
    assert order(client, "e").status_code == 503
    script(client, "g", responses=["garbage"])
    assert order(client, "g").text == "<html>not json"
    script(client, "t", responses=["timeout"])
    with pytest.raises(httpx.ReadTimeout):
        order(client, "t", timeout=0.2)
    assert [sim.aggregator.ledger.deliveries(r) for r in "egt"] == [0, 0, 0]
    assert lookup(client, "e").json()["data"]["status"] == "failed"
    assert totals(client)["faults"] == {"error": 1, "garbage": 1, "timeout": 1}


def test_a_dropped_answer_is_given_back_to_the_same_key(
    sim: Simulator, client: httpx.Client
) -> None:
    script(client, "lost", responses=["drop_after_delivery"])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        order(client, "lost")
    repeat = order(client, "lost")
    assert (repeat.status_code, repeat.json()["data"]["status"]) == (201, "delivered")
    assert sim.aggregator.ledger.deliveries("lost") == 1
    assert sim.aggregator.ledger.blind_repurchases() == 0


def test_outage_and_slow_answers(sim: Simulator, client: httpx.Client) -> None:
    assert client.post("/_sim/down", json={"seconds": 0.3}).status_code == 200
    assert order(client, "during").status_code == 503
    assert client.get("/v1/wallet", headers=auth()).status_code == 503
    assert client.get("/_sim/health").json() == {"ok": True}
    time.sleep(0.35)
    assert order(client, "during").status_code == 201
    sim.aggregator.update_faults({"latency_ms": 300})
    with pytest.raises(httpx.ReadTimeout):
        order(client, "late", timeout=0.1)


def test_faults_of_one_vendor_leave_the_other_alone(sim: Simulator, client: httpx.Client) -> None:
    sim.aggregator.update_faults({"error_rate": 1.0})
    assert order(client, "x").status_code == 503
    assert atishare_purchase(sim, "x").status_code == 200
    sim.aggregator.update_faults({"error_rate": 0.0})
    sim.update_faults({"error_rate": 1.0})
    assert atishare_purchase(sim, "y").status_code == 503
    assert order(client, "y").status_code == 201
    sim.update_faults({"error_rate": 0.0})
    with httpx.Client(base_url=sim.url.removesuffix("/v1")) as at_ishare:
        assert at_ishare.post("/_sim/down", json={"seconds": 5}).status_code == 200
        assert order(client, "z").status_code == 201
        assert atishare_purchase(sim, "z").status_code == 503
        at_ishare.post("/_sim/down", json={"seconds": 0})
        at_ishare.post("/_sim/script", json={"reference": "w", "responses": ["error"]})
    assert order(client, "w").status_code == 201
    assert (sim.ledger.deliveries("x"), sim.aggregator.ledger.deliveries("x")) == (1, 0)
    assert (sim.ledger.deliveries("y"), sim.aggregator.ledger.deliveries("y")) == (0, 1)
    assert sim.ledger.balance == 990.0
    assert sim.aggregator.ledger.balance == 970.0  # y, z and w
    sim.aggregator.reset()
    assert sim.aggregator.ledger.snapshot()["references"] == {}
    assert sim.ledger.deliveries("x") == 1


# -- ledger: at most one delivery, and blind re-purchases -------------------------------


def test_racing_purchases_and_repeats_deliver_once(sim: Simulator, client: httpx.Client) -> None:
    barrier = threading.Barrier(20)
    codes: list[int] = []
    lock = threading.Lock()

    def buy(n: int) -> None:
        barrier.wait()
        code = order(client, "race", key=f"race:{n % 5}").status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=buy, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes).count(201) == 4  # the first key's answer, given to its 4 requests
    assert sorted(codes).count(409) == 16
    ledger = sim.aggregator.ledger
    assert ledger.deliveries("race") == 1
    assert ledger.double_deliveries() == []
    assert totals(client)["double_deliveries"] == []
    assert ledger.blind_repurchases() == 0


def test_a_new_key_after_a_5xx_without_a_lookup_is_blind(
    sim: Simulator, client: httpx.Client
) -> None:
    script(client, "blind", responses=["error", "ok"])
    assert order(client, "blind").status_code == 503
    assert order(client, "blind", key="blind:2").status_code == 201
    assert sim.aggregator.ledger.blind_repurchases("blind") == 1
    assert (totals(client)["blind_repurchases"], totals(client)["blind_repurchase_references"]) == (
        1,
        ["blind"],
    )
    assert sim.ledger.blind_repurchases() == 0  # AT-iShare's ledger saw nothing


def test_a_lookup_between_or_the_same_key_is_not_blind(
    sim: Simulator, client: httpx.Client
) -> None:
    script(client, "looked", responses=["error", "ok"])
    assert order(client, "looked").status_code == 503
    assert lookup(client, "looked").json()["data"]["status"] == "failed"
    assert order(client, "looked", key="looked:2").status_code == 201
    script(client, "same", responses=["error", "ok"])
    assert order(client, "same").status_code == 503
    assert order(client, "same").status_code == 201  # a repeat of the attempt: nothing was kept
    assert sim.aggregator.ledger.blind_repurchases() == 0


def test_a_new_key_after_a_lost_answer_is_blind(sim: Simulator, client: httpx.Client) -> None:
    script(client, "lost", responses=["drop_after_delivery"])
    with contextlib.suppress(httpx.HTTPError):
        order(client, "lost")
    assert order(client, "lost", key="lost:2").status_code == 409
    assert sim.aggregator.ledger.blind_repurchases("lost") == 1
    assert sim.aggregator.ledger.deliveries("lost") == 1


def test_in_an_outage_only_a_new_key_is_blind(sim: Simulator, client: httpx.Client) -> None:
    client.post("/_sim/down", json={"seconds": 0.3})
    assert order(client, "down").status_code == 503
    assert order(client, "down").status_code == 503  # the same key: not blind
    assert order(client, "down", key="down:2").status_code == 503  # blind
    time.sleep(0.35)
    assert order(client, "down", key="down:2").status_code == 201
    assert sim.aggregator.ledger.blind_repurchases("down") == 1


def test_reset_forgets_keys_and_scripts(sim: Simulator, client: httpx.Client) -> None:
    order(client, "one")
    script(client, "two", responses=["error"])
    assert client.post("/_sim/reset").json() == {"ok": True}
    snapshot = client.get("/_sim/ledger").json()
    assert (snapshot["references"], snapshot["idempotency"]) == ({}, {"keys": 0, "replays": 0})
    assert order(client, "two").status_code == 201
    assert client.get("/_sim/inflight").json() == {"purchases": []}
    assert client.delete("/_sim/ledger").status_code == 405
    assert client.get("/_sim/nowhere").status_code == 404
    assert client.get("/v1/nowhere", headers=auth()).status_code == 404


def test_ledger_settles_endings_and_names_them() -> None:
    clock = [0.0]
    ledger = Ledger(balance=100.0, clock=lambda: clock[0], describe=order_status)
    ledger.purchase("r", 2, pending_for=1.0, ending=Ending.REFUNDED)
    assert ledger.balance == 90.0
    assert ledger.snapshot()["references"]["r"]["status"] == "queued"
    clock[0] = 0.5
    assert ledger.snapshot()["references"]["r"]["status"] == "processing"
    clock[0] = 1.0
    tx = ledger.transaction("r")
    assert tx is not None
    assert (tx.status, tx.refunded, tx.error_code) == (TxStatus.FAILED, True, "REFUNDED")
    assert ledger.describe(tx) == "refunded"
    assert (ledger.balance, ledger.deliveries("r")) == (100.0, 0)


# -- signed callbacks ---------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    """A tiny webhook receiver: keeps every (headers, body) it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/webhooks/aggregator"


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def test_callbacks_are_signed_and_carry_the_final_status(receiver: Receiver) -> None:
    simulator = Simulator(
        api_key=KEY,
        api_secret=SECRET,
        faults=FaultConfig(),
        aggregator_token=TOKEN,
        aggregator_faults=aggregator_faults(),
        aggregator_webhook_url=receiver.url,
        aggregator_webhook_secret=WEBHOOK_SECRET,
    )
    with simulator, aggregator_client(simulator) as client:
        order(client, "now")
        script(client, "later", responses=["pending"])
        script(client, "refused", responses=["pending_then_refunded"])
        order(client, "later")
        order(client, "refused")
        order(client, "bad", recipient="1")  # refused at once: no order, no callback
        wait_for(lambda: len(receiver.received) == 3)
        bodies = {}
        for headers, body in receiver.received:
            assert aggregator_signing.verify(
                WEBHOOK_SECRET,
                timestamp=headers.get(aggregator_signing.TIMESTAMP_HEADER),
                signature=headers.get(aggregator_signing.SIGNATURE_HEADER),
                body=body,
                now=time.time(),
            )
            assert not aggregator_signing.verify(
                "other-secret",
                timestamp=headers.get(aggregator_signing.TIMESTAMP_HEADER),
                signature=headers.get(aggregator_signing.SIGNATURE_HEADER),
                body=body,
                now=time.time(),
            )
            data = json.loads(body)["data"]
            bodies[data["request_id"]] = json.loads(body)
        assert {r: b["data"]["status"] for r, b in bodies.items()} == {
            "now": "delivered",
            "later": "delivered",
            "refused": "refunded",
        }
        for request_id, body in bodies.items():
            assert lookup(client, request_id).json() == body
        stats = client.get("/_sim/callbacks").json()
        assert (stats["sent"], stats["failed"], stats["url"]) == (3, 0, receiver.url)


def test_no_callbacks_without_a_url(client: httpx.Client) -> None:
    order(client, "o1")
    assert client.get("/_sim/callbacks").json() == {
        "url": None,
        "sent": 0,
        "failed": 0,
        "queued": 0,
    }


# -- command line -------------------------------------------------------------------


def test_cli_sets_the_aggregator_apart(capsys: pytest.CaptureFixture[str]) -> None:
    simulator = simulator_from_args(
        [
            "--port",
            "0",
            "--aggregator-token",
            "tok",
            "--aggregator-error-rate",
            "0.3",
            "--aggregator-invalid-phone",
            "0200000000",
            "--aggregator-webhook-url",
            "http://127.0.0.1:9/webhooks/aggregator",
        ],
        environ={
            "SIM_ERROR_RATE": "0.9",
            "SIM_AGGREGATOR_ERROR_RATE": "0.8",
            "SIM_AGGREGATOR_PENDING_RATE": "0.1",
            "SIM_AGGREGATOR_INVALID_PHONE_SUFFIX": "0000",
            "AGGREGATOR_WEBHOOK_SECRET": "s",
        },
    )
    try:
        config = simulator.aggregator.chaos.config
        assert (config.error_rate, config.pending_rate) == (0.3, 0.1)
        assert config.invalid_phones == frozenset({"0200000000"})
        assert config.invalid_phone_suffix == "0000"
        assert simulator.aggregator.token == "tok"
        assert simulator.aggregator.callback_snapshot()["url"].endswith("/webhooks/aggregator")
        at_ishare = simulator.chaos.config
        assert (at_ishare.error_rate, at_ishare.pending_rate) == (0.9, 0.0)
        assert at_ishare.invalid_phones == frozenset()
        assert "warning" in capsys.readouterr().err
    finally:
        simulator.stop()


def test_cli_refuses_a_callback_url_that_is_not_http() -> None:
    with pytest.raises(SystemExit):
        simulator_from_args(["--port", "0", "--aggregator-webhook-url", "file:///etc/passwd"], {})
