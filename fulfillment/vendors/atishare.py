"""The AT-iShare API client: the one module that speaks the vendor's protocol.

Adapting to the vendor's real API touches this file only. Every answer is mapped onto
fulfillment.domain.errors and VendorAnswer here (see the tree drawn in errors); the bounded
HTTP transport is shared with the other vendors' clients (fulfillment/vendors/http.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import httpx

from fulfillment.domain.order import FulfillmentRequest
from fulfillment.vendors.answer import (
    AnswerStatus,
    VendorAnswer,
    protocol_error,
    read_answer,
    refusal,
)
from fulfillment.vendors.atishare_signing import signed_headers
from fulfillment.vendors.http import (
    MAX_BODY_BYTES,
    JsonTransport,
    Observer,
    Reply,
    error_code,
    json_body,
)

__all__ = ["MAX_BODY_BYTES", "AtIshareClient", "VendorAnswer"]

#: the vendor's validation codes are the fleet's own
_PERMANENT: Final = {code: code for code in ("INVALID_PHONE", "INVALID_PACKAGE", "INVALID_NETWORK")}
_STATUSES: Final[dict[str, AnswerStatus]] = {s: s for s in ("success", "pending", "failed")}
_ON_200: Final[dict[str, AnswerStatus]] = {"success": "success"}
_ON_202: Final[dict[str, AnswerStatus]] = {"pending": "pending"}


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

    def purchase(
        self, request: FulfillmentRequest, attempt: int = 1, *, resend: int = 0
    ) -> VendorAnswer:
        """POST /data/purchase. An answer (success, pending, failed) or a VendorError. The
        reference is the order id on every attempt (the vendor keeps one per reference)."""
        del attempt, resend
        size = float(request.size_gb)
        payload = {
            "reference": request.order_id,
            "phone_number": request.phone_number,
            "network": request.network,
            "size_gb": int(size) if size.is_integer() else size,
        }
        reply = self._call("POST", "/data/purchase", payload)
        ref = request.order_id
        if reply.status == 200:
            return _answer(reply.body, ref, reply, _ON_200)
        if reply.status == 202:
            return _answer(reply.body, ref, reply, _ON_202)
        if reply.status == 409 and error_code(reply.body) == "DUPLICATE_REFERENCE":
            txn = reply.body.get("transaction") if isinstance(reply.body, dict) else None
            return _answer(txn, ref, reply, _STATUSES)
        raise refusal(reply, _PERMANENT)

    def status(self, reference: str) -> VendorAnswer:
        """GET /data/purchase/{reference}: what the vendor knows; not_found if it never got it."""
        reply = self._call("GET", f"/data/purchase/{reference}", None)
        if reply.status == 200:
            return _answer(reply.body, reference, reply, _STATUSES)
        if reply.status == 404 and error_code(reply.body) == "NOT_FOUND":
            return VendorAnswer(
                "not_found", reference, None, 404, reply.body, reply.latency_ms, reply.request_id
            )
        raise refusal(reply, _PERMANENT)

    def balance(self) -> float:
        reply = self._call("GET", "/account/balance", None)
        if reply.status != 200:
            raise refusal(reply, _PERMANENT)
        value = reply.body.get("balance") if isinstance(reply.body, dict) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise protocol_error("balance answer has no numeric balance", reply)
        return float(value)

    # -- transport ------------------------------------------------------------------------

    def _call(self, method: str, path: str, payload: object) -> Reply:
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
        return self._http.call(method, path, body, headers, endpoint=endpoint)


def _answer(
    txn: object, reference: str, reply: Reply, statuses: dict[str, AnswerStatus]
) -> VendorAnswer:
    return read_answer(
        txn, reference, reply, statuses, reference_field="reference", id_field="transaction_id"
    )
