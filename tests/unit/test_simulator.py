"""The AT-iShare simulator, over real HTTP on a free port: contract, faults, scripts, ledger."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from fulfillment.dev.simulator.faults import FaultConfig, FaultKind, roll
from fulfillment.dev.simulator.ledger import Ledger, Outcome, TxStatus
from fulfillment.dev.simulator.server import Simulator, simulator_from_args
from fulfillment.vendors.atishare_signing import signed_headers

KEY = "test-key"
SECRET = "test-secret"
PHONE = "+233241234567"
PURCHASE = "/v1/data/purchase"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = FaultConfig(pending_seconds=0.3, timeout_seconds=0.5, balance=1000.0)
    simulator = Simulator(api_key=KEY, api_secret=SECRET, faults=config, seed=7)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url.removesuffix("/v1"), timeout=2.0) as http:
        yield http


def signed(
    client: httpx.Client,
    method: str,
    path: str,
    payload: Any = None,
    *,
    key: str = KEY,
    secret: str = SECRET,
    now: float | None = None,
    query: str = "",
    timeout: float | None = None,
) -> httpx.Response:
    body = b"" if payload is None else json.dumps(payload).encode()
    headers = signed_headers(key, secret, method, path, body, time.time() if now is None else now)
    headers["Content-Type"] = "application/json"
    return client.request(
        method, path + query, content=body, headers=headers, timeout=timeout or 2.0
    )


def purchase_body(reference: str) -> dict[str, Any]:
    return {"reference": reference, "phone_number": PHONE, "network": "at-ishare", "size_gb": 2}


def purchase(client: httpx.Client, reference: str, /, **fields: Any) -> httpx.Response:
    return signed(client, "POST", PURCHASE, {**purchase_body(reference), **fields})


def status(client: httpx.Client, reference: str) -> httpx.Response:
    return signed(client, "GET", f"{PURCHASE}/{reference}")


def script(client: httpx.Client, reference: str, **scripts: list[str]) -> None:
    response = client.post("/_sim/script", json={"reference": reference, **scripts})
    assert response.status_code == 200, response.text


# -- signatures -------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"secret": "wrong-secret"}, id="bad-signature"),
        pytest.param({"key": "wrong-key"}, id="wrong-key"),
        pytest.param({"now": time.time() - 1000}, id="stale-timestamp"),
    ],
)
def test_bad_credentials_are_unauthorized(
    sim: Simulator, client: httpx.Client, overrides: dict[str, Any]
) -> None:
    payload = {"reference": "r1", "phone_number": PHONE, "network": "at-ishare", "size_gb": 2}
    response = signed(client, "POST", PURCHASE, payload, **overrides)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert sim.ledger.snapshot()["totals"]["purchase_requests"] == 0


def test_missing_signature_headers_are_unauthorized(client: httpx.Client) -> None:
    response = client.get("/v1/account/balance")
    assert response.status_code == 401


def test_signature_covers_the_path_without_query_string(client: httpx.Client) -> None:
    response = signed(client, "GET", "/v1/account/balance", query="?verbose=1")
    assert response.status_code == 200


# -- purchases --------------------------------------------------------------------


def test_success_delivers_once(sim: Simulator, client: httpx.Client) -> None:
    response = purchase(client, "order-1")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert body["reference"] == "order-1"
    assert body["transaction_id"]
    assert sim.ledger.deliveries("order-1") == 1
    assert sim.ledger.balance == 990.0


def test_duplicate_reference_is_409_with_the_transaction(
    sim: Simulator, client: httpx.Client
) -> None:
    first = purchase(client, "order-1").json()
    response = purchase(client, "order-1")
    assert response.status_code == 409
    body = response.json()
    assert body["error"]["code"] == "DUPLICATE_REFERENCE"
    assert body["transaction"] == {
        "status": "success",
        "reference": "order-1",
        "transaction_id": first["transaction_id"],
    }
    assert sim.ledger.deliveries("order-1") == 1


def test_concurrent_purchases_of_one_reference_deliver_once(
    sim: Simulator, client: httpx.Client
) -> None:
    barrier = threading.Barrier(20)
    codes: list[int] = []
    lock = threading.Lock()

    def buy() -> None:
        barrier.wait()
        code = purchase(client, "race").status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=buy) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200] + [409] * 19
    assert sim.ledger.deliveries("race") == 1


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"phone_number": "0241234567"}, "INVALID_PHONE"),
        ({"phone_number": "+23324123456"}, "INVALID_PHONE"),
        ({"phone_number": None}, "INVALID_PHONE"),
        ({"network": "mtn"}, "INVALID_NETWORK"),
        ({"size_gb": 0}, "INVALID_PACKAGE"),
        ({"size_gb": 101}, "INVALID_PACKAGE"),
        ({"size_gb": "2"}, "INVALID_PACKAGE"),
        ({"size_gb": True}, "INVALID_PACKAGE"),
        ({"reference": ""}, "VALIDATION_ERROR"),
        ({"reference": 5}, "VALIDATION_ERROR"),
    ],
)
def test_invalid_purchases_are_400(
    sim: Simulator, client: httpx.Client, fields: dict[str, Any], code: str
) -> None:
    response = purchase(client, "bad", **fields)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert sim.ledger.snapshot()["totals"]["deliveries"] == 0


def test_body_that_is_not_a_json_object_is_400(client: httpx.Client) -> None:
    for payload in (["a list"], "text"):
        response = signed(client, "POST", PURCHASE, payload)
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_configured_invalid_phones(sim: Simulator, client: httpx.Client) -> None:
    sim.update_faults({"invalid_phones": ["+233209990001"], "invalid_phone_suffix": "0000"})
    for phone in ("+233209990001", "+233201110000"):
        response = purchase(client, f"ref-{phone}", phone_number=phone)
        assert response.json()["error"]["code"] == "INVALID_PHONE"
    assert purchase(client, "fine", phone_number="+233209990002").status_code == 200


def test_failed_reference_can_be_purchased_again(sim: Simulator, client: httpx.Client) -> None:
    script(client, "retry-me", responses=["invalid_phone"])
    assert purchase(client, "retry-me").status_code == 400
    failed = status(client, "retry-me").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "INVALID_PHONE"
    response = purchase(client, "retry-me")
    assert response.status_code == 200
    assert response.json()["transaction_id"] != failed["transaction_id"]
    assert sim.ledger.deliveries("retry-me") == 1


def test_balance_runs_out(sim: Simulator, client: httpx.Client) -> None:
    assert signed(client, "GET", "/v1/account/balance").json() == {
        "balance": 1000.0,
        "currency": "GHS",
    }
    assert purchase(client, "a", size_gb=100).status_code == 200
    assert purchase(client, "b", size_gb=100).status_code == 200
    response = purchase(client, "c", size_gb=1)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "INSUFFICIENT_BALANCE"
    assert sim.ledger.deliveries("c") == 0
    assert signed(client, "GET", "/v1/account/balance").json()["balance"] == 0.0


# -- faults -----------------------------------------------------------------------


def test_scripted_error_then_ok(sim: Simulator, client: httpx.Client) -> None:
    script(client, "flaky", responses=["error", "ok"])
    first = purchase(client, "flaky")
    assert first.status_code == 503
    assert first.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert sim.ledger.deliveries("flaky") == 0
    assert purchase(client, "flaky").status_code == 200
    assert sim.ledger.deliveries("flaky") == 1


def test_drop_after_delivery_loses_the_reply_but_delivers(
    sim: Simulator, client: httpx.Client
) -> None:
    script(client, "dropped", responses=["drop_after_delivery"])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        purchase(client, "dropped")
    assert sim.ledger.deliveries("dropped") == 1
    assert status(client, "dropped").json()["status"] == "success"
    assert purchase(client, "dropped").status_code == 409


def test_pending_becomes_success(sim: Simulator, client: httpx.Client) -> None:
    script(client, "slow", responses=["pending"])
    response = purchase(client, "slow")
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert status(client, "slow").json()["status"] == "pending"
    assert purchase(client, "slow").json()["transaction"]["status"] == "pending"
    time.sleep(0.4)
    assert status(client, "slow").json()["status"] == "success"
    assert sim.ledger.deliveries("slow") == 1
    assert sim.ledger.snapshot()["totals"]["deliveries"] == 1


def test_rate_limited_with_retry_after(sim: Simulator, client: httpx.Client) -> None:
    script(client, "busy", responses=["rate_limit"])
    response = purchase(client, "busy")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert status(client, "busy").status_code == 404


def test_garbage_answer_does_not_deliver(sim: Simulator, client: httpx.Client) -> None:
    script(client, "junk", responses=["garbage"])
    response = purchase(client, "junk")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == "<html>not json"
    assert sim.ledger.deliveries("junk") == 0


def test_timeout_stalls_without_delivering(sim: Simulator, client: httpx.Client) -> None:
    script(client, "stuck", responses=["timeout"])
    with pytest.raises(httpx.ReadTimeout):
        signed(
            client,
            "POST",
            PURCHASE,
            {"reference": "stuck", "phone_number": PHONE, "network": "at-ishare", "size_gb": 2},
            timeout=0.2,
        )
    assert sim.ledger.deliveries("stuck") == 0
    assert status(client, "stuck").json()["status"] == "failed"


def test_scripted_status_responses(sim: Simulator, client: httpx.Client) -> None:
    purchase(client, "seen")
    script(client, "seen", status_responses=["error", "garbage", "ok"])
    assert status(client, "seen").status_code == 503
    assert status(client, "seen").text == "<html>not json"
    assert status(client, "seen").json()["status"] == "success"
    assert sim.ledger.snapshot()["references"]["seen"]["status_requests"] == 3


def test_runtime_fault_rates_and_scripted_exemption(sim: Simulator, client: httpx.Client) -> None:
    response = client.post("/_sim/faults", json={"error_rate": 1.0})
    assert response.json()["error_rate"] == 1.0
    assert purchase(client, "random").status_code == 503
    script(client, "exempt", responses=[])
    assert purchase(client, "exempt").status_code == 200
    assert client.post("/_sim/faults", json={"error_rate": 2}).status_code == 400
    assert client.post("/_sim/faults", json={"nope": 1}).status_code == 400


def test_unknown_script_response_is_400(client: httpx.Client) -> None:
    response = client.post("/_sim/script", json={"reference": "x", "responses": ["explode"]})
    assert response.status_code == 400


def test_outage(sim: Simulator, client: httpx.Client) -> None:
    assert client.post("/_sim/down", json={"seconds": 0.3}).status_code == 200
    response = signed(client, "GET", "/v1/account/balance")
    assert response.status_code == 503
    assert purchase(client, "during").status_code == 503
    assert client.get("/_sim/health").json() == {"ok": True}
    time.sleep(0.35)
    assert purchase(client, "during").status_code == 200
    assert client.post("/_sim/down", json={"seconds": -1}).status_code == 400
    assert client.post("/_sim/down", json={"seconds": 1, "spare": "x"}).status_code == 400


def test_an_outage_can_spare_some_references_purchases(
    sim: Simulator, client: httpx.Client
) -> None:
    assert client.post("/_sim/down", json={"seconds": 0.5, "spare": ["vip"]}).status_code == 200
    assert purchase(client, "vip").status_code == 200
    assert status(client, "vip").status_code == 503  # only its purchases are spared
    assert purchase(client, "other").status_code == 503
    client.post("/_sim/down", json={"seconds": 0})
    assert purchase(client, "other").status_code == 200


# -- blind re-purchases: a purchase after an unknown outcome without a lookup between -----


def blind(client: httpx.Client) -> tuple[int, list[str]]:
    totals = client.get("/_sim/ledger").json()["totals"]
    return totals["blind_repurchases"], totals["blind_repurchase_references"]


def test_purchase_again_after_a_5xx_without_a_lookup_is_blind(
    sim: Simulator, client: httpx.Client
) -> None:
    script(client, "blind", responses=["error", "ok"])
    assert purchase(client, "blind").status_code == 503
    assert purchase(client, "blind").status_code == 200
    assert sim.ledger.blind_repurchases("blind") == 1
    assert sim.ledger.blind_repurchases() == 1
    assert sim.ledger.blind_repurchase_references() == ["blind"]
    assert blind(client) == (1, ["blind"])
    entry = client.get("/_sim/ledger").json()["references"]["blind"]
    assert (entry["blind_repurchases"], entry["outcome_unknown"]) == (1, False)  # 200: known


def test_a_lookup_between_makes_the_purchase_again_legitimate(
    sim: Simulator, client: httpx.Client
) -> None:
    script(client, "looked", responses=["error", "ok"])
    assert purchase(client, "looked").status_code == 503
    assert client.get("/_sim/ledger").json()["references"]["looked"]["outcome_unknown"]
    assert status(client, "looked").json()["status"] == "failed"
    assert purchase(client, "looked").status_code == 200
    assert sim.ledger.blind_repurchases("looked") == 0
    assert blind(client) == (0, [])


@pytest.mark.parametrize("fault", ["timeout", "garbage", "drop_after_delivery"])
def test_every_answer_the_client_cannot_read_is_an_unknown_outcome(
    sim: Simulator, client: httpx.Client, fault: str
) -> None:
    script(client, "r", responses=[fault, "ok"])
    with contextlib.suppress(httpx.HTTPError):
        signed(client, "POST", PURCHASE, purchase_body("r"), timeout=0.2)
    time.sleep(0.4)  # a timeout's 504 comes at 0.5 s, to nobody
    purchase(client, "r")
    assert sim.ledger.blind_repurchases("r") == 1


def test_answers_that_tell_the_state_or_refuse_are_not_unknown(
    sim: Simulator, client: httpx.Client
) -> None:
    assert purchase(client, "known").status_code == 200
    assert purchase(client, "known").status_code == 409
    script(client, "refused", responses=["rate_limit", "invalid_phone", "insufficient_balance"])
    assert [purchase(client, "refused").status_code for _ in range(4)] == [429, 400, 402, 200]
    script(client, "pending", responses=["pending"])
    assert purchase(client, "pending").status_code == 202
    assert purchase(client, "pending").status_code == 409
    assert blind(client) == (0, [])


def test_a_failed_lookup_clears_nothing(sim: Simulator, client: httpx.Client) -> None:
    script(client, "r", responses=["error"], status_responses=["error", "garbage"])
    purchase(client, "r")
    assert status(client, "r").status_code == 503
    assert status(client, "r").text == "<html>not json"
    purchase(client, "r")
    assert sim.ledger.blind_repurchases("r") == 1
    purchase(client, "r")  # the 200 before it told the client the state
    assert sim.ledger.blind_repurchases("r") == 1


def test_an_outage_answer_is_unknown_and_a_purchase_in_an_outage_can_be_blind(
    sim: Simulator, client: httpx.Client
) -> None:
    client.post("/_sim/down", json={"seconds": 0.3})
    assert purchase(client, "down").status_code == 503
    assert purchase(client, "down").status_code == 503  # blind, though it never reaches the books
    time.sleep(0.35)
    assert purchase(client, "down").status_code == 200  # blind again
    assert sim.ledger.blind_repurchases("down") == 2
    assert sim.ledger.snapshot()["references"]["down"]["purchase_requests"] == 1
    client.post("/_sim/down", json={"seconds": 0.3})
    assert purchase(client, "other").status_code == 503
    time.sleep(0.35)
    assert status(client, "other").status_code == 404
    assert purchase(client, "other").status_code == 200
    assert sim.ledger.blind_repurchases("other") == 0


def test_an_answer_after_the_client_hung_up_is_unknown(
    sim: Simulator, client: httpx.Client
) -> None:
    sim.update_faults({"latency_ms": 300})
    with pytest.raises(httpx.ReadTimeout):
        signed(client, "POST", PURCHASE, purchase_body("late"), timeout=0.1)
    time.sleep(0.4)  # the handler answers (a 200 nobody reads) at 0.3 s
    sim.update_faults({"latency_ms": 0})
    assert sim.ledger.deliveries("late") == 1
    assert purchase(client, "late").status_code == 409
    assert sim.ledger.blind_repurchases("late") == 1


def test_an_answer_later_than_clients_wait_is_unknown(sim: Simulator, client: httpx.Client) -> None:
    sim.update_faults({"latency_ms": 150, "client_timeout_seconds": 0.1})
    assert purchase(client, "slow").status_code == 200  # this client waited; clients do not
    assert purchase(client, "slow").status_code == 409
    assert sim.ledger.blind_repurchases("slow") == 1


def test_a_lookup_that_arrived_after_the_purchase_clears_it_even_if_answered_first(
    sim: Simulator, client: httpx.Client
) -> None:
    """The client gave up on a stalled purchase and looked it up while the vendor still
    held the purchase's (lost) answer: ordered by arrival, the lookup came after."""
    script(client, "stalled", responses=["timeout"])
    with pytest.raises(httpx.ReadTimeout):
        signed(client, "POST", PURCHASE, purchase_body("stalled"), timeout=0.1)
    assert status(client, "stalled").json()["status"] == "failed"
    time.sleep(0.5)  # the 504 goes out, to nobody
    assert purchase(client, "stalled").status_code == 200
    assert sim.ledger.blind_repurchases("stalled") == 0


