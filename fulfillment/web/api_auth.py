"""Authentication and error plumbing of the platform and admin JSON APIs (fulfillment/web/api.py).

ApiError and the routes that render every HTTPException as the app's JSON error body
(JsonErrorRoute, and PlatformRoute / AdminRoute, which authenticate before the body is read);
the security schemes the OpenAPI document names; and the checks themselves: check_api_token /
require_api for the purchase platform's bearer API_TOKEN, require_admin (and the `Admin`
dependency) for the bearer ADMIN_TOKEN or a dashboard session with its X-CSRF-Token. Tokens
are compared in constant time (fulfillment/web/security.py).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, ClassVar

from fastapi import Depends, HTTPException, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from fulfillment.telemetry.logs import get_logger
from fulfillment.web.deps import WebDeps, error_body
from fulfillment.web.security import (
    SESSION_COOKIE,
    Sessions,
    TooManyAttempts,
    bearer,
    check_token,
    client_address,
    tokens_match,
)

log = get_logger("fulfillment.web")

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PLATFORM_ACTOR = "api"
BEARER_ACTOR = "admin-token"

# -- errors ------------------------------------------------------------------------------


class ApiError(HTTPException):
    """An HTTP error with the app's error code. Routes built on JsonErrorRoute render it as
    the JSON error body; elsewhere FastAPI's HTTPException handler still answers its status."""

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


def check_bearer(request: Request, given: str | None, expected: str, which: str) -> None:
    """401 for a missing or wrong token; 429 once this address has guessed wrong too often
    (fulfillment/web/security.py: AuthThrottle), even when the token is right."""
    if given is None:
        raise unauthorized(which)
    client = client_address(request)
    try:
        right = check_token(request, given, expected)
    except TooManyAttempts as exc:
        wait = exc.retry_after_s
        log.warning("web.token_throttled", client=client, token=which, retry_after_s=wait)
        raise ApiError(
            429,
            "TOO_MANY_ATTEMPTS",
            f"too many wrong tokens from this address; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        ) from None
    if not right:
        log.warning("web.wrong_token", client=client, token=which, path=request.url.path)
        raise unauthorized(which)


def check_api_token(request: Request) -> str:
    """The platform API's caller ("api"), or 401. Compared in constant time."""
    given = bearer(request.headers.get("authorization"))
    check_bearer(request, given, web_deps(request).api_token, "API_TOKEN")
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
        check_bearer(request, given, deps.admin_token, "ADMIN_TOKEN")
        return BEARER_ACTOR
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
