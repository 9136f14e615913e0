"""The admin dashboard: server-rendered HTML pages at /dashboard/admin/fulfillment.

Pages: orders (stats, filters, phone search, keyset pages, retry), one order's detail
(attempts, vendor answers, notifications, the customer's SMS and the platform's events, audit;
for an outcome unknown the three decisions: recheck, mark delivered, mark not delivered), open
dead letters (requeue, dismiss), the outboxes' failures (failed SMS: retry; failed events:
resend) and Dramatiq's own dead-letter queue (requeue, delete). On every page, the runtime
pause: a banner while the fleet or a network is paused (what, who, why, since when), a resume
button per pause and a pause form (fulfillment/services/pauses.py). A login form (name +
ADMIN_TOKEN) sets the signed session cookie; every form carries the session's CSRF token. All
rules and audit rows come from AdminService and PauseService, the same as the API and the
CLI. The plumbing (gates, rendering, flash messages, the banner's facts) is in
fulfillment.web.pages.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from fulfillment.domain.errors import (
    ActionRefused,
    BrokerUnavailable,
    InvalidOrder,
    MalformedMessage,
    UnsupportedNetwork,
)
from fulfillment.domain.order import parse_order_id
from fulfillment.domain.pause import FLEET
from fulfillment.services.admin import ActionResult, Decision
from fulfillment.telemetry.logs import get_logger
from fulfillment.web.pages import (
    HERE,
    PREFIX,
    Ids,
    Text,
    back_to,
    csv_chunks,
    deps_of,
    error_page,
    export_filename,
    flash,
    form_action,
    page,
    render,
    results_flash,
    safe_next,
    session_of,
    sessions_of,
)
from fulfillment.web.security import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    Session,
    TooManyAttempts,
    check_token,
)

log = get_logger("fulfillment.dashboard")

STATIC_FILES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
PAGE_SIZE = 50
DLQ_LIMIT = 200
OUTBOX_LIMIT = 200

router = APIRouter(include_in_schema=False)


# -- static files and login --------------------------------------------------------------


@router.get("/dashboard/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC_FILES:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(
        HERE / "static" / name,
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@router.get(PREFIX + "/login")
def login_form(request: Request, next: str = "") -> Response:
    if session_of(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", None, next=safe_next(next, ""), error=None, name="")


@router.post(PREFIX + "/login")
def login(request: Request, name: Text = "", token: Text = "", next: Text = "") -> Response:
    deps = deps_of(request)
    who = name.strip()
    try:
        right = check_token(request, token, deps.admin_token)
    except TooManyAttempts as exc:
        wait = exc.retry_after_s
        log.warning("dashboard.login_throttled", actor=who[:80], retry_after_s=wait)
        response = render(
            request,
            "login.html",
            None,
            status_code=429,
            next=safe_next(next, ""),
            error=f"Too many wrong tokens from this address. Try again in {wait} s.",
            name=who[:80],
        )
        response.headers["Retry-After"] = str(wait)
        return response
    if not right or not who:
        error = "Say who you are." if right else "Wrong token."
        log.warning("dashboard.login_refused", actor=who[:80], reason=error)
        return render(
            request,
            "login.html",
            None,
            status_code=401 if error == "Wrong token." else 422,
            next=safe_next(next, ""),
            error=error,
            name=who[:80],
        )
    value, session = sessions_of(request).issue(who)
    log.info("dashboard.login", actor=session.actor)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=deps.secure_cookies,
    )
    return response


@router.post(PREFIX + "/logout")
@form_action
def logout(request: Request, session: Session, csrf: Text = "") -> Response:
    log.info("dashboard.logout", actor=session.actor)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=deps_of(request).secure_cookies,
    )
    return response


# -- orders --------------------------------------------------------------------------------


@router.get(PREFIX)
@page
def orders(
    request: Request,
    session: Session,
    status: str = "all",
    phone: str = "",
    cursor: str = "",
    network: str = "",
) -> Response:
    service = deps_of(request).service
    try:
        flt = service.make_filter(view=status, phone=phone or None, network=network)
    except UnsupportedNetwork as exc:
        return error_page(request, 400, "Unknown network", str(exc))
    listing = service.list(flt, cursor=cursor or None, limit=PAGE_SIZE)
    return render(
        request,
        "orders.html",
        session,
        active="orders",
        stats=service.stats(flt.network),
        listing=listing,
        status=status,
        phone=phone,
        network=flt.network or "",
        cursor=cursor,
        searched=flt.msisdn,
    )


@router.post(PREFIX + "/retry")
@form_action
def retry(
    request: Request,
    session: Session,
    csrf: Text = "",
    reason: Text = "",
    order_id: Ids = None,
    one: Text = "",
    all_filtered: Text = "",
    status: Text = "all",
    phone: Text = "",
    network: Text = "",
    back: Text = "",
) -> Response:
    view = status if all_filtered == "1" else None
    ids = [one] if one else list(order_id or [])
    return _retry(request, session, "Retry", "scheduled", view, ids, reason, phone, back, network)


def _retry(
    request: Request,
    session: Session,
    label: str,
    done_word: str,
    view: str | None,
    ids: list[str],
    reason: str,
    phone: str,
    back: str,
    network: str = "",
) -> Response:
    """Retry the orders picked, or (view given) every failed one the filter matches."""
    service = deps_of(request).service
    results: list[ActionResult]
    try:
        if view is not None:
            flt = service.make_filter(view=view, phone=phone or None, network=network)
            results = service.retry_filtered(flt, actor=session.actor, reason=reason)
        elif ids:
            results = service.retry(ids, actor=session.actor, reason=reason)
        else:
            return back_to(request, back, flash("warn", f"{label}: select at least one order."))
    except InvalidOrder as exc:
        return back_to(request, back, flash("error", f"{label} refused: {exc}"))
    return back_to(request, back, results_flash(label, done_word, results))


@router.get(PREFIX + "/export.csv")
@page
def export_csv(
    request: Request, session: Session, status: str = "all", phone: str = "", network: str = ""
) -> Response:
    service = deps_of(request).service
    try:
        flt = service.make_filter(view=status, phone=phone or None, network=network)
    except UnsupportedNetwork as exc:
        return error_page(request, 400, "Unknown network", str(exc))
    log.info("dashboard.export", actor=session.actor, status=status)
    name = export_filename(status, datetime.now(UTC))
    return StreamingResponse(
        csv_chunks(service.export_rows(flt)),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.get(PREFIX + "/orders/{order_id}")
@page
def order_detail(request: Request, session: Session, order_id: str) -> Response:
    try:
        detail = deps_of(request).service.detail(order_id)
    except InvalidOrder:
        return error_page(request, 404, "Order not found", "That is not an order id.")
    return render(request, "detail.html", session, active="orders", **detail)


# -- outcome unknown: the three decisions, from the order's detail page ----------------


def _decision_form(decision: Decision) -> None:
    """POST .../orders/{order_id}/<recheck|mark-delivered|mark-not-delivered>: one decision on
    an outcome unknown, flashed on the page it came from."""
    label = decision.words.capitalize()

    @form_action
    def decide(
        request: Request,
        session: Session,
        order_id: str,
        csrf: Text = "",
        reason: Text = "",
        transaction_id: Text = "",  # the mark-delivered form's (optional)
        back: Text = "",
    ) -> Response:
        target = back or f"{PREFIX}/orders/{order_id}"
        try:
            result = deps_of(request).service.decide(
                order_id,
                decision,
                actor=session.actor,
                reason=reason,
                transaction_id=transaction_id if decision is Decision.MARK_DELIVERED else None,
            )
        except (ActionRefused, InvalidOrder) as exc:
            return back_to(request, target, flash("error", f"{label} refused: {exc}"))
        return back_to(request, target, flash("ok", f"{label}: {result.message}."))

    router.add_api_route(
        f"{PREFIX}/orders/{{order_id}}/{decision.slug}",
        decide,
        methods=["POST"],
        name=decision.value,
    )


for _decision in Decision:
    _decision_form(_decision)


# -- dead letters ----------------------------------------------------------------------


@router.get(PREFIX + "/dead-letters")
@page
def dead_letters(request: Request, session: Session, phone: str = "", cursor: str = "") -> Response:
    service = deps_of(request).service
    flt = service.make_filter(view="open_dead_letters", phone=phone or None)
    listing = service.list(flt, cursor=cursor or None, limit=PAGE_SIZE)
    states = {}
    for row in listing.rows:  # one indexed query per row, at most PAGE_SIZE
        notes = service.admin.notifications(row["id"])
        states[row["id"]] = notes[-1] if notes else None
    return render(
        request,
        "dead_letters.html",
        session,
        active="dead-letters",
        listing=listing,
        notes=states,
        phone=phone,
        cursor=cursor,
        searched=flt.msisdn,
    )


@router.post(PREFIX + "/dead-letters/requeue")
@form_action
def requeue_dead_letters(
    request: Request,
    session: Session,
    csrf: Text = "",
    reason: Text = "",
    order_id: Ids = None,
    one: Text = "",
    all_filtered: Text = "",
    phone: Text = "",
    back: Text = f"{PREFIX}/dead-letters",
) -> Response:
    view = "open_dead_letters" if all_filtered == "1" else None
    ids = [one] if one else list(order_id or [])
    return _retry(request, session, "Requeue", "requeued", view, ids, reason, phone, back)


@router.post(PREFIX + "/dead-letters/dismiss")
@form_action
def dismiss_dead_letters(
    request: Request,
    session: Session,
    csrf: Text = "",
    reason: Text = "",
    order_id: Ids = None,
    one: Text = "",
    back: Text = f"{PREFIX}/dead-letters",
) -> Response:
    ids = [one] if one else list(order_id or [])
    if not ids:
        return back_to(request, back, flash("warn", "Dismiss: select at least one order."))
    try:
        results = deps_of(request).service.dismiss(ids, actor=session.actor, reason=reason)
    except InvalidOrder as exc:
        return back_to(request, back, flash("error", f"Dismiss refused: {exc}"))
    return back_to(request, back, results_flash("Dismiss", "dismissed", results))


# -- the outboxes' failures: the customer's SMS and the platform's events ---------------------


@router.get(PREFIX + "/outbox")
@page
def outbox(request: Request, session: Session) -> Response:
    service = deps_of(request).service
    return render(
        request,
        "outbox.html",
        session,
        active="outbox",
        sms=service.failed_sms(OUTBOX_LIMIT),
        events=service.failed_events(OUTBOX_LIMIT),
        counts=service.outbox_counts(),
        limit=OUTBOX_LIMIT,
    )


@router.post(PREFIX + "/outbox/sms/retry")
@form_action
def retry_sms(
    request: Request,
    session: Session,
    csrf: Text = "",
    reason: Text = "",
    sms_id: Ids = None,
    one: Text = "",
    back: Text = f"{PREFIX}/outbox",
) -> Response:
    ids = [one] if one else list(sms_id or [])
    return _outbox_action(request, session, "sms", ids, reason, back)


@router.post(PREFIX + "/outbox/events/resend")
@form_action
def resend_events(
    request: Request,
    session: Session,
    csrf: Text = "",
    reason: Text = "",
    event_id: Ids = None,
    one: Text = "",
    back: Text = f"{PREFIX}/outbox",
) -> Response:
    ids = [one] if one else list(event_id or [])
    return _outbox_action(request, session, "event", ids, reason, back)


def _outbox_action(
    request: Request, session: Session, box: str, ids: list[str], reason: str, back: str
) -> Response:
    """Retry the SMS (box "sms") or resend the events picked, flashed on the page it came from."""
    label, noun = ("Retry", "SMS") if box == "sms" else ("Resend", "event")
    if not ids:
        return back_to(request, back, flash("warn", f"{label}: select at least one {noun}."))
    service = deps_of(request).service
    try:
        if box == "sms":
            results = service.retry_sms(ids, actor=session.actor, reason=reason)
        else:
            results = service.resend_events(ids, actor=session.actor, reason=reason)
    except InvalidOrder as exc:
        return back_to(request, back, flash("error", f"{label} refused: {exc}"))
    return back_to(request, back, results_flash(label, "queued", results))


# -- the runtime pause: the banner is base.html's; these are its two forms ------------------


def _sentence(text: str) -> str:
    return f"{text[:1].upper()}{text[1:]}."


@router.post(PREFIX + "/pause")
@form_action
def pause(
    request: Request,
    session: Session,
    csrf: Text = "",
    scope: Text = FLEET,
    reason: Text = "",
    back: Text = "",
) -> Response:
    try:
        view = deps_of(request).pauses.pause(network=scope, reason=reason, actor=session.actor)
    except InvalidOrder as exc:
        return back_to(request, back, flash("error", f"Pause refused: {exc}"))
    return back_to(
        request, back, flash("warn" if view.already_paused else "ok", _sentence(view.message))
    )


@router.post(PREFIX + "/resume")
@form_action
def resume(
    request: Request, session: Session, csrf: Text = "", scope: Text = FLEET, back: Text = ""
) -> Response:
    try:
        # the scope as the form sends it ('*' or a network): the service reads it (scope_of)
        result = deps_of(request).pauses.resume(network=scope, actor=session.actor)
    except InvalidOrder as exc:
        return back_to(request, back, flash("error", f"Resume refused: {exc}"))
    # Redis away: the result says how many could not be sent (the reconciler sends them)
    clean = result.was_paused and not result.still_held_by and not result.not_sent
    kind = "ok" if clean else "warn"
    return back_to(request, back, flash(kind, _sentence(result.message)))


# -- Dramatiq's own dead-letter queue ------------------------------------------------------


@router.get(PREFIX + "/dlq")
@page
def dlq(request: Request, session: Session) -> Response:
    queue = deps_of(request).dlq
    messages = queue.list(DLQ_LIMIT)
    links = {m.id: _order_link(m.args) for m in messages}
    return render(
        request,
        "dlq.html",
        session,
        active="dlq",
        count=queue.count(),
        messages=messages,
        links=links,
        limit=DLQ_LIMIT,
    )


def _order_link(args: object) -> str | None:
    if isinstance(args, list) and args and isinstance(args[0], str):
        try:
            return parse_order_id(args[0])
        except MalformedMessage:
            return None
    return None


def _dlq_action(
    request: Request, session: Session, action: str, ids: list[str], reason: str
) -> Response:
    back = f"{PREFIX}/dlq"
    why = reason.strip()[:500]
    if not ids:
        return back_to(request, back, flash("warn", "Select at least one message."))
    if not why:
        return back_to(request, back, flash("error", "Say why (it goes into the audit trail)."))
    deps = deps_of(request)
    try:
        done = deps.dlq.requeue(ids) if action == "dlq_requeue" else deps.dlq.delete(ids)
    except BrokerUnavailable as exc:
        return back_to(request, back, flash("error", f"Redis refused: {exc}"))
    deps.service.admin.record(
        actor=session.actor,
        action=action,
        order_id=None,
        reason=why,
        details={"ids": ids, "done": done},
    )
    verb = "requeued" if action == "dlq_requeue" else "deleted"
    log.info(f"dashboard.{action}", actor=session.actor, count=done)
    missing = len(ids) - done
    text = f"{done} message(s) {verb}" + (f", {missing} already gone" if missing else "") + "."
    return back_to(request, back, flash("ok" if not missing else "warn", text))


@router.post(PREFIX + "/dlq/requeue")
@form_action
def dlq_requeue(
    request: Request,
    session: Session,
    csrf: Text = "",
    reason: Text = "",
    message_id: Ids = None,
) -> Response:
    return _dlq_action(request, session, "dlq_requeue", list(message_id or []), reason)


@router.post(PREFIX + "/dlq/delete")
@form_action
def dlq_delete(
    request: Request,
    session: Session,
    csrf: Text = "",
    reason: Text = "",
    message_id: Ids = None,
) -> Response:
    return _dlq_action(request, session, "dlq_delete", list(message_id or []), reason)
