"""The dashboard's runtime pause over real HTTP (uvicorn) against real PostgreSQL: the pause
and resume forms need a session and the session's CSRF token and refuse a blank reason; the
banner on every page says what is paused, by whom, why and since when; the web process's own
FULFILLMENT_ENABLED=false is said too."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from html import unescape

import httpx
import pytest

from db.store import Store
from tests.conftest import WebServer

from .test_dashboard_http import PREFIX, add_order, audit, login

pytestmark = pytest.mark.integration

PAGES = (PREFIX, f"{PREFIX}/dead-letters", f"{PREFIX}/dlq")


@pytest.fixture
def client(web: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.url, follow_redirects=False, timeout=10) as http:
        yield http


def pauses(store: Store) -> list[tuple[str, str, str]]:
    with store.pool.connection() as conn:
        rows = conn.execute(
            "SELECT scope, reason, paused_by FROM fleet_pauses ORDER BY scope"
        ).fetchall()
    return [(r["scope"], r["reason"], r["paused_by"]) for r in rows]


def banner(page: str) -> str:
    """The pause banner's text (tags stripped), or '' when there is none."""
    match = re.search(r'<div class="banner banner-paused" id="pause-banner".*?</ul>', page, re.S)
    return "" if match is None else " ".join(unescape(re.sub(r"<[^>]+>", " ", match[0])).split())


def flash_text(page: str) -> str:
    match = re.search(r'id="flash">\s*<p>(.*?)</p>', page, re.S)
    return "" if match is None else unescape(match[1])


@pytest.mark.parametrize("path", ["/pause", "/resume"])
def test_pause_and_resume_without_a_session_go_to_login(
    client: httpx.Client, store: Store, path: str
) -> None:
    form = {"scope": "*", "reason": "vendor maintenance", "csrf": "x", "back": PREFIX}
    answer = client.post(PREFIX + path, data=form)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(f"{PREFIX}/login")
    assert pauses(store) == []


def test_pause_without_or_with_a_wrong_csrf_token_is_forbidden(
    client: httpx.Client, store: Store
) -> None:
    csrf = login(client)
    form = {"scope": "*", "reason": "vendor maintenance", "back": PREFIX}
    assert client.post(f"{PREFIX}/pause", data=form).status_code == 403
    wrong = client.post(f"{PREFIX}/pause", data={**form, "csrf": csrf[:-2] + "xx"})
    assert wrong.status_code == 403
    assert "CSRF" in wrong.text
    assert pauses(store) == []
    assert audit(store, "pause") == []


def test_resume_without_the_csrf_token_is_forbidden_and_the_pause_stays(
    client: httpx.Client, store: Store
) -> None:
    csrf = login(client)
    client.post(f"{PREFIX}/pause", data={"csrf": csrf, "scope": "*", "reason": "hold"})
    assert [p[0] for p in pauses(store)] == ["*"]
    assert client.post(f"{PREFIX}/resume", data={"scope": "*"}).status_code == 403
    bad = client.post(f"{PREFIX}/resume", data={"scope": "*", "csrf": "not-it"})
    assert bad.status_code == 403
    assert [p[0] for p in pauses(store)] == ["*"]
    assert audit(store, "resume") == []


