"""What a vendor said about one order, in the fleet's words, whatever its protocol.

VendorAnswer is the readable answer; read_answer and refusal are the two halves of reading
a reply that every vendor client shares (a transaction object looked up in the client's
status table; a refusal mapped onto fulfillment.domain.errors by its HTTP status).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fulfillment.domain.errors import (
    InsufficientBalance,
    PermanentVendorError,
    VendorError,
    VendorProtocolError,
    VendorServerError,
    VendorUnauthorized,
)
from fulfillment.vendors.http import Reply, clip, error_code, error_message

#: success: delivered; pending: accepted, not yet delivered; failed: nothing was delivered
#: (a new purchase may be made); not_found: the vendor never received it
AnswerStatus = Literal["success", "pending", "failed", "not_found"]

#: the longest vendor id kept (stored, shown to admins, sent to the platform)
MAX_TRANSACTION_ID = 200


@dataclass(frozen=True, slots=True)
class VendorAnswer:
    """A readable vendor answer about one reference."""

    status: AnswerStatus
    reference: str
    #: the vendor's own id of the purchase (AT-iShare's transaction_id, the aggregator's
    #: order_ref), shown to admins and sent to the platform
    transaction_id: str | None
    http_status: int
    raw: object
    latency_ms: int
    request_id: str | None = None


def protocol_error(message: str, reply: Reply) -> VendorProtocolError:
    """An answer we cannot read: the outcome is unknown, the answer kept for the audit."""
    return VendorProtocolError(
        message, http_status=reply.status, raw=clip(reply.body), latency_ms=reply.latency_ms
    )


def read_answer(
    txn: object,
    reference: str,
    reply: Reply,
    statuses: Mapping[str, AnswerStatus],
    *,
    reference_field: str,
    id_field: str,
) -> VendorAnswer:
    """The VendorAnswer a transaction object `txn` of `reply` (its body, or a part of it)
    means: its status looked up in `statuses` (the vendor's word -> ours), its
    `reference_field`, when present, equal to `reference`; VendorProtocolError otherwise.
    `raw` keeps the whole body."""
    if not isinstance(txn, dict):
        raise protocol_error("vendor answer is not a JSON object", reply)
    word = txn.get("status")
    status = statuses.get(word) if isinstance(word, str) else None
    if status is None:
        raise protocol_error(f"unexpected transaction status {str(word)[:40]!r}", reply)
    got_ref = txn.get(reference_field)
    if got_ref is not None and got_ref != reference:
        raise protocol_error(f"vendor answered about another {reference_field}", reply)
    vendor_id = txn.get(id_field)
    return VendorAnswer(
        status=status,
        reference=reference,
        transaction_id=str(vendor_id)[:MAX_TRANSACTION_ID] if vendor_id is not None else None,
        http_status=reply.status,
        raw=reply.body,
        latency_ms=reply.latency_ms,
        request_id=reply.request_id,
    )


def refusal(
    reply: Reply, permanent_codes: Mapping[str, str], *, name_code: bool = False
) -> VendorError:
    """The error an answer other than the expected ones means, for every vendor alike.
    `permanent_codes` maps the vendor's validation codes onto the fleet's (any other 400/422
    is VENDOR_VALIDATION_ERROR); `name_code` puts the vendor's own code before its message
    when the two vocabularies differ, so that admins see what the vendor said."""
    status, body, latency = reply.status, reply.body, reply.latency_ms
    code = error_code(body)
    message = error_message(body) or f"vendor answered HTTP {status}"
    if name_code and code:
        message = f"{code}: {message}"
    raw = clip(body)
    if status == 401:
        return VendorUnauthorized(message, http_status=status, raw=raw, latency_ms=latency)
    if status == 402:
        return InsufficientBalance(message, http_status=status, raw=raw, latency_ms=latency)
    if status >= 500:
        return VendorServerError(message, http_status=status, raw=raw, latency_ms=latency)
    if status in (400, 422):
        fleet_code = permanent_codes.get(code, "VENDOR_VALIDATION_ERROR") if code else None
        return PermanentVendorError(
            message,
            code=fleet_code or "VENDOR_VALIDATION_ERROR",
            http_status=status,
            raw=raw,
            latency_ms=latency,
        )
    # 404 on a purchase, 405, a 3xx...: our configuration or the vendor is off, not the order.
    return VendorProtocolError(
        f"unexpected HTTP {status}: {message}", http_status=status, raw=raw, latency_ms=latency
    )