def test_ledger_orders_outcomes_by_ticket() -> None:
    ledger = Ledger(balance=100.0)
    post, get = ledger.ticket(), ledger.ticket()
    ledger.note_outcome("r", get, known=True)
    ledger.note_outcome("r", post, known=False)  # answered after the lookup arrived
    assert not ledger.note_purchase_request("r")
    ledger.note_outcome("r", known=False)
    assert ledger.note_purchase_request("r")
    assert ledger.note_purchase_request("r")  # still nothing known
    assert ledger.blind_repurchases("r") == 2
    assert ledger.blind_repurchase_references() == ["r"]
    ledger.reset()
    assert (ledger.blind_repurchases(), ledger.blind_repurchase_references()) == (0, [])


def test_stall_after_delivery_is_listed_in_flight(sim: Simulator, client: httpx.Client) -> None:
    script(client, "held", responses=["stall_after_delivery"])
    errors: list[Exception] = []

    def buy() -> None:
        try:
            signed(client, "POST", PURCHASE, purchase_body("held"), timeout=0.3)
        except httpx.HTTPError as exc:
            errors.append(exc)

    buyer = threading.Thread(target=buy)
    buyer.start()
    deadline = time.monotonic() + 2
    in_flight: list[dict[str, Any]] = []
    while not in_flight and time.monotonic() < deadline:
        in_flight = client.get("/_sim/inflight").json()["purchases"]
    buyer.join()
    assert [p["reference"] for p in in_flight] == ["held"]
    assert isinstance(in_flight[0]["client_port"], int)
    assert 0 <= in_flight[0]["seconds"] < 2
    assert isinstance(errors[0], httpx.ReadTimeout)
    assert sim.ledger.deliveries("held") == 1
    time.sleep(0.3)  # the answer goes out at 0.5 s, to nobody
    assert client.get("/_sim/inflight").json() == {"purchases": []}
    assert purchase(client, "held").status_code == 409
    assert sim.ledger.blind_repurchases("held") == 1


