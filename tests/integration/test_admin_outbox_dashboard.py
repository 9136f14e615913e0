"""The outboxes in the dashboard over real HTTP against real PostgreSQL: the order's SMS and
events on its detail page, the Outbox page of failed SMS and events (in the nav), and its
retry and resend forms behind the session and its CSRF token, audited with the admin's name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest

from db.outbox_store import OutboxStore
from db.store import Store
from tests.conftest import WebServer

from .test_admin_outbox import (
    DIGITS,
    MISSING,
    audit,
    dead_lettered,
    delivered,
    event_row,
    fail_event,
    fail_sms,
    outbox,
    sms_row,
)
from .test_dashboard_http import login

__all__ = ["dead_lettered", "delivered", "outbox"]  # fixtures, shared

pytestmark = pytest.mark.integration

PREFIX = "/dashboard/admin/fulfillment"


@pytest.fixture
def client(web: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.url, follow_redirects=False, timeout=10) as http:
        yield http


def rows(page: str, table: str) -> list[str]:
    """The <tr> elements of one table (by id) in a page."""
    match = re.search(rf'<table id="{table}".*?</table>', page, re.S)
    assert match is not None, f"no table {table}"
    return re.findall(r"<tr data-.*?</tr>", match.group(0), re.S)


def test_the_detail_page_shows_the_orders_sms_and_events(
    client: httpx.Client,
    store: Store,
    outbox: OutboxStore,
    dead_lettered: Callable[[], str],
) -> None:
    oid = dead_lettered()
    sms_id, event_id = fail_sms(store, oid), fail_event(store, oid)
    login(client)
    page = client.get(f"{PREFIX}/orders/{oid}").text
    (sms,) = rows(page, "sms")
    assert f'data-sms-id="{sms_id}"' in sms and 'data-kind="failed"' in sms
    assert 'data-outbox-status="failed"' in sms and ">Failed<" in sms  # the provider's status
    assert "for 024*****67 could not be delivered" in sms
    assert "provider reported Failed for 024*****67" in sms
    assert f'action="{PREFIX}/outbox/sms/retry"' in sms  # a failed one has its retry
    (event,) = rows(page, "events")
    assert f'data-event-row="{event_id}"' in event and 'data-type="order.failed"' in event
    assert str(event_row(store, event_id)["event_id"]) in event
    assert ">503<" in event and "HTTP 503 from the platform" in event
    assert f'action="{PREFIX}/outbox/events/resend"' in event
    assert DIGITS not in page


def test_a_delivered_orders_rows_offer_no_action(
    client: httpx.Client, store: Store, outbox: OutboxStore, delivered: Callable[[], str]
) -> None:
    oid = delivered()
    login(client)
    page = client.get(f"{PREFIX}/orders/{oid}").text
    (sms,) = rows(page, "sms")
    (event,) = rows(page, "events")
    assert 'data-outbox-status="queued"' in sms and "/outbox/sms/retry" not in sms
    assert 'data-outbox-status="pending"' in event and "/outbox/events/resend" not in event


def test_the_outbox_page_lists_failures_and_retries_and_resends_them(
    client: httpx.Client,
    web: WebServer,
    store: Store,
    outbox: OutboxStore,
    dead_lettered: Callable[[], str],
    delivered: Callable[[], str],
) -> None:
    fine, oid = delivered(), dead_lettered()
    sms_id, event_id = fail_sms(store, oid), fail_event(store, oid)
    csrf = login(client, name="Kofi")
    orders = client.get(PREFIX).text
    assert f'href="{PREFIX}/outbox" data-nav="outbox"' in orders
    page = client.get(f"{PREFIX}/outbox")
    assert page.status_code == 200
    assert 'aria-current="page">Outbox<' in page.text
    (sms,) = rows(page.text, "failed-sms")
    assert f'value="{sms_id}" form="sms-bulk"' in sms and oid in sms and fine not in page.text
    (event,) = rows(page.text, "failed-events")
    assert f'value="{event_id}" form="events-bulk"' in event
    assert 'id="failed-sms-count" data-count="1"' in page.text
    assert DIGITS not in page.text

    back = f"{PREFIX}/outbox"
    answer = client.post(
        f"{PREFIX}/outbox/sms/retry",
        data={"csrf": csrf, "sms_id": [str(sms_id)], "reason": "credit topped up", "back": back},
    )
    assert answer.status_code == 303 and answer.headers["location"] == back
    assert "Retry: 1 queued." in client.get(back).text
    assert sms_row(store, sms_id)["status"] == "queued"
    answer = client.post(  # the inline form: one id
        f"{PREFIX}/outbox/events/resend",
        data={"csrf": csrf, "one": str(event_id), "reason": "platform back", "back": back},
    )
    assert answer.status_code == 303
    page = client.get(back)
    assert "Resend: 1 queued." in page.text
    assert "No failed SMS." in page.text and "No failed event." in page.text
    assert event_row(store, event_id)["status"] == "pending"
    assert [(a[0], a[1], a[2], a[3]) for a in audit(store)] == [
        ("Kofi", "sms_retry", oid, "credit topped up"),
        ("Kofi", "event_resend", oid, "platform back"),
    ]
    detail = client.get(f"{PREFIX}/orders/{oid}").text
    assert 'data-audit-action="sms_retry"' in detail
    assert 'data-audit-action="event_resend"' in detail
    assert web.published == []  # no fulfil message: only the notifier's (announce)


def test_refusals_are_flashed_and_change_nothing(
    client: httpx.Client, store: Store, outbox: OutboxStore, dead_lettered: Callable[[], str]
) -> None:
    oid = dead_lettered()
    sms_id, event_id = fail_sms(store, oid), fail_event(store, oid)
    csrf = login(client)
    back = f"{PREFIX}/outbox"
    post = {"csrf": csrf, "back": back}
    client.post(f"{PREFIX}/outbox/sms/retry", data={**post, "one": str(sms_id), "reason": " "})
    assert "say why" in client.get(back).text
    client.post(f"{PREFIX}/outbox/sms/retry", data={**post, "reason": "x"})
    assert "Retry: select at least one SMS." in client.get(back).text
    client.post(f"{PREFIX}/outbox/events/resend", data={**post, "one": "nope", "reason": "x"})
    assert "Resend refused" in client.get(back).text
    client.post(
        f"{PREFIX}/outbox/events/resend",
        data={**post, "event_id": [str(MISSING)], "reason": "x"},
    )
    page = client.get(back).text
    assert "Resend: 0 queued, 1 refused." in page and f"#{MISSING}: no event with id" in page
    assert sms_row(store, sms_id)["status"] == "failed"
    assert event_row(store, event_id)["status"] == "failed"
    assert audit(store) == []


@pytest.mark.parametrize("path", ["/outbox/sms/retry", "/outbox/events/resend"])
def test_outbox_forms_need_the_sessions_csrf_token(
    client: httpx.Client,
    store: Store,
    outbox: OutboxStore,
    dead_lettered: Callable[[], str],
    path: str,
) -> None:
    oid = dead_lettered()
    sms_id, event_id = fail_sms(store, oid), fail_event(store, oid)
    form = {"sms_id": str(sms_id), "event_id": str(event_id), "reason": "test"}
    answer = client.post(PREFIX + path, data={**form, "csrf": "x"})  # no session
    assert answer.status_code == 303 and "/login" in answer.headers["location"]
    csrf = login(client)
    assert client.post(PREFIX + path, data=form).status_code == 403
    assert client.post(PREFIX + path, data={**form, "csrf": csrf[:-2] + "xx"}).status_code == 403
    assert sms_row(store, sms_id)["status"] == "failed"
    assert event_row(store, event_id)["status"] == "failed"
    assert audit(store) == []


def test_the_outbox_page_needs_a_session(client: httpx.Client) -> None:
    answer = client.get(f"{PREFIX}/outbox")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(f"{PREFIX}/login?next=")
