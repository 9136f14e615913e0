"""The data aggregator's API client (MTN, Telecel, AT-BigTime): DESIGN.md "Other networks".

A bearer token; every purchase attempt carries `Idempotency-Key: <order id>:<attempt>` (a
repeated HTTP request of one attempt gets the first answer back, a new attempt after
"failed" or "refunded" is a new purchase); the order id is the aggregator's request_id; the
recipient goes in its 10-digit local form, the size as whole megabytes. Its statuses map
onto the fleet's: queued / processing -> pending, delivered -> success, failed / refunded ->
failed (nothing delivered). Its refusals map onto the same error tree as AT-iShare's, so the
worker's decision rule never knows which vendor answered.
"""

from __future__ import annotations

import decimal
from typing import Final

import httpx

from fulfillment.domain.errors import PermanentVendorError, VendorError
from fulfillment.domain.order import FulfillmentRequest
from fulfillment.vendors.answer import (
    AnswerStatus,
    VendorAnswer,
    protocol_error,
    read_answer,
    refusal,
)
from fulfillment.vendors.http import JsonTransport, Observer, Reply, error_code, json_body

#: the fleet's network code -> the aggregator's
NETWORK_CODES: Final = {"mtn": "MTN", "telecel": "TELECEL", "at-bigtime": "AT_BIGTIME"}

#: what a purchase answer (201) may say; a failed order is only ever met through 409 / GET
_ACCEPTED: Final[dict[str, AnswerStatus]] = {
    "queued": "pending",
    "processing": "pending",
    "delivered": "success",
}
_STATUSES: Final[dict[str, AnswerStatus]] = {
    **_ACCEPTED,
    "failed": "failed",
    "refunded": "failed",
}
#: the aggregator's validation codes -> the fleet's permanent ones
_PERMANENT: Final = {
    "INVALID_RECIPIENT": "INVALID_PHONE",
    "INVALID_VOLUME": "INVALID_PACKAGE",
    "NETWORK_NOT_SUPPORTED": "INVALID_NETWORK",
}


class AggregatorClient:
    #: the vendor connection's name in metrics, logs and settings
    vendor = "aggregator"
    display_name = "the data aggregator"

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 20,
        observe: Observer | None = None,
    ) -> None:
        self._auth = {"Authorization": f"Bearer {token}"}
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

    def __repr__(self) -> str:  # never show the token
        return f"AggregatorClient(base_url={self._http.base!r})"

    # -- the contract ---------------------------------------------------------------------

    def purchase(
        self, request: FulfillmentRequest, attempt: int = 1, *, resend: int = 0
    ) -> VendorAnswer:
        """POST /orders as attempt `attempt`. An answer (success, pending, or through a 409
        the existing order's status) or a VendorError; a network the aggregator does not
        serve is refused before anything is sent.

        The Idempotency-Key is `<order id>:<attempt>`, and `<order id>:<attempt>.<resend>`
        once the aggregator has held the order `resend` times (429, 402, 401: nothing
        bought): it returns the first answer of a key again, and a held request must be
        able to go through once the wallet is topped up. Repeats after an unknown outcome
        keep their key; the request_id (the order id) still makes any second purchase of a
        live order a 409."""
        code = NETWORK_CODES.get(request.network)
        if code is None:
            raise PermanentVendorError(
                f"the data aggregator does not serve the network {request.network!r}",
                code="INVALID_NETWORK",
            )
        payload = {
            "request_id": request.order_id,
            "network": code,
            "recipient": request.local_phone,
            "volume_mb": request.volume_mb,
        }
        key = f"{request.order_id}:{attempt}" + (f".{resend}" if resend else "")
        headers = {"Idempotency-Key": key}
        reply = self._call("POST", "/orders", payload, headers, endpoint="purchase")
        ref = request.order_id
        if reply.status == 201:
            return self._answer(reply, ref, _ACCEPTED)
        if reply.status == 409 and error_code(reply.body) == "DUPLICATE_REQUEST":
            return self._answer(reply, ref, _STATUSES)
        raise self._refusal(reply)

    def status(self, reference: str) -> VendorAnswer:
        """GET /orders/{request_id}: what the aggregator knows; not_found if it never got it."""
        reply = self._call("GET", f"/orders/{reference}", None, {}, endpoint="status")
        if reply.status == 200:
            return self._answer(reply, reference, _STATUSES)
        if reply.status == 404 and error_code(reply.body) == "NOT_FOUND":
            return VendorAnswer(
                "not_found", reference, None, 404, reply.body, reply.latency_ms, reply.request_id
            )
        raise self._refusal(reply)

    def balance(self) -> float:
        """GET /wallet: our wallet at the aggregator (a decimal string) in cedis."""
        reply = self._call("GET", "/wallet", None, {}, endpoint="balance")
        if reply.status != 200:
            raise self._refusal(reply)
        data = reply.body.get("data") if isinstance(reply.body, dict) else None
        value = data.get("balance") if isinstance(data, dict) else None
        try:
            amount = decimal.Decimal(value) if isinstance(value, str) else None
        except decimal.InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite():
            raise protocol_error("wallet answer has no decimal balance", reply)
        return float(amount)

    # -- reading answers ------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        payload: object,
        extra: dict[str, str],
        *,
        endpoint: str,
    ) -> Reply:
        headers = {**self._auth, **extra}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        return self._http.call(method, path, json_body(payload), headers, endpoint=endpoint)

    @staticmethod
    def _answer(reply: Reply, reference: str, statuses: dict[str, AnswerStatus]) -> VendorAnswer:
        data = reply.body.get("data") if isinstance(reply.body, dict) else None
        return read_answer(
            data, reference, reply, statuses, reference_field="request_id", id_field="order_ref"
        )

    @staticmethod
    def _refusal(reply: Reply) -> VendorError:
        return refusal(reply, _PERMANENT, name_code=True)