# -- status, routes, control -------------------------------------------------------


def test_status_of_unknown_reference_is_404(client: httpx.Client) -> None:
    response = status(client, "never-sent")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_unknown_path_and_wrong_method(client: httpx.Client) -> None:
    assert client.get("/nowhere").json()["error"]["code"] == "NOT_FOUND"
    assert signed(client, "GET", "/v1/nowhere").status_code == 404
    response = signed(client, "GET", PURCHASE)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert client.delete("/_sim/ledger").status_code == 405


def raw_request(sim: Simulator, request: bytes) -> bytes:
    url = httpx.URL(sim.url)
    assert url.port is not None
    with socket.create_connection((url.host, url.port), timeout=2) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def test_oversized_body_is_413(sim: Simulator) -> None:
    head = b"POST /v1/data/purchase HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n"
    assert raw_request(sim, head).startswith(b"HTTP/1.1 413")


def test_invalid_content_length_is_400(sim: Simulator) -> None:
    head = b"POST /v1/data/purchase HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n"
    assert raw_request(sim, head).startswith(b"HTTP/1.1 400")


def test_ledger_snapshot_and_reset(sim: Simulator, client: httpx.Client) -> None:
    purchase(client, "one")
    script(client, "two", responses=["error"])
    purchase(client, "two")
    status(client, "one")
    snapshot = client.get("/_sim/ledger").json()
    one = snapshot["references"]["one"]
    assert one["deliveries"] == 1
    assert one["status"] == "success"
    assert one["transaction_id"]
    assert (one["purchase_requests"], one["status_requests"]) == (1, 1)
    assert snapshot["references"]["two"]["status"] == "failed"
    totals = snapshot["totals"]
    assert (totals["deliveries"], totals["purchase_requests"], totals["status_requests"]) == (
        1,
        2,
        1,
    )
    assert totals["faults"] == {"error": 1}
    assert client.post("/_sim/reset").json() == {"ok": True}
    assert client.get("/_sim/ledger").json()["references"] == {}
    assert purchase(client, "two").status_code == 200  # the script is gone too


