"""The Outbox page in headless Chromium: a failed SMS retried and a failed event resent from
their rows' inline forms, each with a reason, and gone from the lists after."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from db.store import Store
from tests.integration.test_admin_outbox import fail_event, fail_sms
from tests.integration.test_web_api import sql

from .conftest import PREFIX, log_in

pytestmark = pytest.mark.browser


def test_retry_a_failed_sms_and_resend_a_failed_event_from_the_outbox_page(
    tab: Page,
    shoot: Callable[[str], Path],
    store: Store,
    dead_letter: Callable[..., str],
) -> None:
    sql(store, "TRUNCATE customer_sms, platform_events")
    oid = dead_letter()
    sms_id, event_id = fail_sms(store, oid), fail_event(store, oid)
    log_in(tab, name="Kofi")
    tab.click("a[data-nav=outbox]")
    tab.wait_for_url(f"**{PREFIX}/outbox")
    sms = tab.locator(f"#failed-sms tr[data-sms-id='{sms_id}']")
    expect(sms).to_contain_text("provider reported Failed for 024*****67")
    event = tab.locator(f"#failed-events tr[data-event-row='{event_id}']")
    expect(event).to_contain_text("order.failed")
    shoot("outbox")

    sms.locator("details.inline-action summary").click()
    sms.locator("input[name=reason]").fill("credit topped up")
    sms.locator("form button[type=submit]").click()
    expect(tab.locator("#flash")).to_have_text("Retry: 1 queued.")
    expect(tab.locator("#failed-sms tr.empty")).to_have_text("No failed SMS.")

    event = tab.locator(f"#failed-events tr[data-event-row='{event_id}']")
    event.locator("details.inline-action summary").click()
    event.locator("input[name=reason]").fill("platform back up")
    event.locator("form button[type=submit]").click()
    expect(tab.locator("#flash")).to_have_text("Resend: 1 queued.")
    expect(tab.locator("#failed-events tr.empty")).to_have_text("No failed event.")

    tab.goto(f"{PREFIX}/orders/{oid}")
    expect(tab.locator("#sms [data-col=status]")).to_have_text("queued")
    expect(tab.locator("#events [data-col=status]")).to_have_text("pending")
    expect(tab.locator("#audit [data-col=actor]")).to_have_text(["Kofi", "Kofi"])
