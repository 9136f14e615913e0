"""The dashboard over real HTTP (uvicorn) against real PostgreSQL and Redis: login, session
cookie, CSRF, actions and their audit, CSV export, error pages."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from typing import cast
from urllib.parse import parse_qs, quote, urlsplit

import dramatiq
import httpx
import pytest
import redis

from db.store import Store
from fulfillment.web.security import AUTH_FAILURES_MAX
from tests.conftest import REDIS_URL, WebServer, park_dead_messages

pytestmark = pytest.mark.integration

PREFIX = "/dashboard/admin/fulfillment"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def client(web: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.url, follow_redirects=False, timeout=10) as http:
        yield http


def login(client: httpx.Client, name: str = "Ama", token: str = "test-admin-token") -> str:
    """Log in and return the session's CSRF token (read from a page, as a browser would)."""
    answer = client.post(f"{PREFIX}/login", data={"name": name, "token": token})
    assert answer.status_code == 303, answer.text
    page = client.get(f"{PREFIX}/dlq")
    assert page.status_code == 200
    match = CSRF.search(page.text)
    assert match is not None
    return match.group(1)


def add_order(
    store: Store,
    *,
    phone: str = "+233241234567",
    package_name: str | None = None,
    size_gb: float | None = 2,
    sql: str | None = None,
) -> str:
    order_id = str(uuid.uuid4())
    store.insert_order(
        order_id,
        phone_number=phone,
        network="at-ishare",
        size_gb=size_gb,
        package_name=package_name,
    )
    if sql:
        with store.pool.connection() as conn:
            conn.execute(f"UPDATE orders SET {sql} WHERE id = %s", (order_id,))
    return order_id


DEAD = (
    "fulfillment_status = 'failed', fulfillment_attempts = 3, last_error_code = 'INVALID_PHONE',"
    " last_error_message = 'vendor refused', dead_lettered_at = now(),"
    " dead_letter_reason = 'permanent vendor error: INVALID_PHONE'"
)
SUCCESS = "fulfillment_status = 'success', fulfillment_attempts = 1, fulfilled_at = now()"


def audit(store: Store, action: str) -> list[dict[str, object]]:
    with store.pool.connection() as conn:
        rows = conn.execute(
            "SELECT actor, action, order_id, reason, details FROM admin_audit"
            " WHERE action = %s ORDER BY id",
            (action,),
        ).fetchall()
    return [dict(r) for r in rows]


# -- login and the session cookie --------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        PREFIX,
        f"{PREFIX}?status=failed&phone=024+123+4567",
        f"{PREFIX}/orders/{uuid.uuid4()}",
        f"{PREFIX}/dead-letters",
        f"{PREFIX}/dlq",
        f"{PREFIX}/export.csv?status=success",
    ],
)
def test_pages_without_a_session_redirect_to_login_keeping_the_url(
    client: httpx.Client, path: str
) -> None:
    answer = client.get(path)
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith(f"{PREFIX}/login?next=")
    assert parse_qs(urlsplit(location).query)["next"] == [path]
    assert client.get(location).status_code == 200


def test_a_forged_cookie_is_no_session(client: httpx.Client) -> None:
    client.cookies.set("fulfillment_session", "eyJhY3RvciI6ImV2ZSJ9.forged.sig")
    assert client.get(PREFIX).status_code == 303


def test_wrong_token_shows_the_form_again_with_401(client: httpx.Client) -> None:
    answer = client.post(f"{PREFIX}/login", data={"name": "Eve", "token": "guess"})
    assert answer.status_code == 401
    assert "Wrong token." in answer.text and 'id="login-form"' in answer.text
    assert "set-cookie" not in answer.headers
    assert client.post(f"{PREFIX}/login", data={"name": "Eve"}).status_code == 401
    assert client.get(PREFIX).status_code == 303