# -- pure parts -------------------------------------------------------------------


def test_roll_order_and_determinism() -> None:
    assert roll(random.Random(1), FaultConfig()) is None
    everything = FaultConfig(
        error_rate=1, timeout_rate=1, rate_limit_rate=1, pending_rate=1, drop_after_delivery_rate=1
    )
    assert roll(random.Random(1), everything) is FaultKind.RATE_LIMIT
    assert roll(random.Random(1), FaultConfig(error_rate=1, pending_rate=1)) is FaultKind.ERROR
    config = FaultConfig(error_rate=0.3, pending_rate=0.3)
    first = [roll(random.Random(42), config) for _ in range(50)]
    assert first == [roll(random.Random(42), config) for _ in range(50)]
    rng = random.Random(3)
    errors = sum(roll(rng, FaultConfig(error_rate=0.25)) is FaultKind.ERROR for _ in range(4000))
    assert 850 < errors < 1150


def test_fault_config_validation_and_env() -> None:
    with pytest.raises(ValidationError):
        FaultConfig(error_rate=1.5)
    config = FaultConfig.from_env(
        {
            "SIM_ERROR_RATE": "0.2",
            "SIM_PENDING_SECONDS": "1.5",
            "SIM_INVALID_PHONE": "+233200000001, +233200000002",
            "SIM_INVALID_PHONE_SUFFIX": "",
        }
    )
    assert config.error_rate == 0.2
    assert config.pending_seconds == 1.5
    assert config.invalid_phones == frozenset({"+233200000001", "+233200000002"})
    assert config.invalid_phone_suffix is None


