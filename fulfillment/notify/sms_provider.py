"""The SMS provider's API client (DESIGN.md "Customer SMS"). The HTTP edge for customer SMS.

HTTP Basic auth; `send` posts one message, `lookup` asks what became of a ClientReference,
`report` what became of one messageId. Answers are read in chunks up to MAX_BODY_BYTES and
within a total deadline. Every failure is one of three errors, split by what the caller must
do, because the provider does not deduplicate (the same ClientReference sent twice is two
SMS):

SmsError (FulfillmentError)
├── SmsRejected          400: the message itself is refused (`code`); never send it again
├── SmsRetryLater        known NOT sent (401, 402, 429, connection refused, ...): send again
│                        later, after `retry_after_s` when the provider named one; every
│                        failed read (lookup, report) is one too, reads are safe to repeat
└── SmsOutcomeUnknown    the send may have gone out (timeout, 5xx, a dropped or unreadable
                         answer): `lookup` the ClientReference before sending again

Nothing here logs: the recipient and the content are the customer's, and the errors name
neither.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import quote

import httpx

from fulfillment.domain.errors import FulfillmentError, InvalidPhoneNumber
from fulfillment.domain.phone import normalize_ghana_mobile

MAX_BODY_BYTES: Final = 64 * 1024
#: the longest Retry-After honoured; a provider asking for more is waited on in steps
MAX_RETRY_AFTER_S: Final = 3600.0
#: the provider's limit on a ClientReference (DESIGN.md)
MAX_REFERENCE_CHARS: Final = 64
#: what a status reads as here: the provider's, lowercased
SMS_STATUSES: Final = frozenset({"pending", "delivered", "failed", "undeliverable"})


# -- errors -------------------------------------------------------------------------------


class SmsError(FulfillmentError):
    """Anything the SMS provider did, or could not be asked."""

    code = "SMS_ERROR"


class SmsRejected(SmsError):
    """The provider refused this message (INVALID_RECIPIENT, INVALID_SENDER, CONTENT_TOO_LONG,
    any 400): sending it again would be refused again."""

    code = "SMS_REJECTED"

    def __init__(self, code: str) -> None:
        super().__init__(f"the SMS provider refused the message: {code}")
        self.code = code


class SmsRetryLater(SmsError):
    """Known not sent: send again later (after `retry_after_s`, when not None). `code` says
    why: UNAUTHORIZED and INSUFFICIENT_CREDIT are ours to fix, not the message's."""

    code = "SMS_RETRY_LATER"

    def __init__(
        self, reason: str, retry_after_s: float | None = None, *, code: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        if code is not None:
            self.code = code


class SmsOutcomeUnknown(SmsError):
    """The send may have happened: look the ClientReference up before sending again."""

    code = "SMS_OUTCOME_UNKNOWN"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- answers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmsReport:
    """One message as the provider knows it; `status` one of SMS_STATUSES."""

    message_id: str
    client_reference: str | None
    status: str
    update_time: str | None


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes
    retry_after: str | None


# -- the client ---------------------------------------------------------------------------


class SmsProviderClient:
    """One pooled connection to the provider; `base_url` includes /v1."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        # A whole answer must arrive within this, however slowly it drips.
        self._deadline_s = 3 * timeout_s
        self._http = httpx.Client(
            auth=httpx.BasicAuth(client_id, client_secret),
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"User-Agent": "atishare-fulfillment/0.1", "Accept": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SmsProviderClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never show the credentials
        return f"SmsProviderClient(base_url={self._base!r})"

    # -- the contract ---------------------------------------------------------------------

    def send(self, *, sender: str, to: str, content: str, client_reference: str) -> str:
        """POST /messages/send; the provider's messageId. `to` in any form a person types it
        (0241234567, +233241234567, 233241234567): it goes as 233XXXXXXXXX, and a number
        that is no Ghanaian mobile is refused here (SmsRejected INVALID_RECIPIENT) without
        asking the provider. Raises SmsRejected, SmsRetryLater or SmsOutcomeUnknown."""
        _check_reference(client_reference)
        recipient = provider_number(to)
        payload = {
            "From": sender,
            "To": recipient,
            "Content": content,
            "ClientReference": client_reference,
        }
        reply = self._request(
            "POST", "/messages/send", what="send", payload=payload, repeatable=False
        )
        if 200 <= reply.status < 300:
            message_id = _field(_json(reply.body), "messageId")
            if message_id is None:
                raise SmsOutcomeUnknown(f"unreadable answer to a send (HTTP {reply.status})")
            return message_id
        raise _refusal(reply)

    def lookup(self, client_reference: str) -> list[SmsReport]:
        """GET /messages?clientReference=: every message sent under it, oldest first (empty:
        the provider never received it). Raises SmsRetryLater on any failure."""
        _check_reference(client_reference)
        reply = self._request(
            "GET", "/messages", what="lookup", params={"clientReference": client_reference}
        )
        if reply.status != 200:
            raise _read_failure(reply)
        body = _json(reply.body)
        items = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise SmsRetryLater("garbage answer to a lookup: no messages list", code="GARBAGE")
        reports = [_report(item) for item in items]
        if any(r.client_reference not in (None, client_reference) for r in reports):
            raise SmsRetryLater("garbage answer to a lookup: another reference", code="GARBAGE")
        return reports

    def report(self, message_id: str) -> SmsReport | None:
        """GET /messages/{messageId}: the message, or None when the provider has no such one
        (404). Raises SmsRetryLater on any other failure."""
        if not message_id:
            raise ValueError("a messageId is required")
        reply = self._request("GET", f"/messages/{quote(message_id, safe='')}", what="report")
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise _read_failure(reply)
        found = _report(_json(reply.body))
        if found.message_id != message_id:
            raise SmsRetryLater("garbage answer to a report: another messageId", code="GARBAGE")
        return found

    # -- the wire -------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        payload: object = None,
        params: dict[str, str] | None = None,
        repeatable: bool = True,
    ) -> _Reply:
        """One request and its answer. A request that never left is SmsRetryLater; one that may
        have arrived is SmsOutcomeUnknown, or SmsRetryLater when it is `repeatable` (a read)."""
        if self._http.is_closed:
            raise SmsRetryLater(f"{what} not made: the client is closed", code="CLIENT_CLOSED")
        started = time.monotonic()
        try:
            with self._http.stream(
                method, self._base + path, json=payload, params=params
            ) as answer:
                body = self._read_limited(answer, started)
                return _Reply(answer.status_code, body, answer.headers.get("Retry-After"))
        except _NOT_SENT as exc:
            raise SmsRetryLater(
                f"{what} not made: {_describe(exc)}", code="CONNECTION_ERROR"
            ) from exc
        except (httpx.HTTPError, _TooMuch, RuntimeError) as exc:  # timeouts, dropped connections
            if repeatable:
                raise SmsRetryLater(
                    f"{what} failed: {_describe(exc)}", code="CONNECTION_ERROR"
                ) from exc
            raise SmsOutcomeUnknown(f"{what} may have gone out: {_describe(exc)}") from exc

    def _read_limited(self, answer: httpx.Response, started: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in answer.iter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _TooMuch(f"answer larger than {MAX_BODY_BYTES} bytes")
            if time.monotonic() - started > self._deadline_s:
                raise _TooMuch("answer exceeded the total deadline")
            chunks.append(chunk)
        return b"".join(chunks)


class _TooMuch(Exception):
    """An answer too large or too slow to wait for."""


#: what leaves nothing sent: no connection, or a request refused before it went out
_NOT_SENT: Final = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.InvalidURL,
)


# -- reading answers ------------------------------------------------------------------------


def provider_number(phone: str) -> str:
    """'0241234567', '+233 24 123 4567' -> '233241234567'; SmsRejected(INVALID_RECIPIENT)
    for a number that is no Ghanaian mobile."""
    try:
        return normalize_ghana_mobile(phone).removeprefix("+")
    except InvalidPhoneNumber as exc:
        raise SmsRejected("INVALID_RECIPIENT") from exc


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), within
    0..MAX_RETRY_AFTER_S; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # "nan" is no wait; "inf" and "1e400" are bounded like any long one
        return None if math.isnan(seconds) else min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; a naive one cannot be placed
        return None
    wait = when.timestamp() - (time.time() if now is None else now)
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


def _check_reference(client_reference: str) -> None:
    if not 0 < len(client_reference) <= MAX_REFERENCE_CHARS:
        raise ValueError(f"a ClientReference is 1 to {MAX_REFERENCE_CHARS} characters")


def _describe(exc: Exception) -> str:
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]]
        return None


def _field(body: object, name: str) -> str | None:
    """A non-empty string field of a JSON object, else None."""
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


def _error_code(body: object) -> str | None:
    """`{"error": {"code": ...}}`, the shape of the provider's refusals."""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code[:64] if isinstance(code, str) and code else None


def _refusal(reply: _Reply) -> SmsError:
    """What a send's answer other than 2xx means."""
    status = reply.status
    code = _error_code(_json(reply.body))
    if status in (400, 413, 422):
        return SmsRejected(code or f"HTTP_{status}")
    if status in (401, 403):
        return SmsRetryLater(
            f"HTTP {status}: the SMS provider refused our client id and secret",
            code="UNAUTHORIZED",
        )
    if status == 402:
        return SmsRetryLater(
            f"HTTP 402 {code or 'PAYMENT_REQUIRED'}: the SMS account needs credit",
            code="INSUFFICIENT_CREDIT",
        )
    if status == 429:
        return SmsRetryLater(
            "HTTP 429: the SMS provider's rate limit",
            retry_after(reply.retry_after),
            code="RATE_LIMITED",
        )
    if 400 <= status < 500:  # refused before anything was sent: a wrong URL, most likely
        return SmsRetryLater(f"HTTP {status} {code or ''}".rstrip(), code=f"HTTP_{status}")
    return SmsOutcomeUnknown(f"HTTP {status} {code or ''}".rstrip())


def _read_failure(reply: _Reply) -> SmsRetryLater:
    """What a read's answer other than 200 (and a report's 404) means: ask again later."""
    refusal = _refusal(reply)
    if isinstance(refusal, SmsRetryLater):
        return refusal
    code = refusal.code if isinstance(refusal, SmsRejected) else f"HTTP_{reply.status}"
    return SmsRetryLater(f"read failed: {refusal}", code=code)


def _report(item: object) -> SmsReport:
    """One message object of the provider; SmsRetryLater when it is not one."""
    if not isinstance(item, dict):
        raise SmsRetryLater("garbage message: not an object", code="GARBAGE")
    message_id = _field(item, "messageId")
    status = item.get("status")
    reference = item.get("clientReference")
    update_time = item.get("updateTime")
    if message_id is None:
        raise SmsRetryLater("garbage message: no messageId", code="GARBAGE")
    if not isinstance(status, str) or status.lower() not in SMS_STATUSES:
        raise SmsRetryLater("garbage message: unknown status", code="GARBAGE")
    if not isinstance(reference, str | None) or not isinstance(update_time, str | None):
        raise SmsRetryLater("garbage message: clientReference or updateTime", code="GARBAGE")
    return SmsReport(message_id, reference, status.lower(), update_time)
