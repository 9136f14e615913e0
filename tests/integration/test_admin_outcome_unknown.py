"""Outcome unknown on the admin side, and resolved dead letters (issue 9), over real HTTP
against real PostgreSQL and Redis: the view status, its filter and counts, the three audited
decisions (recheck, mark delivered, mark not delivered) in the admin API and the dashboard,
and a dismissed dead letter that the platform API can no longer retry (finding 10).

An order is put in outcome unknown the way the worker leaves one: processing, with a
dead-letter reason, no claim, nothing due, its attempt possibly in flight.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from db.store import Store
from fulfillment.dev.simulator.server import Simulator
from fulfillment.services.delivery import fulfil
from fulfillment.services.ports import FulfilDeps, Outcome
from tests.conftest import WebServer

from .test_web_api import sql

pytestmark = pytest.mark.integration

NewOrder = Callable[..., str]
PREFIX = "/dashboard/admin/fulfillment"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
UNKNOWN_REASON = "vendor outcome still unknown after 30 status checks; check by hand"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


# -- states, made with SQL -------------------------------------------------------------------


def outcome_unknown(store: Store, order_id: str, *, flagged: bool = True) -> None:
    """What the worker and the dead-letter consumer leave: processing, in review."""
    sql(
        store,
        "UPDATE orders SET fulfillment_status = 'processing', fulfillment_attempts = 1,"
        " fulfillment_in_flight_attempt = 1, fulfillment_status_checks = 30,"
        " fulfillment_deferrals = 2, claim_token = NULL, claim_expires_at = NULL,"
        " next_attempt_at = NULL, last_error_code = 'TIMEOUT',"
        " last_error_message = 'no answer from the vendor',"
        " dead_letter_reason = %s, dead_letter_requested_at = now() - interval '10 minutes',"
        " dead_lettered_at = CASE WHEN %s THEN now() - interval '9 minutes' END"
        " WHERE id = %s",
        UNKNOWN_REASON,
        flagged,
        order_id,
    )


def dead_letter(store: Store, order_id: str, *, dismissed: bool = False) -> None:
    sql(
        store,
        "UPDATE orders SET fulfillment_status = 'failed', fulfillment_attempts = 3,"
        " last_error_code = 'VENDOR_5XX', dead_letter_reason = '3 attempts used up',"
        " dead_letter_requested_at = now(), dead_lettered_at = now(),"
        " dead_letter_dismissed_at = CASE WHEN %s THEN now() END,"
        " dead_letter_dismissed_by = CASE WHEN %s THEN 'ops' END"
        " WHERE id = %s",
        dismissed,
        dismissed,
        order_id,
    )


def set_state(store: Store, order_id: str, assignments: str) -> None:
    sql(store, f"UPDATE orders SET {assignments} WHERE id = %s", order_id)


def row_of(store: Store, order_id: str) -> dict[str, Any]:
    row = store.order_row(order_id)
    assert row is not None
    return dict(row)


def audit(store: Store, order_id: str) -> list[dict[str, Any]]:
    return sql(store, "SELECT * FROM admin_audit WHERE order_id = %s ORDER BY id", order_id)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["message"]
    assert body["error"]["code"] == code, body


def listed(admin: httpx.Client, status: str) -> list[str]:
    response = admin.get("/api/admin/orders", params={"limit": 500, "status": status})
    assert response.status_code == 200, response.text
    return [o["id"] for o in response.json()["orders"]]


# -- finding 10: a dismissed dead letter is final for the platform API ------------------------


def test_platform_api_cannot_retry_a_dismissed_dead_letter_but_an_admin_can(
    api: httpx.Client, admin: httpx.Client, web: WebServer, store: Store, new_order: NewOrder
) -> None:
    """Resolved by hand (perhaps refunded): the platform's retry must not deliver it after all."""
    oid = new_order()
    dead_letter(store, oid, dismissed=True)
    before = row_of(store, oid)

    response = api.post("/api/orders/fulfillment", json={"action": "retry", "orderId": oid})
    assert_error(response, 409, "ORDER_RESOLVED")
    assert "resolved by hand" in response.json()["error"]["message"]
    assert web.published == [] and audit(store, oid) == []
    assert row_of(store, oid) == before

    # An open dead letter stays retryable by the platform, as before.
    open_one = new_order()
    dead_letter(store, open_one)
    body = {"action": "retry", "orderId": open_one}
    assert api.post("/api/orders/fulfillment", json=body).status_code == 200

    # Admins (ADMIN_TOKEN) still can: a person decided to reopen it.
    response = admin.post("/api/admin/orders/retry", json={"orderIds": [oid], "reason": "redo"})
    assert response.status_code == 200, response.text
    assert [(r["ok"], r["code"]) for r in response.json()["results"]] == [(True, "RETRY_SCHEDULED")]
    assert web.published == [(open_one, 0.0), (oid, 0.0)]
    row = row_of(store, oid)
    assert row["dead_letter_dismissed_at"] is None and row["fulfillment_generation"] == 1


