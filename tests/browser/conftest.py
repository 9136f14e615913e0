"""Browser fixtures: Debian's Chromium driven by Playwright's Python package, the admin web
process (tests/conftest.py `web`), and the simulator and fulfil service of the integration
tier to make real orders, attempts and dead letters.

Chromium missing: the tests skip locally and fail in CI (CI=true), like the servers.
Screenshots go to the test's tmp_path and, when SCREENSHOT_DIR is set, to that directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from db.store import Store
from fulfillment.dev.simulator.server import Simulator
from fulfillment.services.deadletter import handle_dead_letter
from fulfillment.services.delivery import fulfil
from fulfillment.services.notifier import Notifier
from fulfillment.services.ports import FulfilDeps, Outcome
from tests.conftest import IN_CI, WebServer, park_dead_messages

# The integration tier's fixtures, shared here (pytest finds fixtures by name in a conftest).
from tests.integration.conftest import Sent, make_deps, new_order, sent, sim

__all__ = ["make_deps", "new_order", "sent", "sim"]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PREFIX = "/dashboard/admin/fulfillment"
ADMIN_TOKEN = "test-admin-token"  # the `web` fixture's


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        message = f"Chromium not found at {CHROMIUM} (apt-get install chromium, or CHROMIUM_PATH)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def tab(chromium: Browser, web: WebServer) -> Iterator[Page]:
    """A fresh browser context (no cookies) on the test's admin server."""
    context = chromium.new_context(
        base_url=web.url, viewport={"width": 1440, "height": 900}, accept_downloads=True
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def shoot(tab: Page, tmp_path: Path) -> Callable[[str], Path]:
    """Save a full-page screenshot named `name`.png; its path under tmp_path."""
    target = os.environ.get("SCREENSHOT_DIR")

    def take(name: str) -> Path:
        path = tmp_path / f"{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(target) / path.name)
        return path

    return take


def log_in(page: Page, name: str = "Ama", next_path: str | None = None) -> None:
    page.goto(next_path or PREFIX)
    page.wait_for_url(f"**{PREFIX}/login**")
    page.fill("#name", name)
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


def script(sim: Simulator, reference: str, responses: list[str]) -> None:
    """What the simulator answers to this order's next purchases."""
    body = {"reference": reference, "responses": responses}
    httpx.post(sim.url.replace("/v1", "/_sim/script"), json=body).raise_for_status()


@pytest.fixture
def dead_letter(
    store: Store,
    sim: Simulator,
    make_deps: Callable[..., FulfilDeps],
    new_order: Callable[..., str],
    sent: Sent,
) -> Callable[..., str]:
    """A dead-lettered order, made as the fleet makes one: the vendor refuses the phone
    (permanent), the worker dead-letters, the dead-letter consumer flags and notifies."""

    def make(phone: str = "+233241234567") -> str:
        oid = new_order(phone=phone)
        script(sim, oid, ["invalid_phone"])
        assert fulfil(oid, make_deps()) is Outcome.DEAD_LETTERED
        notice = next(n for n in sent.dead_letters if n.order_id == oid)
        assert handle_dead_letter(notice, store, Notifier(store=store, webhook_url=None))
        return oid

    return make


def seed_dlq(namespace: str, order_ids: list[str]) -> list[str]:
    """Put messages into Dramatiq's dead-letter queue as the Redis broker keeps it."""
    return park_dead_messages(namespace, order_ids)
