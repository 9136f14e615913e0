"""The vendors' signed callbacks: `POST /webhooks/at-ishare` (DESIGN.md "AT-iShare vendor
API") and `POST /webhooks/aggregator` (DESIGN.md "Other networks").

AT-iShare signs it like our requests: `X-API-Key`, `X-Timestamp` (within 300 s) and
`X-Signature` = hex(HMAC-SHA256(secret, "<ts>\\nPOST\\n/webhooks/at-ishare\\n<raw body>")).
The aggregator sends the body of its status answer with `X-Aggregator-Timestamp` (within
300 s) and `X-Aggregator-Signature` = hex(HMAC-SHA256(AGGREGATOR_WEBHOOK_SECRET,
"<ts>.<raw body>")); without that secret its callbacks are refused (503).
Either way a signed callback is only a hint, and changes nothing twice:

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
from typing import Annotated, Any, Final, TypeVar

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, Field, ValidationError

from fulfillment.domain.errors import ConfigurationError, MalformedMessage, OrderNotFound
from fulfillment.domain.order import parse_order_id
from fulfillment.services.admin import view_status
from fulfillment.services.delivery import confirm_delivery
from fulfillment.services.ports import Outcome
from fulfillment.telemetry.logs import get_logger
from fulfillment.vendors import aggregator_signing, atishare_signing
from fulfillment.web.api_auth import ApiError, JsonErrorRoute, web_deps
from fulfillment.web.api_models import Text, errors
from fulfillment.web.security import tokens_match

log = get_logger("fulfillment.webhook")

WEBHOOK_PATH: Final = "/webhooks/at-ishare"
AGGREGATOR_WEBHOOK_PATH: Final = "/webhooks/aggregator"
_M = TypeVar("_M", bound=BaseModel)
MAX_BODY_BYTES: Final = 64 * 1024


class VendorCallback(BaseModel):
    reference: Text = Field(max_length=64, description="the order id")
    status: Text = Field(max_length=32, description="what the vendor says (confirmed by GET)")
    transaction_id: Text | None = Field(default=None, max_length=128)


class AggregatorOrder(BaseModel):
    request_id: Text = Field(max_length=64, description="the order id")
    status: Text = Field(max_length=32, description="what the aggregator says (confirmed by GET)")
    order_ref: Text | None = Field(default=None, max_length=128)


class AggregatorCallback(BaseModel):
    """The body of the aggregator's status answer."""

    data: AggregatorOrder


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


#: what either webhook may answer besides 200
_ANSWERS: dict[int | str, dict[str, Any]] = {
    202: {"model": WebhookAck, "description": "accepted; the order is not finished yet"},
    **errors(401, 404, 413, 422, 503),
}


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


@router.post(
    WEBHOOK_PATH,
    response_model=WebhookAck,
    responses=_ANSWERS,
    openapi_extra=_body_schema(VendorCallback),
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
        and atishare_signing.verify(
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
    callback = _parse(VendorCallback, raw)
    order_id = _order_id(callback.reference, "reference")
    digest = _digest(x_timestamp, x_signature, raw)
    return _act(request, response, order_id, callback.status, callback.status == "success", digest)


@router.post(
    AGGREGATOR_WEBHOOK_PATH,
    response_model=WebhookAck,
    responses=_ANSWERS,
    openapi_extra=_body_schema(AggregatorCallback),
    summary="The data aggregator's order callback (signed); confirmed with it before acting",
)
def aggregator_callback(
    request: Request,
    response: Response,
    raw: Annotated[bytes, Depends(raw_body)],
    x_aggregator_timestamp: Annotated[str | None, Header()] = None,
    x_aggregator_signature: Annotated[str | None, Header()] = None,
) -> WebhookAck:
    deps = web_deps(request)
    if not deps.aggregator_secret:
        raise ApiError(
            503, "VENDOR_NOT_CONFIGURED", "AGGREGATOR_WEBHOOK_SECRET is not set: callbacks refused"
        )
    signed = (x_aggregator_signature is None or x_aggregator_signature.isascii()) and (
        aggregator_signing.verify(
            deps.aggregator_secret,
            timestamp=x_aggregator_timestamp,
            signature=x_aggregator_signature,
            body=raw,
            now=time.time(),
        )
    )
    if not signed:
        log.warning("webhook.rejected", vendor="aggregator", reason="bad signature or timestamp")
        raise ApiError(401, "UNAUTHORIZED", "bad signature or timestamp")
    callback = _parse(AggregatorCallback, raw).data
    order_id = _order_id(callback.request_id, "data.request_id")
    digest = _digest(x_aggregator_timestamp, x_aggregator_signature, raw)
    return _act(
        request, response, order_id, callback.status, callback.status == "delivered", digest
    )


def _parse(model: type[_M], raw: bytes) -> _M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        raise ApiError(422, "VALIDATION_ERROR", message) from exc


def _order_id(value: str, field: str) -> str:
    try:
        return parse_order_id(value)
    except MalformedMessage as exc:
        raise ApiError(422, "VALIDATION_ERROR", f"{field}: {exc}") from exc


def _digest(timestamp: str | None, signature: str | None, raw: bytes) -> str:
    """What makes a callback a replay: the same signed bytes."""
    return hashlib.sha256(f"{timestamp}\n{signature}\n".encode() + raw).hexdigest()


def _act(
    request: Request,
    response: Response,
    order_id: str,
    vendor_status: str,
    delivered: bool,
    digest: str,
) -> WebhookAck:
    """A signed callback, after its vendor's checks: recorded once; a reported delivery
    confirmed with the vendor; anything else left to the order's schedule."""
    deps = web_deps(request)
    if not deps.store.record_callback(digest, order_id, vendor_status):
        log.info("webhook.replayed", order_id=order_id, vendor_status=vendor_status)
        return WebhookAck(status=_current_status(deps.store.order_row(order_id), order_id))
    if not delivered:
        # Recorded above; the order's own schedule looks it up (a callback never hurries a
        # retry or spends a status check).
        log.info("webhook.recorded", order_id=order_id, vendor_status=vendor_status)
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
        vendor_status=vendor_status,
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
