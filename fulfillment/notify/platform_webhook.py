"""POST outcome events to the purchase platform (DESIGN.md "What the platform is told"), signed.
The HTTP edge for the platform, and the one statement of its signature rule.

`X-Fulfillment-Signature` is hex(HMAC-SHA256(secret, "<timestamp>.<raw body>")) with the
`X-Fulfillment-Timestamp` header's unix seconds: `sign` makes it, `verify` checks it (the
simulated receiver calls it too). One `post` is one try: any 2xx acknowledges; the caller's
outbox retries the same body until one does, and the platform deduplicates on event_id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import httpx

TIMESTAMP_HEADER: Final = "X-Fulfillment-Timestamp"
SIGNATURE_HEADER: Final = "X-Fulfillment-Signature"
#: how far a timestamp may be from the receiver's clock, either way
SIGNATURE_TOLERANCE_S: Final = 300.0
#: how much of an answer is read (for its error code); the status alone acknowledges
MAX_BODY_BYTES: Final = 64 * 1024
MAX_ERROR_CHARS: Final = 300
#: longer than any unix time in seconds; int() of a huge digit string is slow or refused
_MAX_TIMESTAMP_DIGITS: Final = 18


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """hex(HMAC-SHA256(secret, "<timestamp>.<raw body>"))."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:
    """Whether `signature` is `sign(secret, timestamp, body)` and the timestamp (unix seconds,
    digits only) within `tolerance_s` of `now`, so that a captured request cannot be replayed
    later. `body` is the raw request body as received: check it before parsing it. The
    comparison takes the same time however much of the signature matches."""
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        return False
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature.encode())


@dataclass(frozen=True)
class PostResult:
    """One try: acknowledged (any 2xx) or not, the HTTP status when one came back, and why
    not (short, never the secret)."""

    delivered: bool
    http_status: int | None
    error: str | None


class PlatformWebhookClient:
    """One pooled connection to the platform's event URL."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._secret = secret
        self._clock = clock
        # An answer is not waited on longer than this, however slowly it drips.
        self._deadline_s = 3 * timeout_s
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"User-Agent": "atishare-fulfillment/0.1", "Accept": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PlatformWebhookClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never show the secret
        try:
            shown = str(httpx.URL(self._url).copy_with(userinfo=b"", query=None, fragment=None))
        except httpx.InvalidURL:
            shown = "<invalid>"
        return f"PlatformWebhookClient(url={shown!r})"

    def post(self, body: str) -> PostResult:
        """POST `body` (the event JSON) byte for byte as given, signed now; one try."""
        raw = body.encode()
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, raw),
        }
        status: int | None = None
        started = time.monotonic()
        try:
            with self._http.stream("POST", self._url, content=raw, headers=headers) as answer:
                status = answer.status_code
                # read, so that the connection is kept
                answer_body = _read_limited(answer, started + self._deadline_s)
        except (httpx.HTTPError, httpx.InvalidURL, RuntimeError) as exc:  # RuntimeError: closed
            if status is not None and 200 <= status < 300:  # acknowledged by the status line
                return PostResult(delivered=True, http_status=status, error=None)
            return PostResult(delivered=False, http_status=status, error=self._describe(exc))
        if 200 <= status < 300:
            return PostResult(delivered=True, http_status=status, error=None)
        code = _error_code(answer_body)
        return PostResult(
            delivered=False,
            http_status=status,
            error=self._clean(f"HTTP {status} {code}" if code else f"HTTP {status}"),
        )

    def _describe(self, exc: Exception) -> str:
        text = str(exc)
        return self._clean(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)

    def _clean(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return text[:MAX_ERROR_CHARS]


def _read_limited(answer: httpx.Response, deadline: float) -> bytes:
    """At most MAX_BODY_BYTES of an answer, until the deadline (time.monotonic); the rest is
    not waited for."""
    chunks: list[bytes] = []
    size = 0
    for chunk in answer.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_BYTES or time.monotonic() > deadline:
            break
    return b"".join(chunks)[:MAX_BODY_BYTES]


def _error_code(raw: bytes) -> str | None:
    """`{"error": {"code": ...}}` of a refusal, when the answer has one."""
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code[:64] if isinstance(code, str) and code else None