@pytest.mark.parametrize("reason", ["", "   ", "\t\n"])
def test_a_blank_reason_is_refused_and_nothing_is_paused(
    client: httpx.Client, store: Store, reason: str
) -> None:
    csrf = login(client)
    answer = client.post(
        f"{PREFIX}/pause", data={"csrf": csrf, "scope": "*", "reason": reason, "back": PREFIX}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == PREFIX
    page = client.get(PREFIX).text
    assert flash_text(page).startswith("Pause refused: reason: say why")
    assert 'class="flash flash-error"' in page
    assert pauses(store) == []
    assert audit(store, "pause") == []
    assert banner(page) == ""


def test_an_unknown_network_is_refused(client: httpx.Client, store: Store) -> None:
    csrf = login(client)
    client.post(f"{PREFIX}/pause", data={"csrf": csrf, "scope": "vodafone", "reason": "x"})
    assert "unknown network 'vodafone'" in flash_text(client.get(PREFIX).text)
    assert pauses(store) == []


def test_pause_shows_on_every_page_and_resume_lifts_it(
    client: httpx.Client, web: WebServer, store: Store
) -> None:
    waiting = add_order(store)
    csrf = login(client, name="Kofi")
    back = f"{PREFIX}/dead-letters"
    answer = client.post(
        f"{PREFIX}/pause",
        data={
            "csrf": csrf,
            "scope": "*",
            "reason": "vendor asked us to hold; call +233241234567",
            "back": back,
        },
    )
    assert answer.status_code == 303 and answer.headers["location"] == back
    first = client.get(back).text
    assert flash_text(first) == (
        "The whole fleet is paused: workers buy none of its orders until it is resumed."
    )
    # the number in the reason is kept masked, as everywhere it is shown
    assert pauses(store) == [("*", "vendor asked us to hold; call +23324*****67", "Kofi")]
    detail = f"{PREFIX}/orders/{waiting}"
    for path in (*PAGES, detail):
        text = banner(client.get(path).text)
        assert text.startswith("Paused The whole fleet is paused"), (path, text)
        assert "paused by Kofi since" in text
        assert re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \( ?for \d", text), text
        assert "vendor asked us to hold" in text
        assert "241234567" not in text, "a phone number in the reason is masked"
    page = client.get(PREFIX).text
    assert 'id="resume-fleet"' in page and 'aria-label="Resume the whole fleet"' in page
    assert 'id="fleet-running"' not in page
    assert [(r["actor"], r["reason"]) for r in audit(store, "pause")] == [
        ("Kofi", "vendor asked us to hold; call +23324*****67")
    ]

    # pausing it again keeps the first pause, and says so
    client.post(f"{PREFIX}/pause", data={"csrf": csrf, "scope": "*", "reason": "again"})
    again = client.get(PREFIX).text
    assert "was already paused by Kofi" in flash_text(again)
    assert 'class="flash flash-warn"' in again

    answer = client.post(f"{PREFIX}/resume", data={"csrf": csrf, "scope": "*", "back": PREFIX})
    assert answer.status_code == 303
    after = client.get(PREFIX).text
    assert flash_text(after).startswith("The whole fleet resumed; 1 waiting order(s) re-enqueued")
    assert banner(after) == ""
    assert 'id="fleet-running"' in after
    assert pauses(store) == []
    assert web.published == [(waiting, 0.0)]
    assert [r["actor"] for r in audit(store, "resume")] == ["Kofi"]

    # resuming what is not paused changes nothing and says so
    client.post(f"{PREFIX}/resume", data={"csrf": csrf, "scope": "*"})
    assert "was not paused" in flash_text(client.get(PREFIX).text)
    assert web.published == [(waiting, 0.0)]


def test_a_network_pause_is_its_own_line(client: httpx.Client, store: Store) -> None:
    csrf = login(client, name="Esi")
    client.post(f"{PREFIX}/pause", data={"csrf": csrf, "scope": "mtn", "reason": "aggregator"})
    client.post(f"{PREFIX}/pause", data={"csrf": csrf, "scope": "*", "reason": "vendor"})
    page = client.get(PREFIX).text
    text = banner(page)
    assert text.startswith("Paused 2 pauses in force")
    assert "The whole fleet paused by Esi" in text and "Network mtn paused by Esi" in text
    assert 'id="resume-mtn"' in page and 'id="resume-fleet"' in page
    client.post(f"{PREFIX}/resume", data={"csrf": csrf, "scope": "mtn"})
    assert "network mtn resumed" in flash_text(client.get(PREFIX).text).lower()
    assert [p[0] for p in pauses(store)] == ["*"]


def test_the_banner_escapes_what_people_typed(client: httpx.Client) -> None:
    csrf = login(client, name="<b>Eve</b>")
    client.post(f"{PREFIX}/pause", data={"csrf": csrf, "reason": "<script>alert(1)</script>"})
    page = client.get(PREFIX).text
    assert "<script>alert(1)</script>" not in page and "<b>Eve</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_no_banner_and_no_form_without_a_session(client: httpx.Client, store: Store) -> None:
    csrf = login(client)
    client.post(f"{PREFIX}/pause", data={"csrf": csrf, "scope": "*", "reason": "secret plan"})
    with httpx.Client(base_url=str(client.base_url), timeout=10) as stranger:
        page = stranger.get(f"{PREFIX}/login").text
    assert "secret plan" not in page
    assert 'id="pause-form"' not in page and 'id="fleet-state"' not in page


def test_the_web_process_kill_switch_is_said_on_every_page(
    client: httpx.Client, web: WebServer
) -> None:
    login(client)
    assert 'id="kill-switch-banner"' not in client.get(PREFIX).text
    web.app.state.deps = dataclasses.replace(web.app.state.deps, fulfillment_enabled=False)
    for path in PAGES:
        page = client.get(path).text
        assert 'id="kill-switch-banner"' in page
        assert "<code>FULFILLMENT_ENABLED=false</code>" in page


def test_the_pause_form_offers_the_fleet_and_each_network(client: httpx.Client) -> None:
    login(client)
    page = client.get(PREFIX).text
    form = re.search(r'<form method="post" action="[^"]+/pause".*?</form>', page, re.S)
    assert form is not None
    options = re.findall(r'<option value="([^"]+)">([^<]+)</option>', form[0])
    assert options[0] == ("*", "The whole fleet")
    assert {v for v, _ in options[1:]} == {"at-bigtime", "at-ishare", "mtn", "telecel"}
    assert '<label for="pause-reason">Reason</label>' in form[0]
    assert re.search(r'id="pause-reason" name="reason" required', form[0])
    assert 'name="csrf"' in form[0]


def test_an_unknown_order_page_still_shows_the_banner(client: httpx.Client) -> None:
    csrf = login(client)
    client.post(f"{PREFIX}/pause", data={"csrf": csrf, "scope": "*", "reason": "hold"})
    answer = client.get(f"{PREFIX}/orders/{uuid.uuid4()}")
    assert answer.status_code == 404
    assert banner(answer.text).startswith("Paused The whole fleet is paused")
