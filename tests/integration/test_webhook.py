"""The vendor webhook over real HTTP: signature and timestamp checked, delivery confirmed with
the simulator's status endpoint, order completed in real PostgreSQL, replays harmless."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from db.store import Store
from fulfillment.dev.embedded import free_port
from fulfillment.dev.simulator.server import Simulator
from fulfillment.services.delivery import fulfil
from fulfillment.services.ports import FulfilDeps, Outcome
from fulfillment.vendors.atishare_signing import signed_headers

from .conftest import KEY, SECRET
from .test_fulfil import script

pytestmark = pytest.mark.integration

PATH = "/webhooks/at-ishare"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
NewOrder = Callable[..., str]


@pytest.fixture
def hook_url(start_hook: Callable[..., str], make_deps: Callable[..., FulfilDeps]) -> str:
    """The admin app under uvicorn, its webhook confirming with the simulator."""
    return start_hook(make_deps)


@pytest.fixture
def start_hook(store: Store, redis_url: str, redis_namespace: str) -> Iterator[Callable[..., str]]:
    """Start the admin app with the given fulfil deps factory; its webhook URL."""
    stops: list[Callable[[], None]] = []

    def start(fulfil_deps: Callable[[], FulfilDeps], aggregator_secret: str = "") -> str:
        url, stop = _serve(
            store, fulfil_deps, redis_url, redis_namespace, aggregator_secret=aggregator_secret
        )
        stops.append(stop)
        return url

    yield start
    for stop in stops:
        stop()


def _serve(
    store: Store,
    make_deps: Callable[[], FulfilDeps],
    redis_url: str,
    redis_namespace: str,
    *,
    aggregator_secret: str = "",
) -> tuple[str, Callable[[], None]]:
    import uvicorn

    from fulfillment.messaging.dlq import DeadMessageQueue
    from fulfillment.messaging.publish import build_broker
    from fulfillment.services.admin import AdminService
    from fulfillment.services.pauses import PauseService
    from fulfillment.web.app import create_app
    from fulfillment.web.deps import WebDeps

    broker = build_broker(redis_url, redis_namespace)
    client = redis.Redis.from_url(redis_url)
    deps = WebDeps(
        service=AdminService(store=store, publish=lambda *_: None, max_attempts=3),
        pauses=PauseService(store=store, publish=lambda *_: None),
        dlq=DeadMessageQueue(client, redis_namespace, broker),
        store=store,
        api_token="webhook-test-api-token",
        admin_token="webhook-test-admin-token",
        vendor_key=KEY,
        vendor_secret=SECRET,
        aggregator_secret=aggregator_secret,
        fulfil_deps=make_deps,
        ping_redis=client.ping,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(deps), host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        broker.close()
        client.close()

    return f"http://127.0.0.1:{port}{PATH}", stop


def callback(reference: str, status: str = "success", transaction_id: str = "ATX-1") -> bytes:
    return json.dumps(
        {"reference": reference, "status": status, "transaction_id": transaction_id}
    ).encode()


def post(
    url: str,
    body: bytes,
    *,
    key: str = KEY,
    secret: str = SECRET,
    at: float | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    signed = signed_headers(key, secret, "POST", PATH, body, time.time() if at is None else at)
    signed["Content-Type"] = "application/json"
    signed.update(headers or {})
    return httpx.post(url, content=body, headers=signed, timeout=10)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {
        "success": False,
        "error": {"code": code, "message": response.json()["error"]["message"]},
    }


def vendor_calls(sim: Simulator, reference: str) -> tuple[int, int]:
    entry: dict[str, Any] = sim.ledger.snapshot()["references"].get(reference, {})
    return entry.get("purchase_requests", 0), entry.get("status_requests", 0)


def pending_purchase(
    sim: Simulator, store: Store, make_deps: Callable[..., FulfilDeps], new_order: NewOrder
) -> str:
    """An order the vendor accepted as pending: processing, waiting for confirmation."""
    oid = new_order()
    script(sim, oid, ["pending"])
    assert fulfil(oid, make_deps()) is Outcome.PENDING
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "processing"
    return oid


def test_a_bad_signature_key_or_body_is_rejected(
    hook_url: str,
    sim: Simulator,
    store: Store,
    make_deps: Callable[..., FulfilDeps],
    new_order: NewOrder,
) -> None:
    oid = pending_purchase(sim, store, make_deps, new_order)
    time.sleep(sim.chaos.config.pending_seconds + 0.05)
    before = vendor_calls(sim, oid)
    body = callback(oid)
    assert_error(post(hook_url, body, secret="not-the-secret"), 401, "UNAUTHORIZED")
    assert_error(post(hook_url, body, key="not-the-key"), 401, "UNAUTHORIZED")
    tampered = post(hook_url, body, headers={"X-Signature": "0" * 64})
    assert_error(tampered, 401, "UNAUTHORIZED")
    signed_other = signed_headers(KEY, SECRET, "POST", PATH, callback(oid, "failed"), time.time())
    swapped = httpx.post(hook_url, content=body, headers=signed_other)  # body changed after
    assert_error(swapped, 401, "UNAUTHORIZED")
    assert_error(httpx.post(hook_url, content=body), 401, "UNAUTHORIZED")  # unsigned
    raw_headers = {
        k.encode(): v.encode()
        for k, v in signed_headers(KEY, SECRET, "POST", PATH, body, time.time()).items()
    }
    raw_headers[b"X-Signature"] = b"\xe9" * 64  # not hex, not even ASCII
    latin = httpx.post(hook_url, content=body, headers=raw_headers)
    assert_error(latin, 401, "UNAUTHORIZED")
    signed_path = signed_headers(KEY, SECRET, "POST", "/v1" + PATH, body, time.time())
    assert_error(httpx.post(hook_url, content=body, headers=signed_path), 401, "UNAUTHORIZED")
    # Nothing was confirmed or changed.
    assert vendor_calls(sim, oid) == before
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "processing"


def test_a_stale_or_future_timestamp_is_rejected(
    hook_url: str,
    sim: Simulator,
    store: Store,
    make_deps: Callable[..., FulfilDeps],
    new_order: NewOrder,
) -> None:
    oid = pending_purchase(sim, store, make_deps, new_order)
    body = callback(oid)
    assert_error(post(hook_url, body, at=time.time() - 301), 401, "UNAUTHORIZED")
    assert_error(post(hook_url, body, at=time.time() + 301), 401, "UNAUTHORIZED")
    assert_error(post(hook_url, body, headers={"X-Timestamp": "soon"}), 401, "UNAUTHORIZED")
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "processing"


def test_a_signed_callback_completes_a_pending_order_and_a_replay_changes_nothing(
    hook_url: str,
    sim: Simulator,
    store: Store,
    make_deps: Callable[..., FulfilDeps],
    new_order: NewOrder,
) -> None:
    oid = pending_purchase(sim, store, make_deps, new_order)
    time.sleep(sim.chaos.config.pending_seconds + 0.05)  # the vendor delivers meanwhile
    tx = sim.ledger.transaction(oid)
    assert tx is not None
    body = callback(oid, "success", tx.transaction_id)
    response = post(hook_url, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "status": "success"}
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "success"
    assert row["vendor_transaction_id"] == tx.transaction_id and row["fulfilled_at"] is not None
    assert sim.ledger.deliveries(oid) == 1
    confirmations = [
        (r["action"], r["status"]) for r in store.order_logs(oid) if r["action"] == "status_check"
    ]
    assert confirmations == [("status_check", "success")]  # confirmed by GET, not trusted
    purchases = vendor_calls(sim, oid)[0]

    # The same callback again (a vendor retry, or a replay): answered, nothing happens.
    replay = post(hook_url, body)
    assert replay.status_code == 200, replay.text
    assert replay.json() == {"success": True, "status": "success"}
    assert sim.ledger.deliveries(oid) == 1
    assert vendor_calls(sim, oid)[0] == purchases == 1
    assert len(store.order_logs(oid)) == 2  # the purchase and the one confirmation


def test_a_callback_before_the_vendor_finished_is_accepted_and_waits(
    hook_url: str,
    sim: Simulator,
    store: Store,
    make_deps: Callable[..., FulfilDeps],
    new_order: NewOrder,
) -> None:
    sim.update_faults({"pending_seconds": 30})
    oid = pending_purchase(sim, store, make_deps, new_order)
    response = post(hook_url, callback(oid))
    assert response.status_code == 202, response.text
    assert response.json() == {"success": True, "status": "processing"}
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "processing"
    assert row["claim_token"] is None  # handed back for its scheduled status check
    assert sim.ledger.deliveries(oid) == 0


def test_a_callback_for_an_order_never_bought_buys_nothing(
    hook_url: str, sim: Simulator, store: Store, new_order: NewOrder
) -> None:
    oid = new_order()
    response = post(hook_url, callback(oid))
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "status": "pending"}
    assert vendor_calls(sim, oid) == (0, 0)
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "pending"


def test_an_unknown_reference_is_404(hook_url: str, sim: Simulator) -> None:
    assert_error(post(hook_url, callback(UNKNOWN)), 404, "ORDER_NOT_FOUND")
    assert vendor_calls(sim, UNKNOWN) == (0, 0)


MALFORMED = [
    b'{"reference": ',
    b"[]",
    b"",
    b'"success"',
    b'{"status": "success", "transaction_id": "ATX-1"}',
    b'{"reference": "not-a-uuid", "status": "success", "transaction_id": "ATX-1"}',
    b'{"reference": 12, "status": "success", "transaction_id": "ATX-1"}',
    b'{"reference": "' + UNKNOWN.encode() + b'\\u0000", "status": "success"}',
    b"\xff\xfe not utf-8",
]


def test_a_malformed_signed_body_is_422(hook_url: str) -> None:
    for body in MALFORMED:
        response = post(hook_url, body)
        assert response.status_code == 422, (body, response.text)
        assert_error(response, 422, "VALIDATION_ERROR")


def test_an_oversized_body_is_refused(hook_url: str) -> None:
    body = b'{"reference": "' + b"x" * 70_000 + b'"}'
    assert_error(post(hook_url, body), 413, "PAYLOAD_TOO_LARGE")
