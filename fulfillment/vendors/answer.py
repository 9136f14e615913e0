"""What a vendor said about one order, in the fleet's words, whatever its protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: success: delivered; pending: accepted, not yet delivered; failed: nothing was delivered
#: (a new purchase may be made); not_found: the vendor never received it
AnswerStatus = Literal["success", "pending", "failed", "not_found"]


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
