"""Schema-driven fuzz of the live app: schemathesis generates requests (valid and invalid) for
every operation of the OpenAPI document and sends them over real HTTP to the app under
uvicorn with real PostgreSQL and Redis; no answer may be a 5xx, and every answer must match
what the document promises (status, content type, body schema).

The document is read from create_app at import (collection needs it before any server runs;
schemathesis' lazy fixture loader does not work on pytest 9), and each test checks that the
live /openapi.json is that same document.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckFunction
from schemathesis.specs.openapi.checks import positive_data_acceptance

from db.store import Store
from fulfillment.web.app import create_app
from fulfillment.web.deps import WebDeps
from fulfillment.web.security import AuthThrottle
from tests.conftest import WebServer

pytestmark = pytest.mark.integration


def _document() -> dict[str, Any]:
    """The OpenAPI document the app serves (no dependency is touched to build it)."""
    unused = cast(Any, None)
    deps = WebDeps(
        service=unused,
        pauses=unused,
        dlq=unused,
        store=unused,
        api_token="doc",
        admin_token="doc",
        vendor_key="doc",
        vendor_secret="doc",
        fulfil_deps=unused,
        ping_redis=unused,
    )
    return create_app(deps).openapi()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture
def live(web: WebServer, store: Store) -> WebServer:
    assert httpx.get(f"{web.url}/openapi.json").json() == DOCUMENT
    # Schemathesis sends wrong tokens of its own: without this the address would be locked
    # out (429) after ten and the rest of the examples would test nothing. The lock-out has
    # its own tests (test_web_api.py, test_dashboard_http.py).
    web.app.state.auth_throttle = AuthThrottle(limit=1_000_000)
    # A few rows so the list, stats and search paths have something to read.
    for phone in ("+233241234567", "0201234567", "not a phone"):
        store.insert_order(
            str(uuid.uuid4()), phone_number=phone, network="at-ishare", size_gb=2, package_name=None
        )
    return web


def token_for(case: Case[Any], web: WebServer) -> str:
    return web.api_token if case.path.startswith("/api/orders") else web.admin_token


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_request_makes_the_api_fail(case: Case[Any], live: WebServer) -> None:
    headers = {"Authorization": f"Bearer {token_for(case, live)}"}
    # The list's cursor is opaque: a string this server did not give out is rightly a 422,
    # which no schema can say; every other operation must accept what its schema allows.
    excluded: list[CheckFunction] = (
        [positive_data_acceptance] if case.path == "/api/admin/orders" else []
    )
    response = case.call_and_validate(base_url=live.url, headers=headers, excluded_checks=excluded)
    assert response.status_code < 500, (response.status_code, response.text)
