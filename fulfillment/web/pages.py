"""The dashboard's page plumbing, apart from its routes (fulfillment.web.dashboard): the
session and CSRF gates around each page and form action, page rendering (Jinja2 templates,
autoescaped) and error pages, the form fields for order ids and text, flash messages in a
short-lived signed cookie, safe redirect targets, CSV streaming and the filters that format
values for people. Every page shown to an admin carries the fleet's pause state (the banner
and the pause form of base.html).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import inspect
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Concatenate, ParamSpec, cast
from urllib.parse import urlencode, urlsplit

import jinja2
from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer

from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.domain.errors import BrokerUnavailable, InvalidOrder, OrderNotFound, StoreError
from fulfillment.domain.networks import DISPLAY_NAMES
from fulfillment.domain.pause import FLEET, MAX_PAUSE_REASON
from fulfillment.domain.phone import mask_phones_in_text
from fulfillment.services.admin import ActionResult
from fulfillment.telemetry.logs import duration as duration_words
from fulfillment.telemetry.logs import get_logger
from fulfillment.web.deps import WebDeps
from fulfillment.web.security import SESSION_COOKIE, Session, Sessions, tokens_match

log = get_logger("fulfillment.dashboard")

PREFIX = "/dashboard/admin/fulfillment"
FLASH_COOKIE = "fulfillment_flash"
FLASH_MAX_AGE_S = 60
#: refusals listed by name in a flash message; the rest are counted
FLASH_ITEMS = 8
CSV_CHUNK_CHARS = 16_384


# -- where a form or a login may send the browser ----------------------------------------


def safe_next(target: str | None, default: str = PREFIX) -> str:
    """A same-origin dashboard path (with its query) or `default`: never another host, never
    a scheme, never a path outside the dashboard (no open redirect)."""
    if not target or len(target) > 2000:
        return default
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.fragment:
        return default
    if not (parts.path == PREFIX or parts.path.startswith(PREFIX + "/")):
        return default
    if "/../" in parts.path + "/" or "/./" in parts.path + "/":
        return default
    return target


def url(path: str, **params: object) -> str:
    """`path?query` with the empty parameters left out (a link that keeps the filters)."""
    query = urlencode({k: str(v) for k, v in params.items() if v not in (None, "", "all")})
    return f"{path}?{query}" if query else path


def here(path: str, query: str) -> str:
    """The current page's path and query, to come back to after a form."""
    return f"{path}?{query}" if query else path


# -- flash messages: a short-lived signed cookie read once by the next page ---------------


class Flashes:
    def __init__(self, admin_token: str) -> None:
        key = hmac.new(admin_token.encode(), b"fulfillment-flash", hashlib.sha256).hexdigest()
        self._serializer = URLSafeTimedSerializer(key, salt="fulfillment-flash")

    def dump(self, flash: Mapping[str, Any]) -> str:
        return self._serializer.dumps(dict(flash))

    def load(self, cookie: str | None) -> dict[str, Any] | None:
        if not cookie:
            return None
        try:
            data: Any = self._serializer.loads(cookie, max_age=FLASH_MAX_AGE_S)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            return None
        items = data.get("items")
        return {
            "kind": data.get("kind") if data.get("kind") in ("ok", "warn", "error") else "ok",
            "text": data["text"],
            "items": [str(i) for i in items] if isinstance(items, list) else [],
        }


def flash(kind: str, text: str, items: Sequence[str] = ()) -> dict[str, Any]:
    listed = list(items[:FLASH_ITEMS])
    if len(items) > FLASH_ITEMS:
        listed.append(f"... and {len(items) - FLASH_ITEMS} more")
    return {"kind": kind, "text": text[:300], "items": [i[:200] for i in listed]}


def results_flash(action: str, done_word: str, results: Sequence[ActionResult]) -> dict[str, Any]:
    """'Retry: 2 scheduled, 1 refused' with one line per refusal."""
    done = [r for r in results if r.ok]
    refused = [r for r in results if not r.ok]
    if not results:
        return flash("warn", f"{action}: no order matched; nothing was done.")
    text = f"{action}: {len(done)} {done_word}"
    if refused:
        text += f", {len(refused)} refused"
    kind = "ok" if not refused else ("warn" if done else "error")
    return flash(kind, text + ".", [f"{_subject(r)}: {r.message}" for r in refused])


