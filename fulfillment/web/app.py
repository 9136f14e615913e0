"""The admin web process: one FastAPI app with the platform API, the dashboard, the vendor
webhook, /metrics, /healthz and /readyz. Built by create_app from explicit dependencies."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from fulfillment.domain.errors import (
    ActionRefused,
    BrokerUnavailable,
    FulfillmentError,
    InvalidOrder,
    MalformedMessage,
    OrderNotFound,
    StoreError,
)
from fulfillment.telemetry.logs import get_logger
from fulfillment.web import api, dashboard, webhooks
from fulfillment.web.deps import WebDeps, error_body
from fulfillment.web.security import AuthThrottle, Sessions

log = get_logger("fulfillment.web")


def create_app(deps: WebDeps) -> FastAPI:
    app = FastAPI(
        title="AT-iShare fulfillment admin",
        version="1.0.0",
        description="Platform API, admin dashboard and vendor webhook of the fulfillment fleet.",
    )
    app.state.deps = deps
    app.state.sessions = Sessions(deps.admin_token)
    app.state.auth_throttle = AuthThrottle()
    app.include_router(api.router)
    app.include_router(webhooks.router)
    app.include_router(dashboard.router)

    @app.exception_handler(InvalidOrder)
    async def _invalid(_: Request, exc: InvalidOrder) -> JSONResponse:
        return JSONResponse(error_body(exc.code, str(exc)), status_code=422)

    @app.exception_handler(MalformedMessage)
    async def _malformed(_: Request, exc: MalformedMessage) -> JSONResponse:
        return JSONResponse(error_body("INVALID_ORDER_ID", str(exc)), status_code=422)

    @app.exception_handler(OrderNotFound)
    async def _missing(_: Request, exc: OrderNotFound) -> JSONResponse:
        return JSONResponse(error_body(exc.code, str(exc)), status_code=404)

    @app.exception_handler(ActionRefused)
    async def _refused(_: Request, exc: ActionRefused) -> JSONResponse:
        return JSONResponse(error_body(exc.code, str(exc)), status_code=409)

    @app.exception_handler(StoreError)
    @app.exception_handler(BrokerUnavailable)
    async def _unavailable(_: Request, exc: FulfillmentError) -> JSONResponse:
        log.error("web.dependency_unavailable", error_code=exc.code, error=str(exc))
        return JSONResponse(
            error_body(exc.code, "a dependency is unavailable; try again"), status_code=503
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        text = str(first.get("msg", "invalid request"))
        message = f"{where}: {text}" if where else text
        return JSONResponse(error_body("VALIDATION_ERROR", message), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            401: "UNAUTHORIZED",
            403: "FORBIDDEN",
            404: "NOT_FOUND",
            405: "METHOD_NOT_ALLOWED",
            413: "PAYLOAD_TOO_LARGE",
        }
        return JSONResponse(
            error_body(codes.get(exc.status_code, "HTTP_ERROR"), str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("web.unexpected_error", error=type(exc).__name__)
        return JSONResponse(error_body("INTERNAL_ERROR", "unexpected error"), status_code=500)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            deps.store.ping()
            checks["postgresql"] = "ok"
        except StoreError as exc:
            checks["postgresql"] = f"unavailable: {type(exc.__cause__).__name__}"
        try:
            deps.ping_redis()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            checks["redis"] = f"unavailable: {type(exc).__name__}"
        if deps.ping_vendor is not None:
            try:
                deps.ping_vendor()
                checks["vendor"] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                checks["vendor"] = f"unavailable: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        body = generate_latest(REGISTRY)
        if deps.collector is not None:
            live = CollectorRegistry(auto_describe=False)
            live.register(deps.collector)
            body += generate_latest(live)
        return PlainTextResponse(body.decode(), media_type=CONTENT_TYPE_LATEST)

    return app
