"""An outcome-unknown order in headless Chromium (issue 9): the card and the tab lead to it,
its detail page has the three decisions, each refusing to go without a reason; a recheck on
one order, mark delivered and mark not delivered on two others, each audited."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from db.store import Store
from tests.conftest import WebServer

from .conftest import PREFIX, log_in

pytestmark = pytest.mark.browser

Shoot = Callable[[str], Path]
REASON = "vendor outcome still unknown after 30 status checks; check by hand"


def make_outcome_unknown(store: Store, order_id: str) -> None:
    with store.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET fulfillment_status = 'processing', fulfillment_attempts = 1,"
            " fulfillment_in_flight_attempt = 1, claim_token = NULL, next_attempt_at = NULL,"
            " last_error_code = 'TIMEOUT', last_error_message = 'no answer from the vendor',"
            " dead_letter_reason = %s, dead_letter_requested_at = now(),"
            " dead_lettered_at = now() WHERE id = %s",
            (REASON, order_id),
        )


def test_detail_page_decides_an_outcome_unknown_with_a_reason(
    tab: Page, shoot: Shoot, web: WebServer, store: Store, new_order: Callable[..., str]
) -> None:
    recheck, delivered, not_delivered = new_order(), new_order(), new_order()
    for oid in (recheck, delivered, not_delivered):
        make_outcome_unknown(store, oid)
    log_in(tab, name="Abena")
    expect(tab.locator(".stat[data-stat=outcome_unknown] .value")).to_have_text("3")
    tab.click(".stat[data-stat=outcome_unknown]")
    tab.wait_for_url("**status=outcome_unknown**")
    expect(tab.locator("table#orders tbody tr[data-status=outcome_unknown]")).to_have_count(3)
    tab.click(f"tr[data-order-id='{recheck}'] a[href$='{recheck}']")
    tab.wait_for_url(f"**/orders/{recheck}")
    expect(tab.locator("dd[data-field=status]")).to_have_text("outcome-unknown")
    expect(tab.locator("#outcome-unknown-note")).to_contain_text("Never refund it")
    expect(tab.locator("#retry-form")).to_have_count(0)
    expect(tab.locator("#dismiss-form")).to_have_count(0)
    shoot("outcome-unknown-detail")

    # every button asks for a reason: without one nothing is sent
    for form in ("#recheck-form", "#mark-delivered-form", "#mark-not-delivered-form"):
        tab.click(f"{form} button[type=submit]")
        assert tab.url.endswith(f"/orders/{recheck}")
    assert web.published == []
    tab.fill("#recheck-reason", "vendor status API is back")
    tab.click("#recheck-form button[type=submit]")
    expect(tab.locator("#flash")).to_have_text(
        "Recheck: the vendor will be asked again for this reference."
    )
    assert web.published == [(recheck, 0.0)]
    expect(tab.locator("dd[data-field=status]")).to_have_text("processing")
    expect(tab.locator("#recheck-form")).to_have_count(0)
    entry = tab.locator("#audit tr[data-audit-action=recheck]")
    expect(entry.locator("[data-col=actor]")).to_have_text("Abena")
    expect(entry.locator("[data-col=reason]")).to_have_text("vendor status API is back")

    tab.goto(f"{PREFIX}/orders/{delivered}")
    tab.fill("#mark-delivered-reason", "delivered per the vendor dashboard")
    tab.fill("#mark-delivered-tx", "TX-31337")
    tab.click("#mark-delivered-form button[type=submit]")
    expect(tab.locator("#flash")).to_have_text(
        "Mark delivered: the order is recorded as delivered."
    )
    expect(tab.locator("dd[data-field=status]")).to_have_text("success")
    expect(tab.locator("#order-fields")).to_contain_text("TX-31337")
    expect(tab.locator("#audit tr[data-audit-action=mark_delivered]")).to_have_count(1)

    tab.goto(f"{PREFIX}/orders/{not_delivered}")
    tab.fill("#mark-not-delivered-reason", "vendor has no such reference")
    tab.click("#mark-not-delivered-form button[type=submit]")
    expect(tab.locator("#flash")).to_contain_text("Mark not delivered: the order is failed")
    expect(tab.locator("dd[data-field=status]")).to_have_text("dead-lettered")
    expect(tab.locator("#retry-form")).to_have_count(1)  # a dead letter like any other now
    expect(tab.locator("#audit tr[data-audit-action=mark_not_delivered]")).to_have_count(1)
    shoot("outcome-unknown-decided")
    assert web.published == [(recheck, 0.0)]

    tab.goto(PREFIX)
    expect(tab.locator(".stat[data-stat=outcome_unknown] .value")).to_have_text("0")
