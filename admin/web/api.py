"""The platform API and the admin JSON API (DESIGN.md "HTTP API").

- `/api/orders/fulfillment` (bearer API_TOKEN): the purchase platform triggers, retries and
  reads an order's fulfillment.
- `/api/admin/...` (bearer ADMIN_TOKEN, or the dashboard's session cookie; with the cookie, a
  state-changing call also sends `X-CSRF-Token`): list, detail, stats, retry, dismiss and
  Dramatiq's own dead-letter queue.

Routes are sync functions (FastAPI runs them in its threadpool: the store and Redis block).
The rules live in admin/service.py; this module only authenticates, validates and shapes.
Every error is the app's JSON `{"success": false, "error": {"code", "message"}}`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException as StarletteHTTPException

from admin.service import MAX_PAGE, MAX_REASON, ActionResult
from admin.web.app import WebDeps, error_body
from admin.web.security import SESSION_COOKIE, Sessions, bearer, tokens_match
from fulfillment.logs import get_logger

log = get_logger("fulfillment.web")

#: Order ids one retry or dismiss call may name (allFiltered names none: the service walks it).
MAX_IDS = 1000
#: Action results one answer lists (the counts always cover all of them).
MAX_RESULTS = 1000
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PLATFORM_ACTOR = "api"
BEARER_ACTOR = "admin-token"
DEFAULT_PLATFORM_RETRY_REASON = "retry requested by the platform API"

# -- errors ------------------------------------------------------------------------------


class ApiError(HTTPException):
    """An HTTP error with the app's error code. Routes of this module render it as the JSON
    error body; elsewhere FastAPI's HTTPException handler still answers its status."""

    def __init__(
        self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code


_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    422: "VALIDATION_ERROR",
}


def error_response(exc: StarletteHTTPException) -> JSONResponse:
    code = getattr(exc, "code", None) or _STATUS_CODES.get(exc.status_code, "HTTP_ERROR")
    return JSONResponse(
        error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


class JsonErrorRoute(APIRoute):
    """A route whose HTTPExceptions (401 and 403 from authentication, 400 for an unreadable
    body, 413...) answer the app's JSON error shape instead of FastAPI's `{"detail": ...}`.

    `authenticate`, when set, runs before FastAPI reads and validates the body, so a caller
    without credentials gets its 401 and learns nothing of the body's rules. (The routes'
    dependencies check again: they put the schemes in the OpenAPI document and name the
    actor.)"""

    authenticate: ClassVar[Callable[[Request], str] | None] = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        authenticate = type(self).authenticate

        async def run(request: Request) -> Response:
            try:
                if authenticate is not None:
                    authenticate(request)
                return await handler(request)
            except StarletteHTTPException as exc:  # FastAPI raises Starlette's for bad bodies
                return error_response(exc)

        return run


def unauthorized(which: str) -> ApiError:
    return ApiError(
        401,
        "UNAUTHORIZED",
        f"missing or wrong bearer token ({which})",
        headers={"WWW-Authenticate": "Bearer"},
    )


# -- authentication ------------------------------------------------------------------------

api_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiToken",
    description="`Authorization: Bearer <API_TOKEN>` (the purchase platform).",
)
admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="`Authorization: Bearer <ADMIN_TOKEN>` (admins and scripts).",
)
session_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="dashboardSession",
    description="The dashboard's signed session cookie; state-changing calls made with it "
    f"also send the session's CSRF token in `{CSRF_HEADER}`.",
)


def web_deps(request: Request) -> WebDeps:
    deps: WebDeps = request.app.state.deps
    return deps


def check_api_token(request: Request) -> str:
    """The platform API's caller ("api"), or 401. Compared in constant time."""
    if not tokens_match(bearer(request.headers.get("authorization")), web_deps(request).api_token):
        raise unauthorized("API_TOKEN")
    return PLATFORM_ACTOR


def require_api(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(api_bearer)],
) -> str:
    """check_api_token as a dependency (HTTPBearer puts the scheme in the OpenAPI document)."""
    return check_api_token(request)


