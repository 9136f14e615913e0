"""Where admins look, per network: the stats of one network (API and dashboard), the orders
page's network filter, and an order's vendor and the network its number was issued on."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from db.network_store import NetworkStore
from db.store import Store
from tests.conftest import WebServer

from .test_dashboard_http import PREFIX, login

pytestmark = pytest.mark.integration


@pytest.fixture
def client(web: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.url, follow_redirects=False, timeout=10) as http:
        yield http


def _order(store: Store, network: str, phone: str, size: float = 2) -> str:
    oid = str(uuid.uuid4())
    store.insert_order(oid, phone_number=phone, network=network, size_gb=size, package_name=None)
    return oid


@pytest.fixture
def mixed(store: Store) -> dict[str, str]:
    NetworkStore(store).record(["mtn", "telecel"], by="test")
    orders = {
        "ishare": _order(store, "at-ishare", "+233261234567"),
        "mtn": _order(store, "mtn", "+233241234567", 5),
        "ported": _order(store, "mtn", "+233201234567", 5),  # a Telecel number, ported to MTN
        "telecel": _order(store, "telecel", "+233501234567", 1.5),
        "bigtime": _order(store, "at-bigtime", "+233561234567", 20),  # not served: not ours
    }
    with store.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET fulfillment_status = 'success', fulfilled_at = now(),"
            " vendor_transaction_id = 'AG-77' WHERE id = %s",
            (orders["mtn"],),
        )
    return orders


def test_stats_of_one_network(admin: httpx.Client, mixed: dict[str, str]) -> None:
    every = admin.get("/api/admin/stats").json()["stats"]
    assert (every["total"], every["pending"], every["success"]) == (4, 3, 1)
    mtn = admin.get("/api/admin/stats", params={"network": "mtn"}).json()["stats"]
    assert (mtn["total"], mtn["pending"], mtn["success"]) == (2, 1, 1)
    bigtime = admin.get("/api/admin/stats", params={"network": "at-bigtime"}).json()["stats"]
    assert bigtime["total"] == 0  # its order is not the fleet's
    bad = admin.get("/api/admin/stats", params={"network": "glo"})
    assert bad.status_code == 422 and "network" in bad.text


def test_the_orders_page_filters_by_network(client: httpx.Client, mixed: dict[str, str]) -> None:
    login(client)
    page = client.get(PREFIX, params={"network": "mtn"})
    assert page.status_code == 200
    shown = set(re.findall(r'data-order-id="([0-9a-f-]{36})"', page.text))
    assert shown == {mixed["mtn"], mixed["ported"]}
    assert 'data-network="mtn"' in page.text and '<option value="mtn" selected>' in page.text
    total = re.search(r'data-stat="total".*?class="value">([\d,]+)<', page.text, re.S)
    assert total is not None and total.group(1) == "2"
    # the status tabs and the export keep the network
    assert "status=failed&amp;network=mtn" in page.text
    assert "export.csv?network=mtn" in page.text
    csv = client.get(f"{PREFIX}/export.csv", params={"status": "all", "network": "telecel"})
    assert csv.status_code == 200 and mixed["telecel"] in csv.text and mixed["mtn"] not in csv.text
    assert client.get(PREFIX, params={"network": "glo"}).status_code == 400


def test_an_orders_detail_names_its_vendor_and_a_ported_number(
    client: httpx.Client, mixed: dict[str, str]
) -> None:
    login(client)
    ported = client.get(f"{PREFIX}/orders/{mixed['ported']}").text
    assert re.search(r'data-field="vendor">the data aggregator<', ported)
    assert re.search(r'id="issued-on"[^>]*>issued on Telecel<', ported)
    assert "+233201234567" not in ported  # masked, as everywhere
    delivered = client.get(f"{PREFIX}/orders/{mixed['mtn']}").text
    assert 'id="issued-on"' not in delivered
    assert re.search(r'data-field="vendor_transaction_id">AG-77<', delivered)
    ishare = client.get(f"{PREFIX}/orders/{mixed['ishare']}").text
    assert re.search(r'data-field="vendor">AT-iShare API<', ishare)
