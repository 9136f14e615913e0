"""The platform API and the admin JSON API (DESIGN.md "HTTP API"): the routes and `router`.

- `/api/orders/fulfillment` (bearer API_TOKEN): the purchase platform triggers, retries and
  reads an order's fulfillment.
- `/api/admin/...` (bearer ADMIN_TOKEN, or the dashboard's session cookie; with the cookie, a
  state-changing call also sends `X-CSRF-Token`): list, detail, stats, retry, dismiss, the
  three decisions on an outcome unknown (recheck, mark delivered, mark not delivered),
  the outboxes' failures (`/sms`, `/sms/retry`, `/events`, `/events/resend`), Dramatiq's own
  dead-letter queue, and the runtime pause (`/pauses`, `/pause`, `/resume`).

Routes are sync functions (FastAPI runs them in its threadpool: the store and Redis block).
The rules live in fulfillment/services/admin.py; this module only shapes answers.
Authentication and the JSON error plumbing live in api_auth.py, the request and response
models in api_models.py. Every error is the app's JSON
`{"success": false, "error": {"code", "message"}}`.
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Security

from fulfillment.services.admin import MAX_PAGE, ActionResult, Decision
from fulfillment.telemetry.logs import get_logger
from fulfillment.web.api_auth import (
    PLATFORM_ACTOR,
    Admin,
    AdminRoute,
    ApiError,
    PlatformRoute,
    admin_bearer,
    require_admin,
    require_api,
    session_cookie,
    web_deps,
)
from fulfillment.web.api_models import (
    MAX_RESULTS,
    ActionResponse,
    ActionResultView,
    ActionsResponse,
    AttemptView,
    AuditEntry,
    DeadMessageView,
    DecisionBody,
    DecisionResponse,
    DismissBody,
    DlqActionResponse,
    DlqIds,
    DlqResponse,
    EventView,
    FailedEventsResponse,
    FailedEventView,
    FailedSmsResponse,
    FailedSmsView,
    FulfillmentAction,
    FulfillmentRef,
    FulfillmentState,
    MarkDeliveredBody,
    NetworkCode,
    NotificationView,
    OrderDetail,
    OrderPage,
    OrderView,
    OutboxActionsResponse,
    OutboxIds,
    OutboxResultView,
    PauseBody,
    PauseInfo,
    PauseResponse,
    PausesResponse,
    PhoneSearch,
    ResumeBody,
    ResumeResponse,
    RetryFiltered,
    RetrySelected,
    SmsView,
    Stats,
    StatsResponse,
    StatusFilter,
    StatusResponse,
    Text,
    errors,
)

__all__ = ["require_admin", "router"]

log = get_logger("fulfillment.web")

DEFAULT_PLATFORM_RETRY_REASON = "retry requested by the platform API"


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


platform = APIRouter(
    prefix="/api/orders",
    tags=["platform API"],
    route_class=PlatformRoute,
    dependencies=[Depends(require_api)],
    responses=errors(401, 429, 503),
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
        (result,) = service.retry([oid], actor=PLATFORM_ACTOR, reason=reason, platform=True)
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


admin = APIRouter(
    prefix="/api/admin",
    tags=["admin API"],
    route_class=AdminRoute,
    # Security schemes for the OpenAPI document; require_admin does the checking.
    dependencies=[Security(admin_bearer), Security(session_cookie), Depends(require_admin)],
    responses=errors(401, 429, 503),
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
    network: NetworkCode | None = None,
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
        sms=[SmsView.model_validate(r) for r in detail["sms"]],
        events=[EventView.model_validate(r) for r in detail["events"]],
    )


def _decision_route(
    decision: Decision, name: str, body_model: type[DecisionBody], summary: str
) -> None:
    """POST /orders/{order_id}/<recheck|mark-delivered|mark-not-delivered>: one decision on an
    outcome unknown, answered with the order after it."""

    def decide(
        order_id: UUID, body: DecisionBody, request: Request, actor: Admin
    ) -> DecisionResponse:
        service = web_deps(request).service
        result = service.decide(
            str(order_id),
            decision,
            actor=actor,
            reason=body.reason,
            transaction_id=body.transaction_id if isinstance(body, MarkDeliveredBody) else None,
        )
        order = OrderView.model_validate(service.order(result.order_id))
        return DecisionResponse(code=result.code, message=result.message, order=order)

    # FastAPI validates and documents the body by the signature's model: this decision's own
    signature = inspect.signature(decide, eval_str=True)
    params = [
        p.replace(annotation=body_model) if p.name == "body" else p
        for p in signature.parameters.values()
    ]
    decide.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    admin.add_api_route(
        f"/orders/{{order_id}}/{decision.slug}",
        decide,
        methods=["POST"],
        name=name,
        response_model=DecisionResponse,
        responses=errors(400, 403, 404, 409, 422),
        summary=summary,
    )


_decision_route(
    Decision.RECHECK,
    "recheck_order",
    DecisionBody,
    "Outcome unknown: ask the vendor again (a worker looks the reference up first)",
)
_decision_route(
    Decision.MARK_DELIVERED,
    "mark_delivered",
    MarkDeliveredBody,
    "Outcome unknown: the vendor did deliver (checked by hand); the order succeeds",
)
_decision_route(
    Decision.MARK_NOT_DELIVERED,
    "mark_not_delivered",
    DecisionBody,
    "Outcome unknown: nothing was delivered (checked by hand); the order fails",
)


@admin.get(
    "/stats",
    response_model=StatsResponse,
    responses=errors(422),
    summary="The dashboard's counts, of every network or of one (?network=mtn)",
)
def stats(request: Request, network: NetworkCode | None = None) -> StatsResponse:
    stats = web_deps(request).service.stats(network)
    return StatsResponse(stats=Stats.model_validate(stats))


@admin.post(
    "/dead-letters/dismiss",
    response_model=ActionsResponse,
    responses=errors(400, 403, 422),
    summary="Resolve dead letters by hand (refunded...): they leave the dead-letter list",
)
def dismiss_dead_letters(body: DismissBody, request: Request, actor: Admin) -> ActionsResponse:
    service = web_deps(request).service
    return _actions(service.dismiss(body.order_ids, actor=actor, reason=body.reason))


# -- the outboxes' failures: the customer's SMS and the platform's events ----------------------


def _outbox_actions(results: list[ActionResult]) -> OutboxActionsResponse:
    ok = sum(1 for r in results if r.ok)
    return OutboxActionsResponse(
        total=len(results),
        succeeded=ok,
        refused=len(results) - ok,
        results=[OutboxResultView.model_validate(r.as_dict()) for r in results[:MAX_RESULTS]],
    )


@admin.get(
    "/sms",
    response_model=FailedSmsResponse,
    responses=errors(422),
    summary="Customer SMS given up on or failed at the provider, newest first",
)
def list_sms(
    request: Request,
    status: Literal["failed"] = "failed",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> FailedSmsResponse:
    service = web_deps(request).service
    return FailedSmsResponse(
        count=service.outbox_counts()["sms"].get(status, 0),
        sms=[FailedSmsView.model_validate(r) for r in service.failed_sms(limit)],
    )


@admin.post(
    "/sms/retry",
    response_model=OutboxActionsResponse,
    responses=errors(400, 403, 422),
    summary="Send failed SMS again (any other is refused, unchanged)",
)
def retry_sms(body: OutboxIds, request: Request, actor: Admin) -> OutboxActionsResponse:
    service = web_deps(request).service
    return _outbox_actions(service.retry_sms(body.ids, actor=actor, reason=body.reason))


@admin.get(
    "/events",
    response_model=FailedEventsResponse,
    responses=errors(422),
    summary="Outcome events the platform never acknowledged (given up on), newest first",
)
def list_events(
    request: Request,
    status: Literal["failed"] = "failed",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> FailedEventsResponse:
    service = web_deps(request).service
    return FailedEventsResponse(
        count=service.outbox_counts()["event"].get(status, 0),
        events=[FailedEventView.model_validate(r) for r in service.failed_events(limit)],
    )


@admin.post(
    "/events/resend",
    response_model=OutboxActionsResponse,
    responses=errors(400, 403, 422),
    summary="Send failed outcome events again: the same event_id and body (others are refused)",
)
def resend_events(body: OutboxIds, request: Request, actor: Admin) -> OutboxActionsResponse:
    service = web_deps(request).service
    return _outbox_actions(service.resend_events(body.ids, actor=actor, reason=body.reason))


# -- Dramatiq's own dead-letter queue ------------------------------------------------------------


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


# -- the runtime pause (fulfillment/services/pauses.py) ------------------------------------------


@admin.get(
    "/pauses",
    response_model=PausesResponse,
    summary="The pauses in force: the whole fleet's and each network's",
)
def list_pauses(request: Request) -> PausesResponse:
    pauses = web_deps(request).pauses.list()
    return PausesResponse(
        paused=bool(pauses), pauses=[PauseInfo.model_validate(p.as_dict()) for p in pauses]
    )


@admin.post(
    "/pause",
    response_model=PauseResponse,
    responses=errors(400, 403, 422),
    summary="Pause the whole fleet or one network: no worker buys any of its orders until resumed",
)
def pause(body: PauseBody, request: Request, actor: Admin) -> PauseResponse:
    view = web_deps(request).pauses.pause(network=body.network, reason=body.reason, actor=actor)
    return PauseResponse.model_validate(view.as_dict())


@admin.post(
    "/resume",
    response_model=ResumeResponse,
    responses=errors(400, 403, 422),
    summary="Resume the whole fleet or one network; its waiting orders are re-enqueued",
)
def resume(body: ResumeBody, request: Request, actor: Admin) -> ResumeResponse:
    result = web_deps(request).pauses.resume(network=body.network, actor=actor)
    return ResumeResponse.model_validate(result.as_dict())


router = APIRouter()
router.include_router(platform)
router.include_router(admin)
