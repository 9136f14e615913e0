"""The dashboard in headless Chromium, as an admin uses it: log in, read the stats, filter,
search by a phone typed any way, page through every order, open a detail view, retry a
dead-lettered order and watch its attempt appear, bulk-requeue dead letters, work the
Dramatiq DLQ, download a CSV. Each view is screenshot."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from db.store import Store
from fulfillment.dev.simulator.server import Simulator
from fulfillment.services.delivery import fulfil
from fulfillment.services.ports import FulfilDeps, Outcome
from tests.conftest import WebServer

from .conftest import PREFIX, log_in, script, seed_dlq

pytestmark = pytest.mark.browser

Shoot = Callable[[str], Path]


def row_ids(page: Page, table: str = "table#orders") -> list[str]:
    ids: list[str] = page.locator(f"{table} tbody tr[data-order-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.orderId)"
    )
    return ids


def stat(page: Page, name: str) -> str:
    return page.locator(f".stat[data-stat={name}] .value").inner_text()


def test_login_page_refuses_a_wrong_token_then_returns_to_the_page_asked_for(
    tab: Page, shoot: Shoot
) -> None:
    tab.goto(f"{PREFIX}/dead-letters")
    tab.wait_for_url(f"**{PREFIX}/login?next=**")
    tab.fill("#name", "Ama")
    tab.fill("#token", "not-the-token")
    tab.click("#login-form button[type=submit]")
    expect(tab.locator("#login-error")).to_have_text("Wrong token.")
    shoot("login")
    tab.fill("#token", "test-admin-token")
    tab.click("#login-form button[type=submit]")
    tab.wait_for_url(f"**{PREFIX}/dead-letters")
    expect(tab.locator("h1")).to_have_text("Dead letters")
    expect(tab.locator(".who")).to_have_text("Ama")
    tab.click("#logout")
    tab.wait_for_url(f"**{PREFIX}/login")
    tab.goto(PREFIX)
    tab.wait_for_url(f"**{PREFIX}/login?next=**")


def test_stats_filter_search_and_keyset_pages_through_every_order(
    tab: Page,
    shoot: Shoot,
    store: Store,
    sim: Simulator,
    make_deps: Callable[..., FulfilDeps],
    new_order: Callable[..., str],
    dead_letter: Callable[..., str],
) -> None:
    others = [new_order(phone=f"+23324{5_000_000 + i}") for i in range(118)]
    wanted = new_order(phone="+233241234567")
    dead = dead_letter(phone="+233201000001")
    delivered = others[-3:]  # near the top of the first page, for the screenshot
    for oid in delivered:
        assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    failing = others[-4]
    script(sim, failing, ["error"])
    assert fulfil(failing, make_deps()) is Outcome.RETRY_SCHEDULED
    every = {dead, wanted, *others}
    assert len(every) == 120

    log_in(tab)
    assert stat(tab, "total") == "120"
    assert stat(tab, "success") == "3"
    assert stat(tab, "failed") == "1"
    assert stat(tab, "dead_lettered") == "1"
    assert stat(tab, "pending") == "115"
    assert stat(tab, "success_rate") == "75.0%"  # 3 delivered / (3 + 1 dead-lettered)
    assert stat(tab, "median_fulfil_s_24h").endswith(" s")
    expect(tab.locator("table#orders tbody tr[data-order-id]")).to_have_count(50)
    # phones are masked in the table
    assert "241234567" not in tab.locator("table#orders").inner_text()
    shoot("orders")

    # filter by status
    tab.click("a.tab[data-status=success]")
    tab.wait_for_url("**status=success**")
    assert sorted(row_ids(tab)) == sorted(delivered)
    tab.click("a.tab[data-status=failed]")
    tab.wait_for_url("**status=failed**")
    assert row_ids(tab) == [failing]
    expect(tab.locator(f"tr[data-order-id='{failing}'] .error-cell").first).to_contain_text(
        "VENDOR_5XX"
    )
    tab.click("a.tab[data-status=dead_lettered]")
    assert row_ids(tab) == [dead]

    # search by a phone typed the way people say it
    tab.click("a.tab[data-status=all]")
    tab.fill("#phone", "024 123 4567")
    tab.click("#search")
    tab.wait_for_url("**phone=024+123+4567**")
    assert row_ids(tab) == [wanted]
    tab.fill("#phone", "233241234567")
    tab.click("#search")
    assert row_ids(tab) == [wanted]

    # keyset pages: 50 + 50 + 20, newest first, no duplicates, nothing missed
    tab.goto(PREFIX)
    seen: list[str] = []
    for expected in (50, 50, 20):
        ids = row_ids(tab)
        assert len(ids) == expected
        seen += ids
        if expected == 20:
            expect(tab.locator("#older")).to_have_count(0)
        else:
            tab.click("#older")
            tab.wait_for_url("**cursor=**")
    assert len(seen) == len(set(seen)) == 120 and set(seen) == every
    with store.pool.connection() as conn:
        newest_first = [
            str(r["id"])
            for r in conn.execute("SELECT id FROM orders ORDER BY created_at DESC, id DESC")
        ]
    assert seen == newest_first
    tab.click("#newest")
    assert row_ids(tab) == seen[:50]


def test_auto_refresh_keeps_filter_search_and_page_and_waits_for_typing(
    tab: Page, new_order: Callable[..., str]
) -> None:
    for i in range(60):
        new_order(phone=f"+23324{6_000_000 + i}")
    log_in(tab)
    tab.goto(f"{PREFIX}?status=pending")
    tab.click("#older")
    tab.wait_for_url("**cursor=**")
    url = tab.url
    tab.clock.install()
    tab.goto(url)
    first = row_ids(tab)
    rendered = tab.locator("[data-rendered-at]").get_attribute("data-rendered-at")
    tab.clock.run_for(31_000)
    expect(tab.locator("[data-rendered-at]")).not_to_have_attribute(
        "data-rendered-at", rendered or ""
    )
    assert tab.url == url
    assert "status=pending" in url and "cursor=" in url
    assert row_ids(tab) == first
    # typing a reason pauses the refresh (the text would be lost)
    rendered = tab.locator("[data-rendered-at]").get_attribute("data-rendered-at")
    tab.fill("#bulk-reason", "half-typed")
    tab.clock.run_for(31_000)
    expect(tab.locator("#refresh-note")).to_contain_text("paused")
    assert tab.locator("[data-rendered-at]").get_attribute("data-rendered-at") == rendered
    assert tab.input_value("#bulk-reason") == "half-typed"


def test_detail_view_retry_with_a_reason_and_the_new_attempt_appears(
    tab: Page,
    shoot: Shoot,
    web: WebServer,
    store: Store,
    make_deps: Callable[..., FulfilDeps],
    dead_letter: Callable[..., str],
) -> None:
    dead = dead_letter()
    log_in(tab, name="Kofi")
    tab.click("a.tab[data-status=dead_lettered]")
    tab.click(f"tr[data-order-id='{dead}'] a[href$='{dead}']")
    tab.wait_for_url(f"**/orders/{dead}")
    expect(tab.locator("#order-id")).to_have_text(dead)
    expect(tab.locator("dd[data-field=status]")).to_have_text("dead-lettered")
    expect(tab.locator("dd[data-field=dead_letter_reason]")).to_contain_text("INVALID_PHONE")
    attempts = tab.locator("#attempts tr.attempt")
    expect(attempts).to_have_count(1)
    expect(attempts.first).to_contain_text("INVALID_PHONE")
    attempts.first.locator("details summary").click()
    expect(attempts.first.locator("pre")).to_contain_text('"code": "INVALID_PHONE"')
    expect(tab.locator("#notifications [data-webhook-state]")).to_have_text("not configured")
    expect(tab.locator("#sms tr[data-kind=failed] [data-col=status]")).to_have_text("queued")
    expect(tab.locator("#events tr[data-type='order.failed']")).to_have_count(1)
    expect(tab.locator("#audit tr[data-audit-action]")).to_have_count(0)

    # retry asks for a reason: an empty one is not sent
    tab.click("#retry-form button[type=submit]")
    assert tab.url.endswith(f"/orders/{dead}")
    assert web.published == []
    tab.fill("#retry-reason", "customer confirmed the number")
    tab.click("#retry-form button[type=submit]")
    expect(tab.locator("#flash")).to_have_text("Retry: 1 scheduled.")
    assert web.published == [(dead, 0.0)]
    audit = tab.locator("#audit tr[data-audit-action=retry]")
    expect(audit).to_have_count(1)
    expect(audit.locator("[data-col=actor]")).to_have_text("Kofi")
    expect(audit.locator("[data-col=reason]")).to_have_text("customer confirmed the number")
    expect(tab.locator("dd[data-field=status]")).to_have_text("failed")

    # it left the dead-letter filter
    tab.goto(f"{PREFIX}?status=dead_lettered")
    assert dead not in row_ids(tab)

    # the worker takes the published message: a new attempt, delivered
    assert fulfil(dead, make_deps()) is Outcome.SUCCESS
    tab.goto(f"{PREFIX}/orders/{dead}")
    expect(tab.locator("dd[data-field=status]")).to_have_text("success")
    purchases = tab.locator("#attempts tr.attempt[data-action=purchase]")
    expect(purchases).to_have_count(2)
    expect(purchases.last).to_have_attribute("data-status", "success")
    # the retry's delivery is a new outcome: a new SMS and a new event after the failure's
    expect(tab.locator("#sms tr[data-kind=delivered]")).to_have_count(1)
    expect(tab.locator("#events tr[data-event-row]")).to_have_count(2)
    purchases.first.locator("details summary").click()  # the vendor's refusal, for the picture
    shoot("detail")
    for view in ("failed", "dead_lettered"):
        tab.goto(f"{PREFIX}?status={view}")
        assert dead not in row_ids(tab)
    tab.goto(f"{PREFIX}?status=success")
    assert row_ids(tab) == [dead]


def test_one_click_retry_from_the_failed_filter(
    tab: Page,
    web: WebServer,
    sim: Simulator,
    make_deps: Callable[..., FulfilDeps],
    new_order: Callable[..., str],
) -> None:
    failing = new_order()
    script(sim, failing, ["error"])
    assert fulfil(failing, make_deps()) is Outcome.RETRY_SCHEDULED
    log_in(tab, next_path=f"{PREFIX}?status=failed")
    row = tab.locator(f"tr[data-order-id='{failing}']")
    row.locator("details.inline-action summary").click()
    row.locator("input[name=reason]").fill("vendor outage over")
    row.locator("button[type=submit]").click()
    expect(tab.locator("#flash")).to_have_text("Retry: 1 scheduled.")
    assert tab.url.endswith(f"{PREFIX}?status=failed")
    assert web.published == [(failing, 0.0)]


def test_bulk_requeue_and_dismiss_from_the_dead_letter_view(
    tab: Page, shoot: Shoot, web: WebServer, dead_letter: Callable[..., str]
) -> None:
    first, second, third = (dead_letter(phone=f"+23324700000{i}") for i in range(3))
    log_in(tab)
    tab.click("nav a[data-nav=dead-letters]")
    tab.wait_for_url(f"**{PREFIX}/dead-letters")
    assert sorted(row_ids(tab, "table#dead-letters")) == sorted([first, second, third])
    states = tab.locator("table#dead-letters [data-webhook-state]")
    expect(states).to_have_count(3)
    expect(states.first).to_have_text("not configured")
    reasons = tab.locator("table#dead-letters td[data-col=reason]")
    expect(reasons.first).to_contain_text("INVALID_PHONE")
    shoot("dead-letters")

    for oid in (first, second):
        tab.check(f"tr[data-order-id='{oid}'] input[type=checkbox]")
    tab.fill("#bulk-reason", "vendor fixed the validation bug")
    tab.click("#requeue-selected")
    expect(tab.locator("#flash")).to_have_text("Requeue: 2 requeued.")
    assert sorted(web.published) == sorted([(first, 0.0), (second, 0.0)])
    assert row_ids(tab, "table#dead-letters") == [third]

    tab.check(f"tr[data-order-id='{third}'] input[type=checkbox]")
    tab.fill("#bulk-reason", "refunded")
    tab.click("#dismiss-selected")
    expect(tab.locator("#flash")).to_have_text("Dismiss: 1 dismissed.")
    expect(tab.locator("table#dead-letters tr.empty")).to_have_text("No open dead letters.")
    tab.goto(f"{PREFIX}/orders/{third}")
    expect(tab.locator("#audit tr[data-audit-action=dismiss] [data-col=reason]")).to_have_text(
        "refunded"
    )


def test_csv_download_of_the_current_filter(
    tab: Page,
    tmp_path: Path,
    new_order: Callable[..., str],
    dead_letter: Callable[..., str],
) -> None:
    dead = dead_letter()
    new_order(phone="+233241234567")
    log_in(tab, next_path=f"{PREFIX}?status=dead_lettered")
    with tab.expect_download() as info:
        tab.click("#export")
    download = info.value
    assert re.fullmatch(
        r"fulfillments-dead_lettered-\d{8}T\d{6}Z\.csv", download.suggested_filename
    )
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert rows[0][:3] == ["id", "created_at", "phone"]
    assert [r[0] for r in rows[1:]] == [dead]
    record = dict(zip(rows[0], rows[1], strict=True))
    assert record["status"] == "dead_lettered"
    assert record["phone"] == "'+23324*****67"  # masked; a leading + is a formula: escaped
    assert record["created_at"].endswith("Z") and record["dead_lettered_at"].endswith("Z")
    assert "INVALID_PHONE" in record["dead_letter_reason"]


def test_dramatiq_dlq_view_requeue_and_delete(
    tab: Page, shoot: Shoot, web: WebServer, store: Store, new_order: Callable[..., str]
) -> None:
    oid = new_order()
    requeued, deleted = seed_dlq(web.namespace, [oid, "not-an-order-id"])
    log_in(tab)
    tab.click("nav a[data-nav=dlq]")
    tab.wait_for_url(f"**{PREFIX}/dlq")
    expect(tab.locator("#dlq-count")).to_have_text("2")
    row = tab.locator(f"tr[data-message-id='{requeued}']")
    expect(row.locator(f"a[href$='/orders/{oid}']")).to_have_count(1)
    row.locator("details summary").click()
    expect(row.locator("pre")).to_contain_text('"actor_name": "fulfill_order"')
    shoot("dlq")

    tab.check(f"tr[data-message-id='{requeued}'] input[type=checkbox]")
    tab.fill("#bulk-reason", "worker bug fixed")
    tab.click("#dlq-requeue")
    expect(tab.locator("#flash")).to_have_text("1 message(s) requeued.")
    expect(tab.locator("#dlq-count")).to_have_text("1")
    tab.check(f"tr[data-message-id='{deleted}'] input[type=checkbox]")
    tab.fill("#bulk-reason", "garbage message")
    tab.click("#dlq-delete")
    expect(tab.locator("#flash")).to_have_text("1 message(s) deleted.")
    expect(tab.locator("#dlq-count")).to_have_text("0")
    with store.pool.connection() as conn:
        actions = conn.execute(
            "SELECT action, actor, reason FROM admin_audit"
            " WHERE action LIKE 'dlq_%%' AND details->'ids' ?| %s ORDER BY id",
            ([requeued, deleted],),
        ).fetchall()
    assert [(a["action"], a["actor"], a["reason"]) for a in actions] == [
        ("dlq_requeue", "Ama", "worker bug fixed"),
        ("dlq_delete", "Ama", "garbage message"),
    ]
