"""The AT-iShare API client: the one module that speaks the vendor's protocol over HTTP.

Adapting to the vendor's real API touches this file only. Every httpx error and every
answer is mapped onto fulfillment.domain.errors here (see the tree drawn there).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

from fulfillment.atishare.signing import signed_headers
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

AnswerStatus = Literal["success", "pending", "failed", "not_found"]
MAX_BODY_BYTES = 64 * 1024
#: The longest Retry-After honoured; a vendor asking for more is waited on in steps.
MAX_RETRY_AFTER_S = 3600.0
_PERMANENT_CODES = frozenset({"INVALID_PHONE", "INVALID_PACKAGE", "INVALID_NETWORK"})


@dataclass(frozen=True, slots=True)
class VendorAnswer:
    """A readable vendor answer about one reference."""

    status: AnswerStatus
    reference: str
    transaction_id: str | None
    http_status: int
    raw: object
    latency_ms: int
    request_id: str | None = None


class AtIshareClient:
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
        observe: Callable[[str, int | None, float], None] | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._base_path = httpx.URL(self._base).path.rstrip("/")
        self._key = api_key
        self._secret = api_secret
        self._clock = clock
        #: called with (endpoint, HTTP status or None, seconds) after every request
        self._observe = observe
        # A whole answer must arrive within this, however slowly it drips.
        self._deadline_s = connect_timeout_s + 2 * read_timeout_s
        self._http = httpx.Client(
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": "atishare-fulfillment/0.1", "Accept": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:  # never show the secret
        return f"AtIshareClient(base_url={self._base!r})"

    # -- the contract ---------------------------------------------------------------------

    def purchase(self, request: FulfillmentRequest) -> VendorAnswer:
        """POST /data/purchase. An answer (success, pending, failed) or a VendorError."""
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
        if status == 409 and _error_code(body) == "DUPLICATE_REFERENCE":
            txn = body.get("transaction") if isinstance(body, dict) else None
            return self._transaction(txn, ref, status, latency, request_id, raw=body)
        raise _error_for(status, body, latency, request_id)

    def status(self, reference: str) -> VendorAnswer:
        """GET /data/purchase/{reference}: what the vendor knows; not_found if it never got it."""
        status, body, latency, request_id = self._call("GET", f"/data/purchase/{reference}", None)
        if status == 200:
            return self._transaction(body, reference, status, latency, request_id)
        if status == 404 and _error_code(body) == "NOT_FOUND":
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
                raw=_clip(body),
                latency_ms=latency,
            )
        return float(value)

    # -- transport ------------------------------------------------------------------------

    def _call(self, method: str, path: str, payload: object) -> tuple[int, object, int, str | None]:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        headers = signed_headers(
            self._key, self._secret, method, self._base_path + path, body, self._clock()
        )
        if payload is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        endpoint = (
            "balance"
            if path.startswith("/account")
            else ("purchase" if method == "POST" else "status")
        )
        status_seen: int | None = None
        try:
            with self._http.stream(
                method, self._base + path, content=body, headers=headers
            ) as response:
                status_seen = response.status_code
                raw = self._read_limited(response, started)
        except httpx.ConnectTimeout as exc:
            raise VendorConnectionError(
                f"{method} {path}: connect timeout", latency_ms=_ms(started)
            ) from exc
        except httpx.TimeoutException as exc:
            raise VendorTimeout(
                f"{method} {path}: {type(exc).__name__}", latency_ms=_ms(started)
            ) from exc
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: the client was closed
            raise VendorConnectionError(
                f"{method} {path}: {type(exc).__name__}: {exc}", latency_ms=_ms(started)
            ) from exc
        finally:
            if self._observe is not None:
                self._observe(endpoint, status_seen, time.perf_counter() - started)
        latency = _ms(started)
        request_id = response.headers.get("X-Request-Id")
        if response.status_code == 429:
            raise RateLimited(
                "vendor rate limit",
                retry_after_s=_retry_after(response),
                http_status=429,
                raw=_decode(raw),
                latency_ms=latency,
            )
        return response.status_code, _decode(raw), latency, request_id

    def _read_limited(self, response: httpx.Response, started: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise VendorProtocolError(
                    f"vendor answer larger than {MAX_BODY_BYTES} bytes",
                    http_status=response.status_code,
                    latency_ms=_ms(started),
                )
            if time.perf_counter() - started > self._deadline_s:
                raise VendorTimeout(
                    "vendor answer exceeded the total deadline", latency_ms=_ms(started)
                )
            chunks.append(chunk)
        return b"".join(chunks)

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
                raw=_clip(raw if raw is not None else body),
                latency_ms=latency,
            )
        status = body.get("status")
        if status not in ("success", "pending", "failed") or (expect and status != expect):
            raise VendorProtocolError(
                f"unexpected transaction status {str(status)[:40]!r}",
                http_status=http_status,
                raw=_clip(body),
                latency_ms=latency,
            )
        got_ref = body.get("reference")
        if got_ref is not None and got_ref != reference:
            raise VendorProtocolError(
                "vendor answered about another reference",
                http_status=http_status,
                raw=_clip(body),
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
    code = _error_code(body)
    message = _error_message(body) or f"vendor answered HTTP {status}"
    raw = _clip(body)
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


def _decode(raw: bytes) -> object:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]]
        return {"unparsed": raw[:500].decode("utf-8", "replace")}


def _error_code(body: object) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return str(code)[:64] if code is not None else None
    return None


def _error_message(body: object) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        msg = body["error"].get("message")
        return str(msg)[:300] if msg is not None else None
    return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # "inf", "nan", "1e400": not a wait anyone should honour as given
        return None if math.isnan(seconds) else min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_S)


def _clip(body: object) -> object:
    text = json.dumps(body, default=str)
    return body if len(text) <= 4000 else {"clipped": text[:4000]}


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