# -- the view status, its filter and counts ---------------------------------------------------


def test_outcome_unknown_has_its_own_status_filter_and_count_and_is_never_a_dead_letter(
    api: httpx.Client, admin: httpx.Client, web: WebServer, store: Store, new_order: NewOrder
) -> None:
    flagged, unflagged = new_order(), new_order()
    outcome_unknown(store, flagged)
    outcome_unknown(store, unflagged, flagged=False)  # the consumer has not flagged it yet
    claimed, dead, dismissed, failed, delivered, _pending = (new_order() for _ in range(6))
    assert (
        store.claim(claimed, str(uuid.uuid4()), ttl_s=60, early_s=0, networks=["at-ishare"])
        is not None
    )
    dead_letter(store, dead)
    dead_letter(store, dismissed, dismissed=True)
    set_state(store, failed, "fulfillment_status = 'failed', next_attempt_at = now() + '1h'")
    set_state(
        store,
        delivered,
        "fulfillment_status = 'success', fulfilled_at = created_at + interval '4 seconds'",
    )

    assert set(listed(admin, "outcome_unknown")) == {flagged, unflagged}
    assert listed(admin, "processing") == [claimed]
    assert set(listed(admin, "dead_lettered")) == {dead, dismissed}
    assert listed(admin, "open_dead_letters") == [dead]
    assert listed(admin, "failed") == [failed]
    assert len(listed(admin, "all")) == 8
    for oid in (flagged, unflagged):
        detail = admin.get(f"/api/admin/orders/{oid}").json()
        assert detail["order"]["status"] == "outcome_unknown"
        state = api.get("/api/orders/fulfillment", params={"orderId": oid}).json()
        assert state["fulfillment"]["status"] == "outcome_unknown"
        assert state["fulfillment"]["deadLetterReason"] == UNKNOWN_REASON

    stats = admin.get("/api/admin/stats").json()["stats"]
    assert {k: v for k, v in stats.items() if k != "median_fulfil_s_24h"} == {
        "total": 8,
        "success": 1,
        "failed": 1,
        "processing": 1,
        "pending": 1,
        "outcome_unknown": 2,
        "dead_lettered": 2,
        "open_dead_letters": 1,
        "success_rate": round(1 / 3, 4),  # delivered / (delivered + dead letters): not them
    }
    # Never offered for a refund-like resolution, never retried as if it had failed.
    for response in (
        admin.post("/api/admin/orders/retry", json={"orderIds": [flagged], "reason": "x"}),
        admin.post("/api/admin/dead-letters/dismiss", json={"orderIds": [flagged], "reason": "x"}),
    ):
        assert response.status_code == 200, response.text
        assert [(r["ok"], r["code"]) for r in response.json()["results"]] == [
            (False, "ORDER_OUTCOME_UNKNOWN")
        ]
    response = api.post("/api/orders/fulfillment", json={"action": "retry", "orderId": flagged})
    assert_error(response, 409, "ORDER_OUTCOME_UNKNOWN")
    bulk = admin.post(
        "/api/admin/orders/retry", json={"allFiltered": {"status": "all"}, "reason": "bulk"}
    ).json()
    assert {r["orderId"] for r in bulk["results"]} == {failed, dead}  # not them, not dismissed
    assert row_of(store, flagged)["fulfillment_status"] == "processing"
    assert audit(store, flagged) == []


def test_the_filter_reads_the_partial_index(store: Store, new_order: NewOrder) -> None:
    from psycopg import sql as pgsql

    from db.admin_store import AdminStore, OrderFilter

    query, params = AdminStore(store)._compose(OrderFilter(view="outcome_unknown"), None, 50)
    with store.pool.connection() as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(pgsql.SQL("EXPLAIN ") + query, params).fetchall()
        conn.execute("RESET enable_seqscan")
    text = "\n".join(r["QUERY PLAN"] for r in plan)
    assert "orders_outcome_unknown_idx" in text, text


