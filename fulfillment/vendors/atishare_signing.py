"""Request signing of the AT-iShare contract (DESIGN.md), shared by client, simulator and webhook.

signature = hex(HMAC-SHA256(secret, "<timestamp>\\n<METHOD>\\n<path>\\n<body>"))
"""

from __future__ import annotations

import hashlib
import hmac

from fulfillment.domain.constants import VENDOR_SIGNATURE_MAX_SKEW_S


def sign(secret: str, timestamp: str, method: str, path: str, body: bytes | str) -> str:
    raw = body.encode() if isinstance(body, str) else body
    message = b"\n".join([timestamp.encode(), method.upper().encode(), path.encode(), raw])
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(
    key: str, secret: str, method: str, path: str, body: bytes, now: float
) -> dict[str, str]:
    timestamp = str(int(now))
    return {
        "X-API-Key": key,
        "X-Timestamp": timestamp,
        "X-Signature": sign(secret, timestamp, method, path, body),
    }


def verify(
    secret: str,
    *,
    timestamp: str | None,
    signature: str | None,
    method: str,
    path: str,
    body: bytes,
    now: float,
    max_skew_s: float = VENDOR_SIGNATURE_MAX_SKEW_S,
) -> bool:
    """True when the signature is right and the timestamp is within max_skew_s of now."""
    if not timestamp or not signature:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > max_skew_s:
        return False
    expected = sign(secret, timestamp, method, path, body)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
