"""The AT-iShare API client: the one module that speaks the vendor's protocol.

Adapting to the vendor's real API touches this file only. Every answer is mapped onto
fulfillment.domain.errors and VendorAnswer here (see the tree drawn in errors); the bounded
HTTP transport is shared with the other vendors' clients (fulfillment/vendors/http.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from fulfillment.domain.errors import (
    InsufficientBalance,
    PermanentVendorError,
    VendorError,
    VendorProtocolError,
    VendorServerError,
    VendorUnauthorized,
)
from fulfillment.domain.order import FulfillmentRequest
from fulfillment.vendors.answer import AnswerStatus, VendorAnswer
from fulfillment.vendors.atishare_signing import signed_headers
from fulfillment.vendors.http import (
    MAX_BODY_BYTES,
    JsonTransport,
    Observer,
    clip,
    error_code,
    error_message,
    json_body,
)

__all__ = ["MAX_BODY_BYTES", "AtIshareClient", "VendorAnswer"]

_PERMANENT_CODES = frozenset({"INVALID_PHONE", "INVALID_PACKAGE", "INVALID_NETWORK"})


class AtIshareClient:
    #: the vendor connection's name in metrics, logs and settings
    vendor = "at-ishare"
    display_name = "AT-iShare"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        max_connections: int = 20,
        observe: Observer | None = None,
    ) -> None:
        self._key = api_key
        self._secret = api_secret
        self._clock = clock
        self._http = JsonTransport(
            base_url,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            transport=transport,
            max_connections=max_connections,
            observe=observe,
        )

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:  # never show the secret
        return f"AtIshareClient(base_url={self._http.base!r})"

    # -- the contract ---------------------------------------------------------------------

    def purchase(self, request: FulfillmentRequest, attempt: int = 1) -> VendorAnswer:
        """POST /data/purchase. An answer (success, pending, failed) or a VendorError. The
        reference is the order id on every attempt (the vendor keeps one per reference)."""
        del attempt
        size = float(request.size_gb)
        payload = {
            "reference": request.order_id,
            "phone_number": request.phone_number,
            "network": request.network,
            "size_gb": int(size) if size.is_integer() else size,
        }
        status, body, latency, request_id = self._call("POST", "/data/purchase", payload)
        ref = request.order_id
        if status == 200:
            return self._transaction(body, ref, status, latency, request_id, expect="success")
        if status == 202:
            return self._transaction(body, ref, status, latency, request_id, expect="pending")
        if status == 409 and error_code(body) == "DUPLICATE_REFERENCE":
            txn = body.get("transaction") if isinstance(body, dict) else None
            return self._transaction(txn, ref, status, latency, request_id, raw=body)
        raise _error_for(status, body, latency, request_id)

    def status(self, reference: str) -> VendorAnswer:
        """GET /data/purchase/{reference}: what the vendor knows; not_found if it never got it."""
        status, body, latency, request_id = self._call("GET", f"/data/purchase/{reference}", None)
        if status == 200:
            return self._transaction(body, reference, status, latency, request_id)
        if status == 404 and error_code(body) == "NOT_FOUND":
            return VendorAnswer("not_found", reference, None, status, body, latency, request_id)
        raise _error_for(status, body, latency, request_id)

    def balance(self) -> float:
        status, body, latency, request_id = self._call("GET", "/account/balance", None)
        if status != 200:
            raise _error_for(status, body, latency, request_id)
        value = body.get("balance") if isinstance(body, dict) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise VendorProtocolError(
                "balance answer has no numeric balance",
                http_status=status,
                raw=clip(body),
                latency_ms=latency,
            )
        return float(value)

    # -- transport ------------------------------------------------------------------------

    def _call(self, method: str, path: str, payload: object) -> tuple[int, object, int, str | None]:
        body = json_body(payload)
        headers = signed_headers(
            self._key, self._secret, method, self._http.base_path + path, body, self._clock()
        )
        if payload is not None:
            headers["Content-Type"] = "application/json"
        endpoint = (
            "balance"
            if path.startswith("/account")
            else ("purchase" if method == "POST" else "status")
        )
        reply = self._http.call(method, path, body, headers, endpoint=endpoint)
        return reply.status, reply.body, reply.latency_ms, reply.request_id

    @staticmethod
    def _transaction(
        body: object,
        reference: str,
        http_status: int,
        latency: int,
        request_id: str | None,
        *,
        expect: AnswerStatus | None = None,
        raw: object = None,
    ) -> VendorAnswer:
        if not isinstance(body, dict):
            raise VendorProtocolError(
                "vendor answer is not a JSON object",
                http_status=http_status,
                raw=clip(raw if raw is not None else body),
                latency_ms=latency,
            )
        status = body.get("status")
        if status not in ("success", "pending", "failed") or (expect and status != expect):
            raise VendorProtocolError(
                f"unexpected transaction status {str(status)[:40]!r}",
                http_status=http_status,
                raw=clip(body),
                latency_ms=latency,
            )
        got_ref = body.get("reference")
        if got_ref is not None and got_ref != reference:
            raise VendorProtocolError(
                "vendor answered about another reference",
                http_status=http_status,
                raw=clip(body),
                latency_ms=latency,
            )
        txn = body.get("transaction_id")
        return VendorAnswer(
            status=status,
            reference=reference,
            transaction_id=str(txn)[:200] if txn is not None else None,
            http_status=http_status,
            raw=raw if raw is not None else body,
            latency_ms=latency,
            request_id=request_id,
        )


def _error_for(status: int, body: object, latency: int, request_id: str | None) -> VendorError:
    code = error_code(body)
    message = error_message(body) or f"vendor answered HTTP {status}"
    raw = clip(body)
    if status == 401:
        return VendorUnauthorized(message, http_status=status, raw=raw, latency_ms=latency)
    if status == 402:
        return InsufficientBalance(message, http_status=status, raw=raw, latency_ms=latency)
    if status >= 500:
        return VendorServerError(message, http_status=status, raw=raw, latency_ms=latency)
    if status in (400, 422):
        permanent_code = code if code in _PERMANENT_CODES else "VENDOR_VALIDATION_ERROR"
        return PermanentVendorError(
            message, code=permanent_code, http_status=status, raw=raw, latency_ms=latency
        )
    # 404 on a purchase, 405, a 3xx...: our configuration or the vendor is off, not the order.
    return VendorProtocolError(
        f"unexpected HTTP {status}: {message}", http_status=status, raw=raw, latency_ms=latency
    )
