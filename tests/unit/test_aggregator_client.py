"""The aggregator client over httpx.MockTransport: its protocol, and every answer mapped onto
the same error tree and VendorAnswer statuses as AT-iShare's."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fulfillment.domain.errors import (
    InsufficientBalance,
    PermanentVendorError,
    RateLimited,
    VendorConnectionError,
    VendorError,
    VendorProtocolError,
    VendorServerError,
    VendorTimeout,
    VendorUnauthorized,
)
from fulfillment.domain.order import FulfillmentRequest
from fulfillment.vendors.aggregator import AggregatorClient
from fulfillment.vendors.answer import VendorAnswer

REF = "3f1c0a52-8a53-4d8e-9a43-3e6f0c2b8f11"
REQ = FulfillmentRequest(REF, "+233241234567", "mtn", Decimal("1.5"), 1536)


def client(handler: Callable[[httpx.Request], httpx.Response]) -> AggregatorClient:
    return AggregatorClient(
        "https://aggregator.test/v1", "tok-123", transport=httpx.MockTransport(handler)
    )


def data(status: str, **extra: object) -> dict[str, object]:
    return {"data": {"order_ref": "AG-1", "request_id": REF, "status": status, **extra}}


def test_purchase_speaks_the_contract() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=data("queued"))

    answer = client(handler).purchase(REQ, attempt=2)
    assert (answer.status, answer.transaction_id, answer.http_status) == ("pending", "AG-1", 201)
    request = seen[0]
    assert (request.method, request.url.path) == ("POST", "/v1/orders")
    assert request.headers["Authorization"] == "Bearer tok-123"
    assert request.headers["Idempotency-Key"] == f"{REF}:2"
    assert json.loads(request.content) == {
        "request_id": REF,
        "network": "MTN",
        "recipient": "0241234567",
        "volume_mb": 1536,
    }


@pytest.mark.parametrize(
    ("network", "code"), [("mtn", "MTN"), ("telecel", "TELECEL"), ("at-bigtime", "AT_BIGTIME")]
)
def test_network_codes(network: str, code: str) -> None:
    sent: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["network"])
        return httpx.Response(201, json=data("delivered"))

    req = FulfillmentRequest(REF, "+233201234567", network, Decimal(20), 20480)
    assert client(handler).purchase(req).status == "success"
    assert sent == [code]


def test_a_network_it_does_not_serve_is_refused_before_any_request() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(201, json=data("queued"))

    req = FulfillmentRequest(REF, "+233241234567", "at-ishare", Decimal(2), 2048)
    with pytest.raises(PermanentVendorError) as info:
        client(handler).purchase(req)
    assert info.value.code == "INVALID_NETWORK" and calls == []


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (201, data("queued"), "pending"),
        (201, data("processing"), "pending"),
        (201, data("delivered"), "success"),
        (409, {"error": {"code": "DUPLICATE_REQUEST"}, **data("delivered")}, "success"),
        (409, {"error": {"code": "DUPLICATE_REQUEST"}, **data("processing")}, "pending"),
        (409, {"error": {"code": "DUPLICATE_REQUEST"}, **data("failed")}, "failed"),
        (409, {"error": {"code": "DUPLICATE_REQUEST"}, **data("refunded")}, "failed"),
    ],
)
def test_purchase_answers(status: int, body: object, expected: str) -> None:
    answer = client(lambda _: httpx.Response(status, json=body)).purchase(REQ)
    assert answer.status == expected
    assert answer.raw == body  # the whole answer is kept for the audit


def _err(code: str, message: str = "no") -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


@pytest.mark.parametrize(
    ("response", "error", "code"),
    [
        (
            httpx.Response(422, json=_err("INVALID_RECIPIENT")),
            PermanentVendorError,
            "INVALID_PHONE",
        ),
        (httpx.Response(422, json=_err("INVALID_VOLUME")), PermanentVendorError, "INVALID_PACKAGE"),
        (
            httpx.Response(422, json=_err("NETWORK_NOT_SUPPORTED")),
            PermanentVendorError,
            "INVALID_NETWORK",
        ),
        (
            httpx.Response(422, json=_err("SOMETHING_NEW")),
            PermanentVendorError,
            "VENDOR_VALIDATION_ERROR",
        ),
        (httpx.Response(401, json=_err("UNAUTHENTICATED")), VendorUnauthorized, "UNAUTHORIZED"),
        (httpx.Response(402, json=_err("LOW_WALLET")), InsufficientBalance, "INSUFFICIENT_BALANCE"),
        (httpx.Response(502, text="bad gateway"), VendorServerError, "VENDOR_5XX"),
        (httpx.Response(201, text="<html>"), VendorProtocolError, "BAD_VENDOR_RESPONSE"),
        (httpx.Response(201, json=data("failed")), VendorProtocolError, "BAD_VENDOR_RESPONSE"),
        (httpx.Response(201, json=data("sent?")), VendorProtocolError, "BAD_VENDOR_RESPONSE"),
        (
            httpx.Response(201, json={"status": "queued"}),
            VendorProtocolError,
            "BAD_VENDOR_RESPONSE",
        ),
        (
            httpx.Response(201, json={"data": {"request_id": "someone-else", "status": "queued"}}),
            VendorProtocolError,
            "BAD_VENDOR_RESPONSE",
        ),
        (httpx.Response(409, json=_err("CONFLICT")), VendorProtocolError, "BAD_VENDOR_RESPONSE"),
        (httpx.Response(404, json=_err("NOT_FOUND")), VendorProtocolError, "BAD_VENDOR_RESPONSE"),
    ],
)
def test_every_refusal_is_classified(response: httpx.Response, error: type, code: str) -> None:
    with pytest.raises(error) as info:
        client(lambda _: response).purchase(REQ)
    assert info.value.code == code


def test_the_aggregators_own_code_reaches_the_admin() -> None:
    response = httpx.Response(422, json=_err("INVALID_RECIPIENT", "not a Telecel number"))
    with pytest.raises(PermanentVendorError) as info:
        client(lambda _: response).purchase(REQ)
    assert "INVALID_RECIPIENT" in str(info.value) and "not a Telecel number" in str(info.value)


def test_rate_limit_keeps_retry_after() -> None:
    response = httpx.Response(429, headers={"Retry-After": "7"}, json=_err("TOO_MANY_REQUESTS"))
    with pytest.raises(RateLimited) as info:
        client(lambda _: response).purchase(REQ)
    assert info.value.retry_after_s == 7


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ReadTimeout("slow"), VendorTimeout),
        (httpx.ConnectTimeout("slow"), VendorConnectionError),
        (httpx.RemoteProtocolError("dropped"), VendorConnectionError),
    ],
)
def test_transport_errors_mean_outcome_unknown(exc: Exception, error: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(error):
        client(handler).purchase(REQ)


def test_status_lookup() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        assert request.headers["Authorization"] == "Bearer tok-123"
        assert "Idempotency-Key" not in request.headers
        return httpx.Response(404, json=_err("NOT_FOUND"))

    assert client(handler).status(REF).status == "not_found"
    assert paths == [f"/v1/orders/{REF}"]
    for word, ours in [
        ("queued", "pending"),
        ("processing", "pending"),
        ("delivered", "success"),
        ("failed", "failed"),
        ("refunded", "failed"),
    ]:
        reply = data(word, failure_reason="x") if word in ("failed", "refunded") else data(word)
        answer = client(lambda _, r=reply: httpx.Response(200, json=r)).status(REF)  # type: ignore[misc]
        assert (answer.status, answer.transaction_id) == (ours, "AG-1")


def test_wallet_is_a_decimal_string() -> None:
    ok = client(
        lambda _: httpx.Response(200, json={"data": {"balance": "1234.50", "currency": "GHS"}})
    )
    assert ok.balance() == 1234.5
    for bad in [
        {"data": {"balance": 12.5}},
        {"data": {"balance": "lots"}},
        {"data": {}},
        {"data": {"balance": "NaN"}},
        {"balance": "1"},
        ["x"],
    ]:
        with pytest.raises(VendorProtocolError):
            client(lambda _, b=bad: httpx.Response(200, json=b)).balance()  # type: ignore[misc]
    assert "tok-123" not in repr(ok)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_plausible = st.fixed_dictionaries(
    {},
    optional={
        "data": st.fixed_dictionaries(
            {},
            optional={
                "status": st.sampled_from(
                    ["queued", "processing", "delivered", "failed", "refunded", "odd"]
                ),
                "request_id": st.sampled_from([REF, "other", 5]),
                "order_ref": _json,
            },
        ),
        "error": st.fixed_dictionaries(
            {}, optional={"code": st.sampled_from(["DUPLICATE_REQUEST", "NOT_FOUND", "X"]) | _json}
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([200, 201, 202, 204, 301, 400, 401, 402, 404, 409, 422, 429, 500, 503]),
    body=_plausible | _json,
    call=st.sampled_from(["purchase", "status", "balance"]),
)
def test_any_answer_is_an_answer_or_a_vendor_error(status: int, body: object, call: str) -> None:
    """Garbage from the aggregator never escapes as anything but a VendorError."""
    c = client(lambda _: httpx.Response(status, json=body))
    try:
        result = (
            c.purchase(REQ)
            if call == "purchase"
            else c.status(REF)
            if call == "status"
            else c.balance()
        )
    except VendorError:
        return
    if call == "balance":
        assert isinstance(result, float)
    else:
        assert isinstance(result, VendorAnswer) and result.reference == REF
        assert result.status in ("success", "pending", "failed", "not_found")
        if result.status == "failed":  # only the aggregator's own word says nothing was delivered
            assert call == "status" or status == 409


def test_a_held_order_comes_back_with_a_new_idempotency_key() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        return httpx.Response(201, json=data("queued"))

    c = client(handler)
    c.purchase(REQ, 1)
    c.purchase(REQ, 1)  # a repeat of the same request (after an unknown outcome): same key
    c.purchase(REQ, 1, resend=2)  # held twice (402, 429): a new request
    c.purchase(REQ, 2)
    assert keys == [f"{REF}:1", f"{REF}:1", f"{REF}:1.2", f"{REF}:2"]