def _subject(result: ActionResult) -> str:
    """An order by its first 8 hex digits, an SMS or event by its id."""
    return result.order_id[:8] if result.row_id is None else f"#{result.row_id}"


# -- CSV -----------------------------------------------------------------------------------


def csv_chunks(rows: Iterable[Sequence[str]], chunk_chars: int = CSV_CHUNK_CHARS) -> Iterator[str]:
    """CSV text in small chunks: one small buffer, emptied whenever it fills (constant
    memory however many rows)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow(row)
        if buffer.tell() >= chunk_chars:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def export_filename(status: str, now: datetime) -> str:
    return f"fulfillments-{status}-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.csv"


# -- Jinja filters -------------------------------------------------------------------------


def when(value: object) -> str:
    """A datetime or ISO-8601 string as 'YYYY-MM-DD HH:MM:SS' UTC; '' for nothing."""
    if value is None or value == "":
        return ""
    moment: datetime | None = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if moment is None:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return "" if value is None else str(value)


def duration(seconds: object) -> str:
    return duration_words(seconds) if isinstance(seconds, int | float) else "—"


def percent(rate: object) -> str:
    if not isinstance(rate, int | float):
        return "—"
    return f"{rate * 100:.1f}%"


def masked(text: object) -> str:
    """Free text (error messages, vendor answers) with anything phone-like masked."""
    return "" if text is None else mask_phones_in_text(str(text))


def _mask_strings(value: object) -> object:
    """Phone-like text masked in every string of a JSON value; numbers (timestamps) kept."""
    if isinstance(value, str):
        return masked(value)
    if isinstance(value, dict):
        return {masked(k): _mask_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_strings(v) for v in value]
    return value


def pretty_json(value: object) -> str:
    """A vendor answer or a queue message, indented, with phone-like strings masked."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return masked(value)
    return json.dumps(
        _mask_strings(value), indent=2, sort_keys=True, default=str, ensure_ascii=False
    )


FILTERS = {
    "when": when,
    "iso": iso,
    "duration": duration,
    "percent": percent,
    "masked": masked,
    "pretty_json": pretty_json,
}


HERE = Path(__file__).parent
STATUS_TABS = (
    ("all", "All"),
    ("success", "Success"),
    ("failed", "Failed"),
    ("pending", "Pending"),
    ("processing", "Processing"),
    ("outcome_unknown", "Outcome unknown"),
    ("dead_lettered", "Dead-lettered"),
)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}

#: what the pause form offers: the whole fleet first, then each network
PAUSE_SCOPES = (
    (FLEET, "The whole fleet"),
    *((n, f"Network {n}") for n in sorted(KNOWN_NETWORKS)),
)

P = ParamSpec("P")
#: a form field that may be missing (the route decides what missing means, never a 422)
Text = Annotated[str, Form()]
Ids = Annotated[list[str] | None, Form()]


# -- pages, sessions and the CSRF gate ------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    env.globals.update(
        url=url,
        PREFIX=PREFIX,
        STATUS_TABS=STATUS_TABS,
        PAUSE_SCOPES=PAUSE_SCOPES,
        NETWORK_NAMES=DISPLAY_NAMES,
        MAX_PAUSE_REASON=MAX_PAUSE_REASON,
    )
    return env


templates = Jinja2Templates(env=_environment())


def deps_of(request: Request) -> WebDeps:
    return cast(WebDeps, request.app.state.deps)


def sessions_of(request: Request) -> Sessions:
    return cast(Sessions, request.app.state.sessions)


def session_of(request: Request) -> Session | None:
    return sessions_of(request).read(request.cookies.get(SESSION_COOKIE))


def to_login(target: str | None) -> RedirectResponse:
    return RedirectResponse(url(f"{PREFIX}/login", next=safe_next(target, "")), status_code=303)