def test_the_gauge_counts_outcome_unknown_orders_and_passes_promtool(
    store: Store, new_order: NewOrder, redis_url: str, redis_namespace: str
) -> None:
    import shutil
    import subprocess

    import redis
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from fulfillment.runtime.metrics_server import FleetCollector

    class Closed:
        def state(self) -> dict[str, str]:
            return {"state": "closed"}

    for flagged in (True, False):
        outcome_unknown(store, new_order(), flagged=flagged)
    dead_letter(store, new_order())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        FleetCollector(
            store, redis.Redis.from_url(redis_url), redis_namespace, {"at-ishare": Closed()}
        )
    )
    text = generate_latest(registry).decode()
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }
    assert values["fulfillment_outcome_unknown_orders"] == 2
    if shutil.which("promtool"):
        checked = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            text=True,
            capture_output=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the three decisions over the admin API ---------------------------------------------------


def test_recheck_hands_the_order_back_and_the_worker_looks_it_up_before_buying(
    admin: httpx.Client,
    web: WebServer,
    store: Store,
    sim: Simulator,
    make_deps: Callable[..., FulfilDeps],
    new_order: NewOrder,
) -> None:
    oid = new_order()
    # The vendor delivered attempt 1, but its answer never came back and every lookup failed.
    token = str(uuid.uuid4())
    claim = store.claim(oid, token, ttl_s=30, early_s=0, networks=["at-ishare"], begin=True)
    assert claim is not None
    make_deps().routes["at-ishare"].client.purchase(claim.order.request())
    outcome_unknown(store, oid)
    before = row_of(store, oid)

    response = admin.post(f"/api/admin/orders/{oid}/recheck", json={"reason": "vendor back"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["success"], body["code"]) == (True, "RECHECK_SCHEDULED")
    assert body["order"]["status"] == "processing" and body["order"]["dead_letter_reason"] is None
    row = row_of(store, oid)
    assert row["fulfillment_status"] == "processing"
    assert row["fulfillment_in_flight_attempt"] == 1  # kept: look it up before any purchase
    assert (row["fulfillment_status_checks"], row["fulfillment_deferrals"]) == (0, 0)
    assert row["fulfillment_generation"] == before["fulfillment_generation"] + 1
    assert row["next_attempt_at"] is not None and row["last_enqueued_at"] is not None
    assert row["dead_letter_reason"] is None and row["dead_letter_requested_at"] is None
    assert row["dead_lettered_at"] is None and row["claim_token"] is None
    assert web.published == [(oid, 0.0)]
    assert [(a["actor"], a["action"], a["reason"]) for a in audit(store, oid)] == [
        ("admin-token", "recheck", "vendor back")
    ]
    assert oid in listed(admin, "processing") and listed(admin, "outcome_unknown") == []

    # The message's worker asks the vendor, learns of the delivery: no second purchase.
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    assert [log["action"] for log in store.order_logs(oid)] == ["status_check"]
    assert sim.ledger.deliveries(oid) == 1 and sim.ledger.blind_repurchases(oid) == 0

    again = admin.post(f"/api/admin/orders/{oid}/recheck", json={"reason": "again"})
    assert_error(again, 409, "ORDER_NOT_OUTCOME_UNKNOWN")
    assert "success, not outcome unknown" in again.json()["error"]["message"]
    assert web.published == [(oid, 0.0)] and len(audit(store, oid)) == 1


def test_mark_delivered_succeeds_the_order_and_keeps_the_admins_reason(
    admin: httpx.Client, web: WebServer, store: Store, new_order: NewOrder
) -> None:
    oid = new_order()
    outcome_unknown(store, oid)
    body = {"reason": "vendor dashboard shows it delivered", "transactionId": " TX-42 "}
    response = admin.post(f"/api/admin/orders/{oid}/mark-delivered", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["code"] == "MARKED_DELIVERED"
    assert response.json()["order"]["status"] == "success"
    row = row_of(store, oid)
    assert row["fulfillment_status"] == "success" and row["fulfilled_at"] is not None
    assert row["vendor_transaction_id"] == "TX-42"
    assert row["fulfillment_in_flight_attempt"] is None and row["claim_token"] is None
    for column in ("reason", "requested_at", "dismissed_at"):
        assert row[f"dead_letter_{column}"] is None
    assert row["dead_lettered_at"] is None and row["next_attempt_at"] is None
    entries = [(a["actor"], a["action"], a["reason"], a["details"]) for a in audit(store, oid)]
    assert entries == [
        ("admin-token", "mark_delivered", body["reason"], {"transaction_id": "TX-42"})
    ]
    assert web.published == []
    stats = admin.get("/api/admin/stats").json()["stats"]
    assert (stats["success"], stats["outcome_unknown"], stats["dead_lettered"]) == (1, 0, 0)
    again = admin.post(f"/api/admin/orders/{oid}/mark-delivered", json={"reason": "twice"})
    assert_error(again, 409, "ORDER_NOT_OUTCOME_UNKNOWN")

    # Without a transaction id, the one the order had stays.
    other = new_order()
    outcome_unknown(store, other)
    set_state(store, other, "vendor_transaction_id = 'TX-PENDING'")
    response = admin.post(f"/api/admin/orders/{other}/mark-delivered", json={"reason": "ok"})
    assert response.status_code == 200, response.text
    assert row_of(store, other)["vendor_transaction_id"] == "TX-PENDING"


@pytest.mark.parametrize("flagged", [True, False])
def test_mark_not_delivered_fails_it_as_a_dead_letter_and_a_retry_still_looks_it_up(
    admin: httpx.Client,
    web: WebServer,
    store: Store,
    sim: Simulator,
    make_deps: Callable[..., FulfilDeps],
    new_order: NewOrder,
    flagged: bool,
) -> None:
    oid = new_order()
    outcome_unknown(store, oid, flagged=flagged)
    before = row_of(store, oid)
    response = admin.post(
        f"/api/admin/orders/{oid}/mark-not-delivered", json={"reason": "vendor: no such ref"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["code"] == "MARKED_NOT_DELIVERED"
    assert response.json()["order"]["status"] == "dead_lettered"
    row = row_of(store, oid)
    assert row["fulfillment_status"] == "failed"
    assert row["fulfillment_in_flight_attempt"] == 1  # kept
    assert row["dead_letter_reason"] == "not delivered, confirmed by hand: vendor: no such ref"
    if flagged:
        assert row["dead_lettered_at"] == before["dead_lettered_at"]
    else:
        assert row["dead_lettered_at"] is not None
    assert listed(admin, "open_dead_letters") == [oid] and listed(admin, "outcome_unknown") == []
    assert [(a["action"], a["reason"]) for a in audit(store, oid)] == [
        ("mark_not_delivered", "vendor: no such ref")
    ]
    assert web.published == []
    assert_error(
        admin.post(f"/api/admin/orders/{oid}/mark-not-delivered", json={"reason": "x"}),
        409,
        "ORDER_NOT_OUTCOME_UNKNOWN",
    )

    # From here it is a dead letter like any other: the existing retry takes it.
    retried = admin.post("/api/admin/orders/retry", json={"orderIds": [oid], "reason": "rebuy"})
    assert [r["code"] for r in retried.json()["results"]] == ["RETRY_SCHEDULED"]
    assert web.published == [(oid, 0.0)]
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    # The attempt in flight made the worker ask first; the vendor never had it, so it bought.
    assert [(log["action"], log["status"]) for log in store.order_logs(oid)] == [
        ("status_check", "not_found"),
        ("purchase", "success"),
    ]
    assert sim.ledger.deliveries(oid) == 1 and sim.ledger.blind_repurchases(oid) == 0


DECISIONS = ("recheck", "mark-delivered", "mark-not-delivered")


@pytest.mark.parametrize("decision", DECISIONS)
def test_every_decision_is_refused_for_an_order_not_in_outcome_unknown(
    admin: httpx.Client, web: WebServer, store: Store, new_order: NewOrder, decision: str
) -> None:
    pending, claimed, delivered, failed, dead, dismissed = (new_order() for _ in range(6))
    assert (
        store.claim(claimed, str(uuid.uuid4()), ttl_s=60, early_s=0, networks=["at-ishare"])
        is not None
    )
    set_state(store, delivered, "fulfillment_status = 'success', fulfilled_at = now()")
    set_state(store, failed, "fulfillment_status = 'failed', next_attempt_at = now() + '1h'")
    dead_letter(store, dead)
    dead_letter(store, dismissed, dismissed=True)
    states = {oid: row_of(store, oid) for oid in (pending, claimed, delivered, failed, dead)}
    for oid, status in (
        (pending, "pending"),
        (claimed, "processing"),
        (delivered, "success"),
        (failed, "failed"),
        (dead, "dead_lettered"),
        (dismissed, "dead_lettered"),
    ):
        response = admin.post(f"/api/admin/orders/{oid}/{decision}", json={"reason": "x"})
        assert_error(response, 409, "ORDER_NOT_OUTCOME_UNKNOWN")
        assert f"the order is {status}, not outcome unknown" in response.json()["error"]["message"]
    for oid, before in states.items():
        assert row_of(store, oid) == before
        assert audit(store, oid) == []

    # An outcome unknown that a vendor callback (or the dead-letter consumer) holds right now.
    held = new_order()
    outcome_unknown(store, held)
    assert (
        store.claim(
            held, str(uuid.uuid4()), ttl_s=60, early_s=0, networks=["at-ishare"], in_review=True
        )
        is not None
    )
    busy = admin.post(f"/api/admin/orders/{held}/{decision}", json={"reason": "x"})
    assert_error(busy, 409, "ORDER_IN_FLIGHT")

    assert_error(
        admin.post(f"/api/admin/orders/{UNKNOWN}/{decision}", json={"reason": "x"}),
        404,
        "ORDER_NOT_FOUND",
    )
    target = new_order()
    outcome_unknown(store, target)
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "a\x00b"}, {"why": "x"}):
        assert_error(
            admin.post(f"/api/admin/orders/{target}/{decision}", json=body),
            422,
            "VALIDATION_ERROR",
        )
    assert_error(
        admin.post(f"/api/admin/orders/not-a-uuid/{decision}", json={"reason": "x"}),
        422,
        "VALIDATION_ERROR",
    )
    if decision == "mark-delivered":
        too_long = {"reason": "x", "transactionId": "T" * 129}
        assert_error(
            admin.post(f"/api/admin/orders/{target}/{decision}", json=too_long),
            422,
            "VALIDATION_ERROR",
        )
    assert web.published == [] and audit(store, target) == []
    assert row_of(store, target)["fulfillment_status"] == "processing"


def test_concurrent_decisions_on_one_order_let_exactly_one_through(
    web: WebServer, store: Store, new_order: NewOrder
) -> None:
    import threading

    oid = new_order()
    outcome_unknown(store, oid)
    answers: list[httpx.Response] = []
    start = threading.Barrier(9)

    def decide(decision: str) -> None:
        with httpx.Client(
            base_url=web.url, headers={"Authorization": f"Bearer {web.admin_token}"}, timeout=10
        ) as client:
            start.wait()
            answers.append(client.post(f"/api/admin/orders/{oid}/{decision}", json={"reason": "r"}))

    threads = [threading.Thread(target=decide, args=(DECISIONS[n % 3],)) for n in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200] + [409] * 8
    assert len(audit(store, oid)) == 1
    assert len(web.published) <= 1


# -- the dashboard --------------------------------------------------------------------------


@pytest.fixture
def browser(web: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.url, follow_redirects=False, timeout=10) as http:
        yield http


def login(client: httpx.Client, name: str = "Ama") -> str:
    answer = client.post(f"{PREFIX}/login", data={"name": name, "token": "test-admin-token"})
    assert answer.status_code == 303, answer.text
    match = CSRF.search(client.get(f"{PREFIX}/dlq").text)
    assert match is not None
    return match.group(1)


def test_dashboard_shows_the_card_the_tab_and_the_export(
    browser: httpx.Client, store: Store, new_order: NewOrder
) -> None:
    unknown, dead = new_order(), new_order()
    outcome_unknown(store, unknown)
    dead_letter(store, dead)
    login(browser)
    page = browser.get(PREFIX).text
    card = re.search(r'data-stat="outcome_unknown"[^>]*>.*?class="value">([^<]+)<', page, re.S)
    assert card is not None and card.group(1) == "1"
    assert 'data-status="outcome_unknown"' in page  # the tab
    listing = browser.get(PREFIX, params={"status": "outcome_unknown"}).text
    assert f'data-order-id="{unknown}"' in listing and f'data-order-id="{dead}"' not in listing
    assert 'class="badge status-outcome_unknown"' in listing
    dead_letters = browser.get(f"{PREFIX}/dead-letters").text
    assert f'data-order-id="{dead}"' in dead_letters
    assert f'data-order-id="{unknown}"' not in dead_letters
    export = browser.get(f"{PREFIX}/export.csv", params={"status": "outcome_unknown"}).text
    rows = list(csv.DictReader(io.StringIO(export)))
    assert [(r["id"], r["status"]) for r in rows] == [(unknown, "outcome_unknown")]


def test_dashboard_detail_offers_the_three_decisions_only_for_outcome_unknown(
    browser: httpx.Client, web: WebServer, store: Store, new_order: NewOrder
) -> None:
    unknown, dead = new_order(), new_order()
    outcome_unknown(store, unknown)
    dead_letter(store, dead)
    csrf = login(browser, name="Kofi")
    page = browser.get(f"{PREFIX}/orders/{unknown}").text
    for form in ("recheck-form", "mark-delivered-form", "mark-not-delivered-form"):
        assert f'id="{form}"' in page
    assert 'id="retry-form"' not in page and 'id="dismiss-form"' not in page
    # the three decisions' reasons (the pause form of every page has one too)
    assert page.count('name="reason" required') == 3 + page.count('id="pause-reason"')
    other = browser.get(f"{PREFIX}/orders/{dead}").text
    assert 'id="recheck-form"' not in other and 'id="retry-form"' in other

    detail = f"{PREFIX}/orders/{unknown}"
    path = f"{detail}/mark-delivered"
    form = {"reason": "vendor shows it", "transaction_id": "TX-9", "back": detail}
    assert browser.post(path, data=form).status_code == 403  # no CSRF token
    assert browser.post(path, data={**form, "csrf": csrf[:-2] + "xx"}).status_code == 403
    assert row_of(store, unknown)["fulfillment_status"] == "processing"
    no_reason = browser.post(path, data={**form, "csrf": csrf, "reason": " "})
    assert no_reason.status_code == 303
    assert "say why" in browser.get(detail).text
    assert row_of(store, unknown)["fulfillment_status"] == "processing"

    done = browser.post(path, data={**form, "csrf": csrf})
    assert done.status_code == 303 and done.headers["location"] == detail
    page = browser.get(detail).text
    assert "Mark delivered: the order is recorded as delivered." in page
    assert 'data-audit-action="mark_delivered"' in page and "Kofi" in page
    assert 'id="recheck-form"' not in page
    row = row_of(store, unknown)
    assert (row["fulfillment_status"], row["vendor_transaction_id"]) == ("success", "TX-9")
    assert [(a["actor"], a["action"]) for a in audit(store, unknown)] == [
        ("Kofi", "mark_delivered")
    ]
    refused = browser.post(f"{detail}/recheck", data={"csrf": csrf, "reason": "x", "back": detail})
    assert refused.status_code == 303
    assert "Recheck refused" in browser.get(detail).text
    assert web.published == []


def test_dashboard_recheck_and_mark_not_delivered_are_audited(
    browser: httpx.Client, web: WebServer, store: Store, new_order: NewOrder
) -> None:
    first, second = new_order(), new_order()
    outcome_unknown(store, first)
    outcome_unknown(store, second)
    csrf = login(browser, name="Esi")
    for oid, decision, label in (
        (first, "recheck", "Recheck: the vendor will be asked again"),
        (second, "mark-not-delivered", "Mark not delivered: the order is failed"),
    ):
        detail = f"{PREFIX}/orders/{oid}"
        answer = browser.post(
            f"{detail}/{decision}", data={"csrf": csrf, "reason": "checked", "back": detail}
        )
        assert answer.status_code == 303
        assert label in browser.get(detail).text
    assert web.published == [(first, 0.0)]
    assert row_of(store, first)["fulfillment_status"] == "processing"
    assert row_of(store, second)["fulfillment_status"] == "failed"
    assert [a["action"] for a in audit(store, first)] == ["recheck"]
    assert [(a["actor"], a["action"]) for a in audit(store, second)] == [
        ("Esi", "mark_not_delivered")
    ]
    missing = browser.post(
        f"{PREFIX}/orders/{uuid.uuid4()}/recheck", data={"csrf": csrf, "reason": "x"}
    )
    assert missing.status_code == 404
