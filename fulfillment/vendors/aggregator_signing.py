"""The aggregator's callback signature (DESIGN.md "Other networks"), shared by the webhook
that checks it and the simulator that signs its callbacks.

signature = hex(HMAC-SHA256(AGGREGATOR_WEBHOOK_SECRET, "<timestamp>.<raw body>"))
headers: X-Aggregator-Timestamp (unix seconds), X-Aggregator-Signature
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from fulfillment.domain.constants import VENDOR_SIGNATURE_MAX_SKEW_S

TIMESTAMP_HEADER: Final = "X-Aggregator-Timestamp"
SIGNATURE_HEADER: Final = "X-Aggregator-Signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    message = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = str(int(now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(
    secret: str,
    *,
    timestamp: str | None,
    signature: str | None,
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
    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