def test_too_many_wrong_tokens_lock_the_address_out_of_the_login(client: httpx.Client) -> None:
    for n in range(AUTH_FAILURES_MAX):
        answer = client.post(f"{PREFIX}/login", data={"name": "Eve", "token": f"guess-{n}"})
        assert answer.status_code == 401
    answer = client.post(f"{PREFIX}/login", data={"name": "Eve", "token": "test-admin-token"})
    assert answer.status_code == 429
    assert "Too many wrong tokens" in answer.text and 'id="login-form"' in answer.text
    assert int(answer.headers["Retry-After"]) > 0
    assert "set-cookie" not in answer.headers


def test_login_sets_an_httponly_samesite_strict_cookie_and_goes_to_next(
    client: httpx.Client,
) -> None:
    target = f"{PREFIX}/dead-letters?phone=0241234567"
    answer = client.post(
        f"{PREFIX}/login", data={"name": "Ama", "token": "test-admin-token", "next": target}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == target
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("fulfillment_session=")
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # the fixture serves plain HTTP (secure_cookies=False)
    page = client.get(target)
    assert page.status_code == 200
    assert "Dead letters" in page.text and "Ama" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "/api/orders", "javascript:x"],
)
def test_login_never_redirects_off_the_dashboard(client: httpx.Client, target: str) -> None:
    answer = client.post(
        f"{PREFIX}/login", data={"name": "Ama", "token": "test-admin-token", "next": target}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == PREFIX


def test_logout_needs_csrf_and_clears_the_cookie(client: httpx.Client) -> None:
    csrf = login(client)
    assert client.post(f"{PREFIX}/logout").status_code == 403
    answer = client.post(f"{PREFIX}/logout", data={"csrf": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{PREFIX}/login"
    assert 'fulfillment_session=""' in answer.headers["set-cookie"]
    assert client.get(PREFIX).status_code == 303


# -- CSRF ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/retry", "/dead-letters/requeue", "/dead-letters/dismiss", "/dlq/requeue", "/dlq/delete"],
)
def test_posts_without_or_with_a_wrong_csrf_token_are_forbidden(
    client: httpx.Client, web: WebServer, store: Store, path: str
) -> None:
    oid = add_order(store, sql=DEAD)
    csrf = login(client)
    form = {"order_id": oid, "message_id": "m-1", "reason": "test"}
    assert client.post(PREFIX + path, data=form).status_code == 403
    wrong = client.post(PREFIX + path, data={**form, "csrf": csrf[:-2] + "xx"})
    assert wrong.status_code == 403
    assert "CSRF" in wrong.text
    assert web.published == []
    row = store.order_row(oid)
    assert row is not None and row["dead_lettered_at"] is not None  # untouched


def test_posts_without_a_session_go_to_login(client: httpx.Client, web: WebServer) -> None:
    answer = client.post(f"{PREFIX}/retry", data={"order_id": str(uuid.uuid4()), "csrf": "x"})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(f"{PREFIX}/login")
    assert web.published == []


# -- actions ---------------------------------------------------------------------------


def test_retry_is_audited_published_and_flashed(
    client: httpx.Client, web: WebServer, store: Store
) -> None:
    dead = add_order(store, sql=DEAD)
    done = add_order(store, sql=SUCCESS)
    csrf = login(client, name="Kofi")
    back = f"{PREFIX}?status=dead_lettered"
    answer = client.post(
        f"{PREFIX}/retry",
        data={"csrf": csrf, "order_id": [dead, done], "reason": "vendor fixed", "back": back},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == back
    assert web.published == [(dead, 0.0)]
    page = client.get(back)
    assert "Retry: 1 scheduled, 1 refused." in page.text
    assert "the order was delivered" in page.text
    assert client.get(back).text.count('id="flash"') == 0  # read once
    detail = client.get(f"{PREFIX}/orders/{dead}").text
    assert 'data-audit-action="retry"' in detail
    assert "Kofi" in detail and "vendor fixed" in detail
    assert [(r["actor"], r["reason"]) for r in audit(store, "retry")][-1:] == [
        ("Kofi", "vendor fixed")
    ]


def test_retry_without_a_reason_changes_nothing(
    client: httpx.Client, web: WebServer, store: Store
) -> None:
    dead = add_order(store, sql=DEAD)
    csrf = login(client)
    answer = client.post(
        f"{PREFIX}/retry", data={"csrf": csrf, "one": dead, "reason": "  ", "back": PREFIX}
    )
    assert answer.status_code == 303
    assert web.published == []
    assert "say why" in client.get(PREFIX).text


def test_retry_all_filtered_takes_only_the_filter(
    client: httpx.Client, web: WebServer, store: Store
) -> None:
    mine = add_order(store, phone="+233241111111", sql=DEAD)
    other = add_order(store, phone="+233242222222", sql=DEAD)
    csrf = login(client)
    answer = client.post(
        f"{PREFIX}/retry",
        data={
            "csrf": csrf,
            "all_filtered": "1",
            "status": "dead_lettered",
            "phone": "024 111 1111",
            "reason": "bulk",
            "back": f"{PREFIX}?status=dead_lettered",
        },
    )
    assert answer.status_code == 303
    assert web.published == [(mine, 0.0)]
    row = store.order_row(other)
    assert row is not None and row["dead_lettered_at"] is not None


def test_dead_letters_requeue_and_dismiss(
    client: httpx.Client, web: WebServer, store: Store
) -> None:
    first, second, third = (add_order(store, sql=DEAD) for _ in range(3))
    csrf = login(client)
    page = client.get(f"{PREFIX}/dead-letters").text
    assert all(f'data-order-id="{oid}"' in page for oid in (first, second, third))
    client.post(
        f"{PREFIX}/dead-letters/requeue",
        data={"csrf": csrf, "order_id": [first, second], "reason": "vendor back"},
    )
    assert sorted(web.published) == sorted([(first, 0.0), (second, 0.0)])
    answer = client.post(
        f"{PREFIX}/dead-letters/dismiss",
        data={"csrf": csrf, "order_id": third, "reason": "refunded"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{PREFIX}/dead-letters"
    page = client.get(f"{PREFIX}/dead-letters").text
    assert "Dismiss: 1 dismissed." in page
    assert "No open dead letters." in page
    assert [r["reason"] for r in audit(store, "dismiss")][-1] == "refunded"


def _seed_dlq(web: WebServer, order_ids: list[str]) -> list[str]:
    return park_dead_messages(web.namespace, order_ids)


def test_dramatiq_dlq_requeue_and_delete_are_audited(
    client: httpx.Client, web: WebServer, store: Store
) -> None:
    oid = str(uuid.uuid4())
    requeued, deleted = _seed_dlq(web, [oid, "not-a-uuid"])
    csrf = login(client)
    page = client.get(f"{PREFIX}/dlq").text
    assert 'data-count="2"' in page
    assert f'data-message-id="{requeued}"' in page and f"{PREFIX}/orders/{oid}" in page
    answer = client.post(
        f"{PREFIX}/dlq/requeue",
        data={"csrf": csrf, "message_id": requeued, "reason": "worker fixed"},
    )
    assert answer.status_code == 303
    page = client.get(f"{PREFIX}/dlq").text
    assert "1 message(s) requeued." in page and 'data-count="1"' in page
    client.post(
        f"{PREFIX}/dlq/delete", data={"csrf": csrf, "message_id": deleted, "reason": "garbage"}
    )
    assert 'data-count="0"' in client.get(f"{PREFIX}/dlq").text
    (req,) = [r for r in audit(store, "dlq_requeue") if requeued in r["details"]["ids"]]  # type: ignore[index]
    assert (req["actor"], req["reason"], req["order_id"]) == ("Ama", "worker fixed", None)
    assert any(deleted in r["details"]["ids"] for r in audit(store, "dlq_delete"))  # type: ignore[index]
    # the requeued message is on the fulfillment queue again
    raw = redis.Redis.from_url(REDIS_URL)
    queued = raw.hvals(f"{web.namespace}:fulfillment.msgs")
    assert [list(dramatiq.Message.decode(cast(bytes, body)).args) for body in queued] == [[oid]]


def test_dlq_action_needs_a_reason(client: httpx.Client, web: WebServer) -> None:
    (message_id,) = _seed_dlq(web, [str(uuid.uuid4())])
    csrf = login(client)
    client.post(f"{PREFIX}/dlq/delete", data={"csrf": csrf, "message_id": message_id})
    page = client.get(f"{PREFIX}/dlq").text
    assert "Say why" in page and 'data-count="1"' in page


# -- CSV export ----------------------------------------------------------------------


def test_export_csv_streams_iso_utc_times_and_defuses_formulas(
    client: httpx.Client, store: Store
) -> None:
    formula = add_order(store, package_name='=HYPERLINK("http://x")', size_gb=None, sql=DEAD)
    plus = add_order(store, package_name="+2GB", sql=SUCCESS)
    add_order(store)  # pending: not in the failed filter
    login(client)
    with client.stream("GET", f"{PREFIX}/export.csv?status=all") as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/csv; charset=utf-8"
        assert answer.headers["content-disposition"].startswith("attachment; filename=")
        assert "content-length" not in answer.headers  # streamed
        text = answer.read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 3
    by_id = {r["id"]: r for r in rows}
    assert by_id[formula]["package_name"] == '\'=HYPERLINK("http://x")'
    assert by_id[plus]["package_name"] == "'+2GB"
    assert by_id[formula]["status"] == "dead_lettered"
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", row["created_at"])
        assert "241234567" not in row["phone"]  # masked
    assert re.fullmatch(r".+Z", by_id[formula]["dead_lettered_at"])
    failed = client.get(f"{PREFIX}/export.csv?status=dead_lettered&phone=0241234567").text
    assert [r["id"] for r in csv.DictReader(io.StringIO(failed))] == [formula]


# -- error pages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "order_id", [str(uuid.uuid4()), "not-a-uuid", quote("'; DROP TABLE orders; --"), "1" * 500]
)
def test_detail_of_an_unknown_or_malformed_id_is_a_404_page(
    client: httpx.Client, order_id: str
) -> None:
    login(client)
    answer = client.get(f"{PREFIX}/orders/{order_id}")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "Order not found" in answer.text


@pytest.mark.parametrize(
    "query", ["status=bogus", "cursor=garbage", "cursor=%00%ff", "status=<script>"]
)
def test_bad_filters_are_a_422_page_not_a_500(client: httpx.Client, query: str) -> None:
    login(client)
    answer = client.get(f"{PREFIX}?{query}")
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("text/html")
    assert "<script>" not in answer.text


def test_static_files_are_whitelisted(client: httpx.Client) -> None:
    assert client.get("/dashboard/static/dashboard.css").status_code == 200
    assert client.get("/dashboard/static/dashboard.js").status_code == 200
    assert client.get("/dashboard/static/..%2Fapp.py").status_code == 404
    assert client.get("/dashboard/static/secret.txt").status_code == 404


def test_everything_shown_is_escaped(client: httpx.Client, store: Store) -> None:
    dead = add_order(store, sql=DEAD)
    csrf = login(client, name="<b>Eve</b>")
    client.post(
        f"{PREFIX}/retry",
        data={"csrf": csrf, "one": dead, "reason": "<script>alert(1)</script>"},
    )
    page = client.get(f"{PREFIX}/orders/{dead}").text
    assert "<script>alert(1)</script>" not in page and "<b>Eve</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;Eve&lt;/b&gt;" in page