def require_admin(request: Request) -> str:
    """Who is acting: "admin-token" for `Authorization: Bearer <ADMIN_TOKEN>`, or the name of
    the dashboard session's user. 401 without either (a bearer token, when given, decides);
    403 when a session-cookie call that changes state lacks the session's X-CSRF-Token."""
    deps = web_deps(request)
    given = bearer(request.headers.get("authorization"))
    if given is not None:
        if tokens_match(given, deps.admin_token):
            return BEARER_ACTOR
        raise unauthorized("ADMIN_TOKEN")
    sessions: Sessions = request.app.state.sessions
    session = sessions.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise unauthorized("ADMIN_TOKEN or a dashboard session")
    if request.method not in SAFE_METHODS and not tokens_match(
        request.headers.get(CSRF_HEADER), session.csrf
    ):
        raise ApiError(403, "CSRF_FAILED", f"missing or wrong {CSRF_HEADER} for this session")
    return session.actor


Admin = Annotated[str, Depends(require_admin)]


class PlatformRoute(JsonErrorRoute):
    authenticate = check_api_token


class AdminRoute(JsonErrorRoute):
    authenticate = require_admin


# -- shared types ----------------------------------------------------------------------------


def _storable(text: str) -> str:
    """Text PostgreSQL can store: no NUL character, valid Unicode (no lone surrogates)."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode") from exc
    return text


#: No NUL anywhere (the same rule as _storable, stated in the OpenAPI document).
NO_NUL = r"^[^\x00]*$"
#: ...and at least one character that str.strip() keeps.
VISIBLE = r"^[^\x00]*[^\s\x00-\x1f][^\x00]*$"
Text = Annotated[str, StringConstraints(pattern=NO_NUL), AfterValidator(_storable)]
#: Empty (no filter), or something with a digit to search for.
PHONE_SEARCH = r"^$|^[^\x00]*[0-9][^\x00]*$"
PhoneSearch = Annotated[
    str, StringConstraints(max_length=40, pattern=PHONE_SEARCH), AfterValidator(_storable)
]
Reason = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_REASON, pattern=VISIBLE),
    AfterValidator(_storable),
]
OrderIdText = Annotated[Text, Field(min_length=1, max_length=64)]
StatusFilter = Literal[
    "all", "pending", "processing", "success", "failed", "dead_lettered", "open_dead_letters"
]


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorInfo(BaseModel):
    code: str = Field(examples=["ORDER_NOT_FOUND"])
    message: str


class ErrorResponse(BaseModel):
    success: Literal[False] = False
    error: ErrorInfo


_ERROR_TEXT = {
    400: "The body could not be read (not UTF-8).",
    401: "Missing or wrong bearer token (`WWW-Authenticate: Bearer`).",
    403: "A dashboard-session call that changes state without the session's X-CSRF-Token.",
    404: "No such order.",
    409: "The order's state refuses the action (the code says why).",
    413: "The body is too large.",
    422: "Malformed request: body, query or id.",
    503: "PostgreSQL or Redis is unavailable; try again.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries of the JSON error shape."""
    return {s: {"model": ErrorResponse, "description": _ERROR_TEXT[s]} for s in statuses}


def _iso(value: object) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A database row as JSON-friendly values: ISO-8601 UTC times, ids and decimals as text."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            out[key] = _iso(value)
        elif isinstance(value, UUID | Decimal):
            out[key] = str(value)
        else:
            out[key] = value
    return out


# -- the platform API --------------------------------------------------------------------------


class FulfillmentAction(CamelModel):
    action: Literal["trigger", "retry"] = Field(
        description="trigger: publish a pending order; retry: one more attempt for a failed "
        "(or dead-lettered) order."
    )
    order_id: UUID
    reason: Text | None = Field(
        default=None, max_length=MAX_REASON, description="why (retry only; goes to the audit)"
    )


class FulfillmentRef(CamelModel):
    order_id: str
    status: str = Field(description="pending, processing, success, failed or dead_lettered")
    reference: str = Field(description="the vendor reference (the order id)")


