"""The JSON-over-HTTP transport every vendor client shares.

One httpx client per vendor connection (pooled, kept alive), answers read in chunks up to
MAX_BODY_BYTES and within a total deadline however slowly they drip, every httpx error
translated onto fulfillment.domain.errors (a connect timeout: nothing sent; any other
timeout or a dropped connection: the outcome is unknown), and a 429 turned into RateLimited
with the vendor's Retry-After. What an answer means is each client's business.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

from fulfillment.domain.errors import (
    RateLimited,
    VendorConnectionError,
    VendorProtocolError,
    VendorTimeout,
)

MAX_BODY_BYTES = 64 * 1024
#: The longest Retry-After honoured; a vendor asking for more is waited on in steps.
MAX_RETRY_AFTER_S = 3600.0

#: called with (endpoint, HTTP status or None, seconds) after every request
Observer = Callable[[str, int | None, float], None]


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer other than 429, its body decoded (None when empty)."""

    status: int
    body: object
    latency_ms: int
    request_id: str | None


class JsonTransport:
    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 20,
        observe: Observer | None = None,
        request_id_header: str = "X-Request-Id",
    ) -> None:
        self.base = base_url.rstrip("/")
        #: the URL path of the base (e.g. /v1), which signatures cover
        self.base_path = httpx.URL(self.base).path.rstrip("/")
        self._observe = observe
        self._request_id_header = request_id_header
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

    def call(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        endpoint: str,
    ) -> Reply:
        """One request; a Reply, or RateLimited (429), VendorConnectionError, VendorTimeout,
        VendorProtocolError (an answer too large)."""
        started = time.perf_counter()
        status_seen: int | None = None
        try:
            with self._http.stream(
                method, self.base + path, content=body, headers=dict(headers)
            ) as response:
                status_seen = response.status_code
                raw = self._read_limited(response, started)
        except httpx.ConnectTimeout as exc:
            raise VendorConnectionError(
                f"{method} {path}: connect timeout", latency_ms=ms_since(started)
            ) from exc
        except httpx.TimeoutException as exc:
            raise VendorTimeout(
                f"{method} {path}: {type(exc).__name__}", latency_ms=ms_since(started)
            ) from exc
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: the client was closed
            raise VendorConnectionError(
                f"{method} {path}: {type(exc).__name__}: {exc}", latency_ms=ms_since(started)
            ) from exc
        finally:
            if self._observe is not None:
                self._observe(endpoint, status_seen, time.perf_counter() - started)
        latency = ms_since(started)
        if response.status_code == 429:
            raise RateLimited(
                "vendor rate limit",
                retry_after_s=retry_after(response.headers.get("Retry-After")),
                http_status=429,
                raw=decode(raw),
                latency_ms=latency,
            )
        return Reply(
            response.status_code,
            decode(raw),
            latency,
            response.headers.get(self._request_id_header),
        )

    def _read_limited(self, response: httpx.Response, started: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise VendorProtocolError(
                    f"vendor answer larger than {MAX_BODY_BYTES} bytes",
                    http_status=response.status_code,
                    latency_ms=ms_since(started),
                )
            if time.perf_counter() - started > self._deadline_s:
                raise VendorTimeout(
                    "vendor answer exceeded the total deadline", latency_ms=ms_since(started)
                )
            chunks.append(chunk)
        return b"".join(chunks)


def json_body(payload: object) -> bytes:
    """The compact JSON bytes a request sends (and a signature covers)."""
    return b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()


def decode(raw: bytes) -> object:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]]
        return {"unparsed": raw[:500].decode("utf-8", "replace")}


def error_code(body: object) -> str | None:
    """`{"error": {"code": ...}}`, the shape both vendors use for a refusal."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return str(code)[:64] if code is not None else None
    return None


def error_message(body: object) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        msg = body["error"].get("message")
        return str(msg)[:300] if msg is not None else None
    return None


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), within 0..MAX_RETRY_AFTER_S;
    None when absent or unreadable."""
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


def clip(body: object) -> object:
    """A body small enough for the audit trail."""
    text = json.dumps(body, default=str)
    return body if len(text) <= 4000 else {"clipped": text[:4000]}


def ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
