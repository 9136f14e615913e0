"""The aggregator's callback `POST /webhooks/aggregator` over real HTTP: its own signature
('<timestamp>.<body>', 300 s), a reported delivery confirmed with the aggregator's status
endpoint before the order completes, replays and early callbacks harmless."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from db.store import Store
from fulfillment.dev.simulator.server import Simulator
from fulfillment.services.delivery import fulfil
from fulfillment.services.ports import FulfilDeps, Outcome
from fulfillment.vendors.aggregator_signing import signed_headers

from .test_networks import _insert, aggregator, all_networks
from .test_webhook import start_hook

pytestmark = pytest.mark.integration
__all__ = ["aggregator", "all_networks", "start_hook"]  # fixtures, shared

SECRET = "aggregator-callback-secret"
Deps = Callable[..., FulfilDeps]


@pytest.fixture
def hook(start_hook: Callable[..., str], all_networks: Deps) -> str:
    return start_hook(all_networks, aggregator_secret=SECRET).replace(
        "/webhooks/at-ishare", "/webhooks/aggregator"
    )


def body(order_id: str, status: str = "delivered") -> bytes:
    return json.dumps(
        {"data": {"order_ref": "AG-9", "request_id": order_id, "status": status}}
    ).encode()


def post(url: str, raw: bytes, *, secret: str = SECRET, at: float | None = None) -> httpx.Response:
    headers = signed_headers(secret, raw, time.time() if at is None else at)
    headers["Content-Type"] = "application/json"
    return httpx.post(url, content=raw, headers=headers, timeout=10)


def queued_order(sim: Simulator, store: Store, deps: Deps) -> str:
    sim.aggregator.update_faults({"pending_rate": 1.0, "pending_seconds": 0.3})
    oid = _insert(store, "mtn")
    assert fulfil(oid, deps()) is Outcome.PENDING
    return oid


def status_lookups(sim: Simulator, order_id: str) -> int:
    entry = sim.aggregator.ledger.snapshot()["references"].get(order_id, {})
    return int(entry.get("status_requests", 0))


def test_a_signed_delivery_is_confirmed_then_completes_the_order_once(
    hook: str,
    sim: Simulator,
    store: Store,
    all_networks: Deps,
) -> None:
    oid = queued_order(sim, store, all_networks)
    time.sleep(0.4)  # delivered at the aggregator by now
    first = post(hook, body(oid))
    assert first.status_code == 200, first.text
    assert first.json() == {"success": True, "status": "success"}
    assert status_lookups(sim, oid) == 1  # confirmed with GET /orders/{id}, not believed
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "success"
    assert row["vendor_transaction_id"]
    again = post(hook, body(oid))  # a new signature over the same news: nothing more to do
    assert again.status_code == 200 and again.json()["status"] == "success"
    assert sim.aggregator.ledger.deliveries(oid) == 1


def test_a_callback_the_aggregator_cannot_confirm_changes_nothing(
    hook: str,
    sim: Simulator,
    store: Store,
    all_networks: Deps,
) -> None:
    sim.aggregator.update_faults({"pending_rate": 1.0, "pending_seconds": 3600})
    oid = _insert(store, "telecel")
    assert fulfil(oid, all_networks()) is Outcome.PENDING
    lying = post(hook, body(oid))  # says delivered; the aggregator says queued
    assert lying.status_code == 202, lying.text
    assert lying.json()["status"] == "processing"
    early = post(hook, body(oid, "processing"))
    assert early.status_code == 202
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "processing"
    assert sim.aggregator.ledger.deliveries(oid) == 0


def test_a_bad_signature_or_stale_timestamp_is_refused(
    hook: str,
    sim: Simulator,
    store: Store,
    all_networks: Deps,
) -> None:
    oid = queued_order(sim, store, all_networks)
    time.sleep(0.4)
    raw = body(oid)
    for response in (
        post(hook, raw, secret="not-the-secret"),
        post(hook, raw, at=time.time() - 301),
        post(hook, raw, at=time.time() + 301),
        httpx.post(hook, content=raw),
        httpx.post(
            hook, content=raw, headers=signed_headers(SECRET, body(oid, "failed"), time.time())
        ),
    ):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert status_lookups(sim, oid) == 0
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "processing"
    replayed = post(hook, raw)
    assert replayed.status_code == 200
    headers = {
        k: replayed.request.headers[k] for k in ("X-Aggregator-Timestamp", "X-Aggregator-Signature")
    }
    same = httpx.post(hook, content=raw, headers=headers)  # the very same bytes again
    assert same.status_code == 200 and status_lookups(sim, oid) == 1


def test_malformed_bodies_and_unknown_orders_get_clear_errors(hook: str, store: Store) -> None:
    for raw, status in [
        (b"not json", 422),
        (json.dumps({"data": {"status": "delivered"}}).encode(), 422),
        (body("not-a-uuid"), 422),
        (body("00000000-0000-4000-8000-000000000000"), 404),
    ]:
        response = post(hook, raw)
        assert response.status_code == status, (raw, response.text)
        assert response.json()["success"] is False


def test_without_its_secret_the_aggregators_callbacks_are_refused(
    start_hook: Callable[..., str],
    all_networks: Deps,
) -> None:
    url = start_hook(all_networks).replace("/webhooks/at-ishare", "/webhooks/aggregator")
    response = post(url, body("00000000-0000-4000-8000-000000000000"))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "VENDOR_NOT_CONFIGURED"