class ActionResponse(BaseModel):
    success: Literal[True] = True
    message: str
    fulfillment: FulfillmentRef


class LatestAttempt(CamelModel):
    attempt_number: int
    action: str
    status: str
    error_code: str | None
    error_message: str | None
    http_status: int | None
    latency_ms: int | None
    retry_after: str | None
    created_at: str | None


class FulfillmentState(CamelModel):
    order_id: str
    reference: str
    status: str
    attempts: int | None
    last_error_code: str | None
    last_error_message: str | None
    next_retry_at: str | None
    dead_letter_reason: str | None
    fulfilled_at: str | None
    transaction_id: str | None
    latest_attempt: LatestAttempt | None


class StatusResponse(BaseModel):
    success: Literal[True] = True
    fulfillment: FulfillmentState


platform = APIRouter(
    prefix="/api/orders",
    tags=["platform API"],
    route_class=PlatformRoute,
    dependencies=[Depends(require_api)],
    responses=errors(401, 503),
)


@platform.post(
    "/fulfillment",
    response_model=ActionResponse,
    responses=errors(400, 404, 409, 422),
    summary="Trigger or retry an order's fulfillment",
)
def act_on_fulfillment(body: FulfillmentAction, request: Request) -> ActionResponse:
    service = web_deps(request).service
    oid = str(body.order_id)
    result: ActionResult
    if body.action == "trigger":
        result = service.trigger(oid, actor=PLATFORM_ACTOR)
    else:
        reason = (body.reason or "").strip() or DEFAULT_PLATFORM_RETRY_REASON
        (result,) = service.retry([oid], actor=PLATFORM_ACTOR, reason=reason)
    if not result.ok:
        raise ApiError(
            404 if result.code == "ORDER_NOT_FOUND" else 409, result.code, result.message
        )
    status = service.latest(oid)["status"]
    return ActionResponse(
        message=result.message,
        fulfillment=FulfillmentRef(order_id=oid, status=status, reference=oid),
    )


@platform.get(
    "/fulfillment",
    response_model=StatusResponse,
    responses=errors(404, 422),
    summary="An order's fulfillment state and latest attempt",
)
def fulfillment_status(
    request: Request, order_id: Annotated[UUID, Query(alias="orderId")]
) -> StatusResponse:
    latest = web_deps(request).service.latest(str(order_id))
    return StatusResponse(fulfillment=FulfillmentState.model_validate(latest))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def method_not_allowed(router: APIRouter, path: str, allowed: tuple[str, ...]) -> None:
    """Answer the other methods on `path` with a 405 naming every allowed one. Needed where
    two routes share a path (the router's 405 names only the first route's methods), or where
    a parameterised sibling (`/orders/{order_id}`) would take the request instead."""
    allow = ", ".join(allowed)

    def not_allowed() -> None:
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"use {allow}", headers={"Allow": allow})

    others = [m for m in _METHODS if m not in allowed]
    router.add_api_route(path, not_allowed, methods=others, include_in_schema=False)


method_not_allowed(platform, "/fulfillment", ("GET", "POST"))


# -- the admin API -------------------------------------------------------------------------------


class OrderView(BaseModel):
    """An order as admins see it (admin.service.view_row): masked phone, ISO-8601 UTC times."""

    id: str
    created_at: str | None
    phone: str | None
    network: str | None
    size_gb: str | None
    package_name: str | None
    status: str
    attempts: int | None
    last_error_code: str | None
    last_error_message: str | None
    next_retry_at: str | None
    dead_letter_reason: str | None
    dead_lettered_at: str | None
    dismissed_at: str | None
    fulfilled_at: str | None
    vendor_transaction_id: str | None


class OrderPage(BaseModel):
    success: Literal[True] = True
    orders: list[OrderView]
    next_cursor: str | None = Field(
        alias="nextCursor", description="pass as `cursor` for the next page; null on the last"
    )


class AttemptView(BaseModel):
    """One fulfillment_logs row (phone masked)."""

    id: int
    action: str
    status: str
    attempt_number: int
    max_attempts: int
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    latency_ms: int | None = None
    retry_after: str | None = None
    fulfilled_at: str | None = None
    vendor_transaction_id: str | None = None
    worker: str | None = None
    phone: str | None = None
    api_response: Any = Field(default=None, description="the vendor's raw answer")
    created_at: str | None = None


