"""Integration fixtures: the real simulator over HTTP and the fulfil service wired to it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from db.store import Store
from fulfillment.dev.simulator.faults import FaultConfig
from fulfillment.dev.simulator.server import Simulator
from fulfillment.domain.retry import RetryPolicy
from fulfillment.services.ports import DeadLetterNotice, FulfilDeps, VendorConnection, routes_to
from fulfillment.vendors.atishare import AtIshareClient
from tests.conftest import WebServer

pytestmark = pytest.mark.integration

KEY, SECRET = "it-key", "it-secret"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(
        api_key=KEY,
        api_secret=SECRET,
        faults=FaultConfig(pending_seconds=0.3, timeout_seconds=3),
        seed=7,
    )
    simulator.start()
    yield simulator
    simulator.stop()


@dataclass
class Sent:
    """What the service asked the broker to send (the broker is not this tier's subject)."""

    retries: list[tuple[str, float]] = field(default_factory=list)
    dead_letters: list[DeadLetterNotice] = field(default_factory=list)
    alerts: list[tuple[str, str, str, str]] = field(default_factory=list)


@pytest.fixture
def sent() -> Sent:
    return Sent()


#: make_deps(vendor=..., breaker=..., gate=..., bulkhead=..., balance_pause_s=...) set the
#: AT-iShare connection's own parts
CONNECTION_FIELDS = ("vendor", "breaker", "gate", "bulkhead", "balance_pause_s")


@pytest.fixture
def make_deps(store: Store, sim: Simulator, sent: Sent) -> Iterator[Callable[..., FulfilDeps]]:
    clients: list[AtIshareClient] = []

    def build(**overrides: Any) -> FulfilDeps:
        client = AtIshareClient(sim.url, KEY, SECRET, connect_timeout_s=1, read_timeout_s=1)
        clients.append(client)
        values: dict[str, Any] = {
            "store": store,
            "policy": RetryPolicy(
                delays=(0.2, 0.4, 0.8),
                max_attempts=3,
                max_deferrals=5,
                max_status_checks=5,
                status_check_delay_s=0.2,
            ),
            "enabled": True,
            "claim_ttl_s": 30.0,
            "worker": "test-worker",
            "publish_retry": lambda oid, delay: sent.retries.append((oid, delay)),
            "publish_dead_letter": sent.dead_letters.append,
            "alert": lambda *a: sent.alerts.append(a),
        }
        line = {k: overrides.pop(k) for k in CONNECTION_FIELDS if k in overrides}
        connection = VendorConnection("at-ishare", "AT-iShare", line.pop("vendor", client), **line)
        values["routes"] = routes_to(connection, "at-ishare")
        values.update(overrides)
        return FulfilDeps(**values)

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def new_order(store: Store) -> Callable[..., str]:
    def create(
        phone: str = "+233241234567",
        size_gb: float | None = 2,
        package_name: str | None = None,
        network: str = "at-ishare",
    ) -> str:
        order_id = str(uuid.uuid4())
        store.insert_order(
            order_id,
            phone_number=phone,
            network=network,
            size_gb=size_gb,
            package_name=package_name,
        )
        return order_id

    return create


# -- HTTP clients of the admin web process (tests/conftest.py's `web`) -----------------------


@pytest.fixture
def api(web: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=web.url, headers={"Authorization": f"Bearer {web.api_token}"}, timeout=10
    ) as client:
        yield client


@pytest.fixture
def admin(web: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=web.url, headers={"Authorization": f"Bearer {web.admin_token}"}, timeout=10
    ) as client:
        yield client