def test_ledger_settles_pending_once() -> None:
    clock = [0.0]
    ledger = Ledger(balance=100.0, clock=lambda: clock[0])
    accepted = ledger.purchase("r", 2, pending_for=1.0)
    assert accepted.outcome is Outcome.ACCEPTED
    assert accepted.transaction.status is TxStatus.PENDING
    assert ledger.deliveries("r") == 0
    clock[0] = 1.0
    assert ledger.deliveries("r") == 1
    assert ledger.deliveries("r") == 1
    assert ledger.purchase("r", 2, pending_for=None).outcome is Outcome.DUPLICATE
    assert ledger.snapshot()["totals"]["deliveries"] == 1
    assert ledger.balance == 90.0


def test_cli_flags_override_env(capsys: pytest.CaptureFixture[str]) -> None:
    simulator = simulator_from_args(
        ["--port", "0", "--error-rate", "0.3", "--invalid-phone", "+233200000000"],
        environ={"SIM_ERROR_RATE": "0.9", "SIM_PENDING_RATE": "0.1", "SIM_SEED": "5"},
    )
    try:
        config = simulator.chaos.config
        assert (config.error_rate, config.pending_rate) == (0.3, 0.1)
        assert config.invalid_phones == frozenset({"+233200000000"})
        assert simulator.api_key == "sim-key"
        assert "warning" in capsys.readouterr().err
    finally:
        simulator.stop()