class AuditEntry(BaseModel):
    id: int
    actor: str
    action: str
    order_id: str | None = None
    reason: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None


class NotificationView(BaseModel):
    id: int
    kind: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    webhook_state: str
    webhook_attempts: int
    webhook_last_error: str | None = None
    delivered_at: str | None = None
    created_at: str | None = None


class OrderDetail(BaseModel):
    success: Literal[True] = True
    order: OrderView
    attempts: list[AttemptView]
    audit: list[AuditEntry]
    notifications: list[NotificationView]


class Stats(BaseModel):
    total: int
    success: int
    failed: int
    processing: int
    pending: int
    dead_lettered: int
    open_dead_letters: int
    success_rate: float | None = Field(description="success / (success + dead-lettered)")
    median_fulfil_s_24h: float | None = Field(
        description="median seconds from order to delivery over the last 24 h"
    )


class StatsResponse(BaseModel):
    success: Literal[True] = True
    stats: Stats


class FilterBody(BaseModel):
    status: StatusFilter = "all"
    phone: PhoneSearch | None = Field(default=None, description="any way typed")
    network: Text | None = Field(default=None, max_length=32)


class RetrySelected(CamelModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    order_ids: list[OrderIdText] = Field(min_length=1, max_length=MAX_IDS)
    reason: Reason


class RetryFiltered(CamelModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    all_filtered: FilterBody = Field(
        description="retry every failed or dead-lettered order this filter matches"
    )
    reason: Reason


class DismissBody(CamelModel):
    order_ids: list[OrderIdText] = Field(min_length=1, max_length=MAX_IDS)
    reason: Reason


class ActionResultView(CamelModel):
    order_id: str
    ok: bool
    code: str
    message: str


class ActionsResponse(BaseModel):
    success: Literal[True] = True
    total: int
    succeeded: int
    refused: int
    results: list[ActionResultView] = Field(description=f"the first {MAX_RESULTS} results")


class DeadMessageView(BaseModel):
    id: str
    queue: str
    actor: str | None
    args: Any
    failed_at: str | None
    body: str


class DlqResponse(BaseModel):
    success: Literal[True] = True
    count: int
    messages: list[DeadMessageView]


class DlqIds(BaseModel):
    ids: list[Annotated[Text, Field(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=MAX_IDS
    )


class DlqActionResponse(BaseModel):
    success: Literal[True] = True
    done: int = Field(description="messages requeued or deleted (unknown ids are skipped)")


admin = APIRouter(
    prefix="/api/admin",
    tags=["admin API"],
    route_class=AdminRoute,
    # Security schemes for the OpenAPI document; require_admin does the checking.
    dependencies=[Security(admin_bearer), Security(session_cookie), Depends(require_admin)],
    responses=errors(401, 503),
)


def _actions(results: list[ActionResult]) -> ActionsResponse:
    ok = sum(1 for r in results if r.ok)
    return ActionsResponse(
        total=len(results),
        succeeded=ok,
        refused=len(results) - ok,
        results=[ActionResultView.model_validate(r.as_dict()) for r in results[:MAX_RESULTS]],
    )


@admin.get(
    "/orders",
    response_model=OrderPage,
    responses=errors(422),
    summary="Orders, newest first, filtered, one keyset page at a time",
)
def list_orders(
    request: Request,
    status: StatusFilter = "all",
    phone: Annotated[PhoneSearch | None, Query(description="any way typed")] = None,
    network: Annotated[Text | None, Query(max_length=32)] = None,
    cursor: Annotated[Text | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> OrderPage:
    service = web_deps(request).service
    flt = service.make_filter(view=status, phone=phone, network=network)
    page = service.list(flt, cursor=cursor, limit=limit)
    return OrderPage(
        orders=[OrderView.model_validate(r) for r in page.rows], nextCursor=page.next_cursor
    )


@admin.post(
    "/orders/retry",
    response_model=ActionsResponse,
    responses=errors(400, 403, 422),
    summary="One more attempt for failed or dead-lettered orders (others are refused)",
)
def retry_orders(
    body: RetrySelected | RetryFiltered, request: Request, actor: Admin
) -> ActionsResponse:
    service = web_deps(request).service
    if isinstance(body, RetrySelected):
        return _actions(service.retry(body.order_ids, actor=actor, reason=body.reason))
    flt = service.make_filter(
        view=body.all_filtered.status,
        phone=body.all_filtered.phone,
        network=body.all_filtered.network,
    )
    return _actions(service.retry_filtered(flt, actor=actor, reason=body.reason))


# Before /orders/{order_id}, which would otherwise take GET /orders/retry as an order id.
method_not_allowed(admin, "/orders/retry", ("POST",))


@admin.get(
    "/orders/{order_id}",
    response_model=OrderDetail,
    responses=errors(404, 422),
    summary="One order with every attempt, audit entry and notification",
)
def order_detail(order_id: UUID, request: Request) -> OrderDetail:
    detail = web_deps(request).service.detail(str(order_id))
    attempts = [
        AttemptView.model_validate({**_plain(r), "phone": r.get("phone_number")})  # masked
        for r in detail["attempts"]
    ]
    return OrderDetail(
        order=OrderView.model_validate(detail["order"]),
        attempts=attempts,
        audit=[AuditEntry.model_validate(_plain(r)) for r in detail["audit"]],
        notifications=[NotificationView.model_validate(_plain(r)) for r in detail["notifications"]],
    )


@admin.get("/stats", response_model=StatsResponse, summary="The dashboard's counts")
def stats(request: Request) -> StatsResponse:
    return StatsResponse(stats=Stats.model_validate(web_deps(request).service.stats()))


@admin.post(
    "/dead-letters/dismiss",
    response_model=ActionsResponse,
    responses=errors(400, 403, 422),
    summary="Resolve dead letters by hand (refunded...): they leave the dead-letter list",
)
def dismiss_dead_letters(body: DismissBody, request: Request, actor: Admin) -> ActionsResponse:
    service = web_deps(request).service
    return _actions(service.dismiss(body.order_ids, actor=actor, reason=body.reason))


@admin.get(
    "/dlq",
    response_model=DlqResponse,
    responses=errors(422),
    summary="Messages Dramatiq gave up on (its own dead-letter queue), newest first",
)
def dlq_list(
    request: Request, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100
) -> DlqResponse:
    dlq = web_deps(request).dlq
    return DlqResponse(
        count=dlq.count(),
        messages=[DeadMessageView.model_validate(m.as_dict()) for m in dlq.list(limit)],
    )


@admin.post(
    "/dlq/requeue",
    response_model=DlqActionResponse,
    responses=errors(400, 403, 422),
    summary="Send Dramatiq dead messages again on their queue",
)
def dlq_requeue(body: DlqIds, request: Request, actor: Admin) -> DlqActionResponse:
    deps = web_deps(request)
    done = deps.dlq.requeue(body.ids)
    deps.service.admin.record(
        actor=actor, action="dlq_requeue", order_id=None, reason=None, details={"ids": body.ids}
    )
    log.info("admin.dlq_requeued", actor=actor, requested=len(body.ids), requeued=done)
    return DlqActionResponse(done=done)


@admin.post(
    "/dlq/delete",
    response_model=DlqActionResponse,
    responses=errors(400, 403, 422),
    summary="Drop Dramatiq dead messages for good",
)
def dlq_delete(body: DlqIds, request: Request, actor: Admin) -> DlqActionResponse:
    deps = web_deps(request)
    done = deps.dlq.delete(body.ids)
    deps.service.admin.record(
        actor=actor, action="dlq_delete", order_id=None, reason=None, details={"ids": body.ids}
    )
    log.info("admin.dlq_deleted", actor=actor, requested=len(body.ids), deleted=done)
    return DlqActionResponse(done=done)


router = APIRouter()
router.include_router(platform)
router.include_router(admin)
