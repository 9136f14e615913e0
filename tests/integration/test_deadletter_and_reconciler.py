"""Dead-letter consumer and reconciler on real PostgreSQL (and a real webhook receiver)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from db.store import Store
from fulfillment.dev.simulator.server import Simulator
from fulfillment.services.deadletter import handle_dead_letter, notice_for_gave_up
from fulfillment.services.delivery import fulfil
from fulfillment.services.notifier import Notifier
from fulfillment.services.ports import DeadLetterNotice, FulfilDeps, Outcome
from fulfillment.services.reconciler import reconcile_once

from .conftest import Sent

pytestmark = pytest.mark.integration


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Receiver.fail_first > 0:
            _Receiver.fail_first -= 1
            self.send_response(503)
        else:
            _Receiver.received.append(json.loads(body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Receiver]]]:
    _Receiver.received = []
    _Receiver.fail_first = 0
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Receiver
    server.shutdown()
    server.server_close()


def dead_order(
    store: Store,
    new_order: Callable[..., str],
    make_deps: Callable[..., FulfilDeps],
    sim: Simulator,
) -> str:
    oid = new_order(phone="12345")  # invalid: dead-lettered without a vendor call
    assert fulfil(oid, make_deps()) is Outcome.DEAD_LETTERED
    return oid


def test_dead_letter_flags_notifies_once_and_posts_the_webhook(
    store: Store,
    new_order: Callable[..., str],
    make_deps: Callable[..., FulfilDeps],
    sim: Simulator,
    sent: Sent,
    webhook: tuple[str, type[_Receiver]],
) -> None:
    url, receiver = webhook
    receiver.fail_first = 1  # the webhook's own retry gets it through
    oid = dead_order(store, new_order, make_deps, sim)
    notifier = Notifier(store=store, webhook_url=url, attempts=3)
    notice = sent.dead_letters[0]
    assert handle_dead_letter(notice, store, notifier) is True
    assert handle_dead_letter(notice, store, notifier) is False  # a second dead letter
    row = store.order_row(oid)
    assert row is not None and row["dead_lettered_at"] is not None
    assert row["fulfillment_status"] == "failed"
    assert "invalid order" in row["dead_letter_reason"]
    notes = store.notifications()
    assert [
        (n["kind"], str(n["order_id"]), n["webhook_state"], n["webhook_attempts"]) for n in notes
    ] == [("dead_letter", oid, "delivered", 2)]
    assert len(receiver.received) == 1
    assert receiver.received[0]["order_id"] == oid
    assert "12345" not in json.dumps(receiver.received[0])


def test_dead_letter_of_a_succeeded_order_changes_nothing(
    store: Store, new_order: Callable[..., str], make_deps: Callable[..., FulfilDeps]
) -> None:
    oid = new_order()
    assert fulfil(oid, make_deps()) is Outcome.SUCCESS
    notifier = Notifier(store=store, webhook_url=None)
    assert not handle_dead_letter(
        DeadLetterNotice(kind="dead_letter", order_id=oid, reason="late"), store, notifier
    )
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "success"
    assert store.notifications() == []


def test_malformed_messages_are_notified_once(store: Store) -> None:
    notifier = Notifier(store=store, webhook_url=None)
    notice = DeadLetterNotice(
        kind="malformed_message", reason="not a UUID", excerpt="'x'", message_id="m-1"
    )
    assert handle_dead_letter(notice, store, notifier)
    assert not handle_dead_letter(notice, store, notifier)
    (note,) = store.notifications()
    assert (note["kind"], note["webhook_state"]) == ("malformed_message", "not_configured")


def test_dramatiq_giving_up_dead_letters_the_order(
    store: Store, new_order: Callable[..., str]
) -> None:
    oid = new_order()
    data = {
        "message_id": "m-2",
        "args": [oid],
        "kwargs": {},
        "options": {"traceback": "Traceback...\nKeyError: 'boom'"},
    }
    notice = notice_for_gave_up(data, {"retries": 3}, store)
    assert notice is not None and notice.order_id == oid
    assert notice.error_code == "WORKER_GAVE_UP" and "KeyError" in notice.reason
    db_down = {**data, "options": {"traceback": "...\nfulfillment.errors.StoreError: gone"}}
    assert notice_for_gave_up(db_down, {"retries": 20}, store) is None
    garbage = notice_for_gave_up({"args": [1, 2]}, {}, store)
    assert garbage is not None and garbage.kind == "malformed_message"


def _age(store: Store, oid: str, sql: str) -> None:
    with store.pool.connection() as conn:
        conn.execute(sql, (oid,))  # type: ignore[arg-type]


def test_reconciler_requeues_lost_messages(
    store: Store,
    new_order: Callable[..., str],
    make_deps: Callable[..., FulfilDeps],
    sim: Simulator,
    sent: Sent,
) -> None:
    notifier = Notifier(store=store, webhook_url=None)
    lost_pending = new_order()
    fresh_pending = new_order()
    _age(
        store,
        lost_pending,
        "UPDATE orders SET created_at = now() - interval '1 hour' WHERE id = %s",
    )
    retrying = new_order()
    deps = make_deps()
    sim.update_faults({"error_rate": 1.0})
    assert fulfil(retrying, deps) is Outcome.RETRY_SCHEDULED
    sim.update_faults({"error_rate": 0.0})
    _age(
        store,
        retrying,
        "UPDATE orders SET next_attempt_at = now() - interval '1 hour' WHERE id = %s",
    )
    sent.retries.clear()
    report = reconcile_once(deps, notifier, grace_s=60)
    assert report.by_reason == {"pending_unstarted": 1, "retry_overdue": 1}
    assert sorted(oid for oid, _ in sent.retries) == sorted([lost_pending, retrying])
    assert fresh_pending not in {oid for oid, _ in sent.retries}
    # Within the grace period a second pass does not enqueue them again.
    assert reconcile_once(deps, notifier, grace_s=60).total == 0


def test_reconciler_confirms_expired_claims_with_the_vendor(
    store: Store,
    new_order: Callable[..., str],
    make_deps: Callable[..., FulfilDeps],
    sim: Simulator,
) -> None:
    oid = new_order()
    token = "00000000-0000-0000-0000-000000000003"
    claim = store.claim(oid, token, ttl_s=0.05, early_s=0, networks=["at-ishare"])
    assert claim is not None and store.begin_purchase(oid, token, 1, ttl_s=0.05)
    # delivered; then the worker died
    make_deps().routes["at-ishare"].client.purchase(claim.order.request())
    import time

    time.sleep(0.1)
    report = reconcile_once(make_deps(), Notifier(store=store, webhook_url=None), grace_s=0)
    assert report.by_reason == {"claim_expired": 1}
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "success"
    assert sim.ledger.deliveries(oid) == 1


def test_reconciler_resends_unflagged_dead_letters(
    store: Store,
    new_order: Callable[..., str],
    make_deps: Callable[..., FulfilDeps],
    sim: Simulator,
    sent: Sent,
) -> None:
    oid = dead_order(store, new_order, make_deps, sim)
    sent.dead_letters.clear()
    _age(
        store,
        oid,
        "UPDATE orders SET dead_letter_requested_at = now() - interval '1 hour' WHERE id = %s",
    )
    reconcile_once(make_deps(), Notifier(store=store, webhook_url=None), grace_s=60)
    assert [n.order_id for n in sent.dead_letters] == [oid]


def test_kill_switch_stops_the_reconciler_requeueing(
    store: Store, new_order: Callable[..., str], make_deps: Callable[..., FulfilDeps], sent: Sent
) -> None:
    oid = new_order()
    _age(store, oid, "UPDATE orders SET created_at = now() - interval '1 hour' WHERE id = %s")
    reconcile_once(make_deps(enabled=False), Notifier(store=store, webhook_url=None), grace_s=1)
    assert sent.retries == []


def test_dead_letter_never_takes_an_order_from_a_live_worker(
    store: Store, new_order: Callable[..., str]
) -> None:
    oid = new_order()
    assert store.claim(
        oid, "00000000-0000-0000-0000-000000000004", ttl_s=60, early_s=0, networks=["at-ishare"]
    )
    notifier = Notifier(store=store, webhook_url=None)
    notice = DeadLetterNotice(kind="dead_letter", order_id=oid, reason="gave up")
    assert handle_dead_letter(notice, store, notifier) is False
    row = store.order_row(oid)
    assert row is not None and row["fulfillment_status"] == "processing"
    assert row["dead_lettered_at"] is None


def test_configuration_errors_do_not_dead_letter_orders(
    store: Store, new_order: Callable[..., str]
) -> None:
    oid = new_order()
    data = {
        "args": [oid],
        "kwargs": {},
        "options": {"traceback": "...\nfulfillment.errors.ConfigurationError: vendor not set"},
    }
    assert notice_for_gave_up(data, {"retries": 20}, store) is None
