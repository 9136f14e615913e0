"""The vendor client's whole stack over httpx.MockTransport: every answer maps to one error."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from fulfillment.domain.errors import (
    InsufficientBalance,
    PermanentVendorError,
    RateLimited,
    VendorConnectionError,
    VendorProtocolError,
    VendorServerError,
    VendorTimeout,
    VendorUnauthorized,
)
from fulfillment.domain.order import FulfillmentRequest
from fulfillment.vendors.atishare import MAX_BODY_BYTES, AtIshareClient
from fulfillment.vendors.atishare_signing import verify

REF = "3f1c0a52-8a53-4d8e-9a43-3e6f0c2b8f11"
REQ = FulfillmentRequest(REF, "+233241234567", "at-ishare", Decimal(2), 2048)


def client(handler: Callable[[httpx.Request], httpx.Response]) -> AtIshareClient:
    return AtIshareClient(
        "https://vendor.test/v1",
        "key",
        "secret",
        transport=httpx.MockTransport(handler),
        clock=lambda: 1_700_000_000,
    )


def test_requests_are_signed_per_contract() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"status": "success", "reference": REF, "transaction_id": "T1"}
        )

    answer = client(handler).purchase(REQ)
    assert answer.status == "success" and answer.transaction_id == "T1"
    request = seen[0]
    assert request.url.path == "/v1/data/purchase"
    assert json.loads(request.content) == {
        "reference": REF,
        "phone_number": "+233241234567",
        "network": "at-ishare",
        "size_gb": 2,
    }
    assert request.headers["X-API-Key"] == "key"
    assert verify(
        "secret",
        timestamp=request.headers["X-Timestamp"],
        signature=request.headers["X-Signature"],
        method="POST",
        path="/v1/data/purchase",
        body=request.content,
        now=1_700_000_000,
    )


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (202, {"status": "pending", "reference": REF, "transaction_id": "T"}, "pending"),
        (
            409,
            {
                "error": {"code": "DUPLICATE_REFERENCE"},
                "transaction": {"status": "success", "reference": REF, "transaction_id": "T"},
            },
            "success",
        ),
        (
            409,
            {
                "error": {"code": "DUPLICATE_REFERENCE"},
                "transaction": {"status": "pending", "reference": REF, "transaction_id": "T"},
            },
            "pending",
        ),
    ],
)
def test_answers(status: int, body: object, expected: str) -> None:
    answer = client(lambda _: httpx.Response(status, json=body)).purchase(REQ)
    assert answer.status == expected


@pytest.mark.parametrize(
    ("response", "error", "code"),
    [
        (
            httpx.Response(400, json={"error": {"code": "INVALID_PHONE", "message": "no"}}),
            PermanentVendorError,
            "INVALID_PHONE",
        ),
        (
            httpx.Response(400, json={"error": {"code": "SOMETHING"}}),
            PermanentVendorError,
            "VENDOR_VALIDATION_ERROR",
        ),
        (
            httpx.Response(401, json={"error": {"code": "UNAUTHORIZED"}}),
            VendorUnauthorized,
            "UNAUTHORIZED",
        ),
        (
            httpx.Response(402, json={"error": {"code": "INSUFFICIENT_BALANCE"}}),
            InsufficientBalance,
            "INSUFFICIENT_BALANCE",
        ),
        (httpx.Response(503, text="upstream down"), VendorServerError, "VENDOR_5XX"),
        (httpx.Response(200, text="<html>not json"), VendorProtocolError, "BAD_VENDOR_RESPONSE"),
        (
            httpx.Response(200, json={"status": "delivered?"}),
            VendorProtocolError,
            "BAD_VENDOR_RESPONSE",
        ),
        (httpx.Response(200, json=["a", "list"]), VendorProtocolError, "BAD_VENDOR_RESPONSE"),
        (
            httpx.Response(200, json={"status": "success", "reference": "someone-else"}),
            VendorProtocolError,
            "BAD_VENDOR_RESPONSE",
        ),
        (
            httpx.Response(404, json={"error": {"code": "NOT_FOUND"}}),
            VendorProtocolError,
            "BAD_VENDOR_RESPONSE",
        ),
        (
            httpx.Response(200, content=b"x" * (MAX_BODY_BYTES + 1)),
            VendorProtocolError,
            "BAD_VENDOR_RESPONSE",
        ),
    ],
)
def test_every_failure_is_classified(response: httpx.Response, error: type, code: str) -> None:
    with pytest.raises(error) as info:
        client(lambda _: response).purchase(REQ)
    assert info.value.code == code


def test_rate_limit_keeps_retry_after() -> None:
    response = httpx.Response(
        429, headers={"Retry-After": "12"}, json={"error": {"code": "RATE_LIMITED"}}
    )
    with pytest.raises(RateLimited) as info:
        client(lambda _: response).purchase(REQ)
    assert info.value.retry_after_s == 12


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ReadTimeout("slow"), VendorTimeout),
        (httpx.ConnectTimeout("slow"), VendorConnectionError),
        (httpx.RemoteProtocolError("dropped"), VendorConnectionError),
        (httpx.ConnectError("refused"), VendorConnectionError),
    ],
)
def test_transport_errors_mean_outcome_unknown(exc: Exception, error: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(error):
        client(handler).purchase(REQ)


def test_status_lookup() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1/data/purchase/{REF}"
        return httpx.Response(404, json={"error": {"code": "NOT_FOUND"}})

    assert client(handler).status(REF).status == "not_found"
    ok = client(
        lambda _: httpx.Response(
            200, json={"status": "failed", "reference": REF, "transaction_id": "T"}
        )
    )
    assert ok.status(REF).status == "failed"


def test_balance_and_repr_hides_secret() -> None:
    c = client(lambda _: httpx.Response(200, json={"balance": 12.5, "currency": "GHS"}))
    assert c.balance() == 12.5
    assert "secret" not in repr(c)
    with pytest.raises(VendorProtocolError):
        client(lambda _: httpx.Response(200, json={"balance": "lots"})).balance()