def fleet_state(request: Request, session: Session | None) -> dict[str, Any]:
    """The pause banner's facts: the pauses in force (read at every page: a pause made on
    another host, by the API or the CLI shows at the next page) and this web process's
    FULFILLMENT_ENABLED. Nothing for a page without a session; a database that does not
    answer leaves the banner saying the state is unknown, never the page failing."""
    deps = deps_of(request)
    state: dict[str, Any] = {
        "pauses": [],
        "pauses_unknown": False,
        "fulfillment_enabled": deps.fulfillment_enabled,
    }
    if session is None:
        return state
    try:
        state["pauses"] = deps.pauses.list()
    except StoreError as exc:
        log.error("dashboard.pauses_unavailable", error_code=exc.code, error=str(exc))
        state["pauses_unknown"] = True
    return state


def render(
    request: Request,
    template: str,
    session: Session | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    flashes = Flashes(deps_of(request).admin_token)
    shown = flashes.load(request.cookies.get(FLASH_COOKIE))
    response = templates.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "flash": shown,
            "here": here(request.url.path, request.url.query),
            "rendered_at": datetime.now(UTC),
            "active": None,
            **fleet_state(request, session),
            **context,
        },
        status_code=status_code,
        headers=SECURITY_HEADERS,
    )
    if FLASH_COOKIE in request.cookies:  # shown once
        response.delete_cookie(
            FLASH_COOKIE,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=deps_of(request).secure_cookies,
        )
    return response


def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    return render(
        request,
        "error.html",
        session_of(request),
        status_code=status_code,
        title=title,
        message=message,
    )


def back_to(request: Request, target: str, shown: Mapping[str, Any] | None) -> RedirectResponse:
    response = RedirectResponse(safe_next(target), status_code=303)
    if shown is not None:
        response.set_cookie(
            FLASH_COOKIE,
            Flashes(deps_of(request).admin_token).dump(shown),
            max_age=FLASH_MAX_AGE_S,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=deps_of(request).secure_cookies,
        )
    return response


def _run(request: Request, call: Callable[[], Response]) -> Response:
    """The service's refusals as HTML error pages: never a JSON body or a 500."""
    try:
        return call()
    except OrderNotFound:
        return error_page(request, 404, "Order not found", "There is no order with that id.")
    except InvalidOrder as exc:
        return error_page(request, 422, "Invalid request", str(exc))
    except (StoreError, BrokerUnavailable) as exc:
        log.error("dashboard.dependency_unavailable", error_code=exc.code, error=str(exc))
        return error_page(request, 503, "Service unavailable", "A dependency is unavailable.")


def _without_session(
    fn: Callable[..., Response], wrapper: Callable[..., Response]
) -> Callable[..., Response]:
    """FastAPI reads a route's parameters from its signature: the session is ours to give."""
    signature = inspect.signature(fn, eval_str=True)
    params = [p for p in signature.parameters.values() if p.name != "session"]
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


def page(
    fn: Callable[Concatenate[Request, Session, P], Response],
) -> Callable[Concatenate[Request, P], Response]:
    """A page for logged-in admins: no session -> 303 to the login form, keeping the URL."""

    @functools.wraps(fn)
    def wrapper(request: Request, *args: P.args, **kwargs: P.kwargs) -> Response:
        session = session_of(request)
        if session is None:
            return to_login(here(request.url.path, request.url.query))
        return _run(request, lambda: fn(request, session, *args, **kwargs))

    return _without_session(fn, wrapper)


def form_action(
    fn: Callable[Concatenate[Request, Session, P], Response],
) -> Callable[Concatenate[Request, P], Response]:
    """A state-changing form: a session, and its CSRF token sent back (constant-time compare);
    403 otherwise."""

    @functools.wraps(fn)
    def wrapper(request: Request, *args: P.args, **kwargs: P.kwargs) -> Response:
        session = session_of(request)
        if session is None:
            return to_login(str(kwargs.get("back") or ""))
        if not tokens_match(str(kwargs.get("csrf") or ""), session.csrf):
            log.warning("dashboard.csrf_refused", actor=session.actor, path=request.url.path)
            return error_page(
                request, 403, "Forbidden", "The form's CSRF token is missing or wrong."
            )
        return _run(request, lambda: fn(request, session, *args, **kwargs))

    return _without_session(fn, wrapper)
