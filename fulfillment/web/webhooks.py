"""The AT-iShare callback `POST /webhooks/at-ishare` (DESIGN.md "AT-iShare vendor API").

The vendor signs it like our requests: `X-API-Key`, `X-Timestamp` (within 300 s) and
`X-Signature` = hex(HMAC-SHA256(secret, "<ts>\\nPOST\\n/webhooks/at-ishare\\n<raw body>")).
A signed callback is only a hint, and changes nothing twice:

- a replay (the same body, timestamp and signature) is answered 200 without any work;
- one that reports success is confirmed with the vendor's status endpoint
  (fulfillment.services.delivery.confirm_delivery), which completes the order at once and never
  buys; anything short of a confirmed delivery leaves the order exactly as it was;
- one that reports anything else is recorded and the order keeps its schedule (its backoff,
  its status checks): its own worker looks the reference up when it is due.

No breaker or rate-limit state makes it answer 5xx: a confirmation that cannot be made now
leaves the order to its schedule and answers 202.
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, Field, ValidationError

from fulfillment.domain.errors import ConfigurationError, MalformedMessage, OrderNotFound
from fulfillment.domain.order import parse_order_id
from fulfillment.services.admin import view_status
from fulfillment.services.delivery import confirm_delivery
from fulfillment.services.ports import Outcome
from fulfillment.telemetry.logs import get_logger
from fulfillment.vendors.atishare_signing import verify
from fulfillment.web.api_auth import ApiError, JsonErrorRoute, web_deps
from fulfillment.web.api_models import Text, errors
from fulfillment.web.security import tokens_match

log = get_logger("fulfillment.webhook")

WEBHOOK_PATH: Final = "/webhooks/at-ishare"
MAX_BODY_BYTES: Final = 64 * 1024


class VendorCallback(BaseModel):
    reference: Text = Field(max_length=64, description="the order id")
    status: Text = Field(max_length=32, description="what the vendor says (confirmed by GET)")
    transaction_id: Text | None = Field(default=None, max_length=128)


class WebhookAck(BaseModel):
    success: bool = True
    status: str = Field(
        description="the order's status after the callback (as the dashboard names it): "
        "200 when nothing more comes of it (confirmed, a replay, nothing to do), 202 while "
        "the order is still under way"
    )


async def raw_body(request: Request) -> bytes:
    """The exact bytes the vendor signed (bounded)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", f"body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


router = APIRouter(tags=["vendor webhook"], route_class=JsonErrorRoute)

_BODY_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": VendorCallback.model_json_schema()}},
    }
}


@router.post(
    WEBHOOK_PATH,
    response_model=WebhookAck,
    responses={
        202: {"model": WebhookAck, "description": "accepted; the order is not finished yet"},
        **errors(401, 404, 413, 422, 503),
    },
    openapi_extra=_BODY_SCHEMA,
    summary="AT-iShare delivery callback (signed); confirmed with the vendor before acting",
)
def at_ishare_callback(
    request: Request,
    response: Response,
    raw: Annotated[bytes, Depends(raw_body)],
    x_api_key: Annotated[str | None, Header()] = None,
    x_timestamp: Annotated[str | None, Header()] = None,
    x_signature: Annotated[str | None, Header()] = None,
) -> WebhookAck:
    deps = web_deps(request)
    if not deps.vendor_key or not deps.vendor_secret:
        raise ApiError(503, "VENDOR_NOT_CONFIGURED", "the vendor credentials are not configured")
    # verify() compares str digests, which raises on non-ASCII: no hex signature is.
    readable = x_signature is None or x_signature.isascii()
    signed = (
        readable
        and tokens_match(x_api_key, deps.vendor_key)
        and verify(
            deps.vendor_secret,
            timestamp=x_timestamp,
            signature=x_signature,
            method="POST",
            path=WEBHOOK_PATH,
            body=raw,
            now=time.time(),
        )
    )
    if not signed:
        log.warning("webhook.rejected", reason="bad key, signature or timestamp")
        raise ApiError(401, "UNAUTHORIZED", "bad API key, signature or timestamp")
    try:
        callback = VendorCallback.model_validate_json(raw)
        order_id = parse_order_id(callback.reference)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        raise ApiError(422, "VALIDATION_ERROR", message) from exc
    except MalformedMessage as exc:
        raise ApiError(422, "VALIDATION_ERROR", f"reference: {exc}") from exc
    signed_bytes = f"{x_timestamp}\n{x_signature}\n".encode() + raw
    digest = hashlib.sha256(signed_bytes).hexdigest()
    if not deps.store.record_callback(digest, order_id, callback.status):
        log.info("webhook.replayed", order_id=order_id, vendor_status=callback.status)
        return WebhookAck(status=_current_status(deps.store.order_row(order_id), order_id))
    if callback.status != "success":
        # Recorded above; the order's own schedule looks it up (a callback never hurries a
        # retry or spends a status check).
        log.info("webhook.recorded", order_id=order_id, vendor_status=callback.status)
        current = _current_status(deps.store.order_row(order_id), order_id)
        response.status_code = 202
        return WebhookAck(status=current)
    try:
        fulfil_deps = deps.fulfil_deps()
    except ConfigurationError as exc:
        raise ApiError(503, "VENDOR_NOT_CONFIGURED", str(exc)) from exc
    outcome = confirm_delivery(order_id, fulfil_deps)  # OrderNotFound: the app answers 404
    log.info(
        "webhook.confirmed",
        order_id=order_id,
        vendor_status=callback.status,
        outcome=outcome.value,
    )
    if outcome is Outcome.SUCCESS:
        return WebhookAck(status="success")
    current = _current_status(deps.store.order_row(order_id), order_id)
    if outcome is not Outcome.NOT_DUE:
        response.status_code = 202  # still under way; NOT_DUE: there was nothing to do
    return WebhookAck(status=current)


def _current_status(row: dict[str, Any] | None, order_id: str) -> str:
    if row is None:
        raise OrderNotFound(order_id)
    return view_status(row)
