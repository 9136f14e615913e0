"""The fleet end to end: worker processes started as the Procfile starts them, the simulator
as a process, the reconciler and the CLI as a user runs them. Assertions are on state only:
rows in PostgreSQL and the simulator's ledger."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import dramatiq
import pytest

from .conftest import PHONE, Fleet

pytestmark = [pytest.mark.e2e]


def test_one_order_is_delivered_once(fleet: Fleet) -> None:
    oid = fleet.new_order()
    fleet.publish(oid)
    row = fleet.wait_for_status(oid, "success")
    assert row["fulfilled_at"] is not None and row["vendor_transaction_id"]
    assert row["fulfillment_attempts"] == 1 and row["claim_token"] is None
    logs = fleet.logs(oid)
    assert [(r["action"], r["status"], r["attempt_number"], r["max_attempts"]) for r in logs] == [
        ("purchase", "success", 1, 3)
    ]
    assert logs[0]["vendor_transaction_id"] == row["vendor_transaction_id"]
    vendor = fleet.vendor_entry(oid)
    assert (vendor["deliveries"], vendor["purchase_requests"]) == (1, 1)


def test_transient_failure_is_retried_after_the_first_delay(fleet: Fleet) -> None:
    oid = fleet.new_order()
    fleet.script(oid, ["error"])
    fleet.publish(oid)
    fleet.wait_for_status(oid, "success")
    assert fleet.purchases(oid) == [(1, "failed", "VENDOR_5XX"), (2, "success", None)]
    first, second = (r for r in fleet.logs(oid) if r["action"] == "purchase")
    waited = (second["created_at"] - first["created_at"]).total_seconds()
    assert waited >= 0.95, f"attempt 2 came {waited:.2f} s after attempt 1; RETRY_DELAYS[0] is 1"
    assert first["retry_after"] is not None
    assert fleet.order(oid)["fulfillment_attempts"] == 2
    vendor = fleet.vendor_entry(oid)
    assert (vendor["deliveries"], vendor["purchase_requests"]) == (1, 2)


def test_three_transient_failures_dead_letter_the_order(fleet: Fleet) -> None:
    oid = fleet.new_order()
    fleet.script(oid, ["error", "error", "error"])
    fleet.publish(oid)
    row = fleet.wait_dead_lettered(oid, timeout=40)
    assert row["fulfillment_status"] == "failed"
    assert "attempts" in row["dead_letter_reason"], row["dead_letter_reason"]
    assert row["fulfillment_attempts"] == 3
    assert fleet.purchases(oid) == [
        (1, "failed", "VENDOR_5XX"),
        (2, "failed", "VENDOR_5XX"),
        (3, "failed", "VENDOR_5XX"),
    ]
    notes = [n for n in fleet.notifications("dead_letter") if str(n["order_id"]) == oid]
    assert len(notes) == 1, notes
    vendor = fleet.vendor_entry(oid)
    assert (vendor["deliveries"], vendor["purchase_requests"]) == (0, 3)


def test_permanent_error_dead_letters_without_a_retry(fleet: Fleet) -> None:
    oid = fleet.new_order()
    fleet.script(oid, ["invalid_phone"])
    fleet.publish(oid)
    row = fleet.wait_dead_lettered(oid)
    assert row["fulfillment_status"] == "failed" and row["last_error_code"] == "INVALID_PHONE"
    time.sleep(1.5)  # past RETRY_DELAYS[0]: a retry, if one had been scheduled, would show now
    assert fleet.purchases(oid) == [(1, "failed", "INVALID_PHONE")]
    vendor = fleet.vendor_entry(oid)
    assert (vendor["deliveries"], vendor["purchase_requests"]) == (0, 1)
    assert len([n for n in fleet.notifications("dead_letter") if str(n["order_id"]) == oid]) == 1


def test_vendor_outage_spends_no_attempt(fleet: Fleet) -> None:
    """DESIGN principle 4: the POST and the lookup right after it both fail with no success
    anywhere in the window, so the circuit opens (BREAKER_QUIET_FAILURES) and the order waits
    the outage out without spending its attempt; the lookup before buying again finds that
    the vendor never got it."""
    fleet.vendor_down(8)  # every /v1 route answers 503 for 8 s
    oid = fleet.new_order()
    fleet.publish(oid)

    def settled() -> bool:
        row = fleet.order(oid)
        return row["fulfillment_status"] == "success" or row["dead_lettered_at"] is not None

    fleet.wait_until(settled, 40, what=f"order {oid} to succeed or be dead-lettered")
    row = fleet.order(oid)
    assert row["dead_lettered_at"] is None, row["dead_letter_reason"]
    assert (row["fulfillment_status"], row["fulfillment_attempts"]) == ("success", 1)
    assert fleet.purchases(oid) == [(1, "failed", "VENDOR_5XX"), (1, "success", None)]
    assert fleet.deliveries(oid) == 1


def test_lost_response_is_verified_not_bought_again(fleet: Fleet) -> None:
    oid = fleet.new_order()
    fleet.script(oid, ["drop_after_delivery"])
    fleet.publish(oid)
    fleet.wait_for_status(oid, "success")
    assert fleet.purchases(oid) == [(1, "success", "CONNECTION_ERROR")]
    vendor = fleet.vendor_entry(oid)
    assert (vendor["deliveries"], vendor["purchase_requests"]) == (1, 1)


def test_duplicate_messages_deliver_once(fleet: Fleet) -> None:
    fleet.faults(latency_ms=300)  # keep the first purchase open while the copies arrive
    oid = fleet.new_order()
    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda _: fleet.publish(oid), range(5)))
    fleet.wait_for_status(oid, "success")
    fleet.wait_until(
        lambda: fleet.unfinished_messages() == 0,
        30,
        what="every copy of the message to be consumed",
    )
    assert fleet.purchases(oid) == [(1, "success", None)]
    assert len(fleet.logs(oid)) == 1
    vendor = fleet.vendor_entry(oid)
    assert (vendor["deliveries"], vendor["purchase_requests"]) == (1, 1)


def test_worker_killed_mid_call_is_recovered_without_buying_twice(fleet: Fleet) -> None:
    oid = fleet.new_order()
    fleet.faults(latency_ms=3000)  # the vendor holds the purchase; the worker waits on it
    fleet.publish(oid)
    # begin_purchase marks the attempt just before the POST; the client then waits up to
    # VENDOR_READ_TIMEOUT_S for the purchase and as long for a status check.
    fleet.wait_until(
        lambda: fleet.order(oid)["fulfillment_in_flight_attempt"] == 1,
        30,
        what="the purchase call to be under way",
        poll=0.05,
    )
    assert fleet.workers is not None
    fleet.workers.kill()
    fleet.workers = None
    row = fleet.order(oid)
    assert (row["fulfillment_status"], row["fulfillment_in_flight_attempt"]) == ("processing", 1)
    assert fleet.logs(oid) == [], "the worker finished its call before it was killed"
    fleet.faults(latency_ms=0)
    # Usually the vendor got the request and delivers it after its latency, with nobody
    # listening. On a loaded machine the kill can land between begin_purchase and the POST:
    # then the vendor never heard of it. Both must end with exactly one delivery.
    try:
        fleet.wait_until(lambda: fleet.deliveries(oid) == 1, 8, what="the vendor to deliver")
        reached_vendor = True
    except pytest.fail.Exception:
        reached_vendor = False

    fleet.start_workers()
    fleet.start_reconciler_loop()
    row = fleet.wait_for_status(oid, "success", timeout=40)
    assert row["fulfillment_in_flight_attempt"] is None
    vendor = fleet.vendor_entry(oid)
    if reached_vendor:  # confirmed by a status check, never bought again
        assert row["fulfillment_attempts"] == 1
        assert fleet.purchases(oid) == [(1, "success", None)]
        assert (vendor["deliveries"], vendor["purchase_requests"]) == (1, 1)
    else:  # the vendor said it never got it: the lost attempt is logged, then bought once
        assert fleet.purchases(oid) == [(1, "failed", "WORKER_LOST"), (2, "success", None)]
        assert (vendor["deliveries"], vendor["purchase_requests"]) == (1, 1)


def test_graceful_stop_lets_the_call_in_flight_finish_and_record_it(fleet: Fleet) -> None:
    oid = fleet.new_order()
    fleet.faults(latency_ms=3000)  # purchase and status check each time out after 1 s
    fleet.publish(oid)
    fleet.wait_until(
        lambda: fleet.order(oid)["fulfillment_in_flight_attempt"] == 1,
        30,
        what="the purchase call to be under way",
        poll=0.05,
    )
    assert fleet.workers is not None
    fleet.workers.stop()  # SIGTERM, as a deploy or a scale-down does
    assert fleet.workers.popen.returncode == 0
    fleet.workers = None
    row = fleet.order(oid)
    # The worker finished its message before it exited: attempt 1 is on record, the claim
    # released; its outcome unknown (the status check timed out too), it stays in flight
    # and a status check is scheduled: nobody may buy it again before the vendor answers.
    assert fleet.purchases(oid) == [(1, "failed", "TIMEOUT")]
    assert (
        row["fulfillment_status"],
        row["fulfillment_in_flight_attempt"],
        row["claim_token"],
    ) == ("processing", 1, None)

    fleet.faults(latency_ms=0)
    fleet.start_workers()
    # The POST and its lookup both timed out with no success anywhere: the circuit opened
    # (BREAKER_QUIET_FAILURES) for BREAKER_OPEN_S (30 s), and the order waits it out.
    fleet.wait_for_status(oid, "success", timeout=60)
    assert fleet.deliveries(oid) == 1
    assert fleet.order(oid)["fulfillment_attempts"] == 1


def test_orders_lost_with_redis_are_recovered_by_the_reconciler(fleet: Fleet) -> None:
    fleet.stop_consumers()
    orders = fleet.publish_new_orders(30)
    assert fleet.unfinished_messages() == 30
    assert fleet.flush_namespace() > 0
    assert fleet.redis_keys() == []

    fleet.start_consumers()
    fleet.start_reconciler_loop()

    def done() -> bool:
        return fleet.store.status_counts() == {"success": len(orders)}

    fleet.wait_until(done, 60, what=f"all {len(orders)} orders to succeed")
    refs = fleet.ledger()["references"]
    assert {
        oid: (refs[oid]["deliveries"], refs[oid]["purchase_requests"]) for oid in orders
    } == dict.fromkeys(orders, (1, 1))
    assert all(fleet.purchases(oid) == [(1, "success", None)] for oid in orders)


def test_malformed_messages_are_dead_lettered_and_the_worker_keeps_going(fleet: Fleet) -> None:
    unknown = str(uuid.uuid4())
    for args in [("not-a-uuid",), (), (123,), (unknown,)]:
        fleet.broker.enqueue(
            dramatiq.Message(
                queue_name="fulfillment",
                actor_name="fulfill_order",
                args=args,
                kwargs={},
                options={},
            )
        )

    def kinds() -> list[str]:
        return sorted(n["kind"] for n in fleet.notifications())

    expected = ["malformed_message"] * 3 + ["unknown_order"]
    fleet.wait_until(lambda: len(kinds()) >= len(expected), 30, what=f"notifications {expected}")
    assert kinds() == expected
    unknown_note = fleet.notifications("unknown_order")[0]
    assert unknown_note["order_id"] is None and unknown in unknown_note["message"]

    oid = fleet.new_order()
    fleet.publish(oid)
    fleet.wait_for_status(oid, "success")
    assert fleet.deliveries(oid) == 1

    time.sleep(3)  # a message failing in a loop would keep adding notifications
    assert kinds() == expected
    assert fleet.unfinished_messages() == 0
    assert fleet.unfinished_messages("fulfillment.deadletter") == 0
    assert fleet.workers is not None and fleet.workers.alive


def test_a_message_with_fields_a_later_release_adds_is_delivered(fleet: Fleet) -> None:
    """Rolling deploys: a producer of the next release may add keyword fields and options;
    this release's worker ignores them and delivers the order once."""
    oid = fleet.new_order()
    fleet.broker.enqueue(
        dramatiq.Message(
            queue_name="fulfillment",
            actor_name="fulfill_order",
            args=(oid,),
            kwargs={"network": "at-ishare", "requested_by": "checkout-v2"},
            options={"trace_id": "abc123"},
        )
    )
    fleet.wait_for_status(oid, "success")
    assert fleet.deliveries(oid) == 1
    assert fleet.notifications("malformed_message") == []


def test_cli_as_a_user_runs_it(fleet: Fleet) -> None:
    oid = fleet.new_order()
    fleet.publish(oid)
    fleet.wait_for_status(oid, "success")

    shown = fleet.cli("status", oid)  # `orders show` under a shorter name
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == fleet.cli("orders", "show", oid).stdout
    assert f"order {oid}" in shown.stdout
    assert " status: success" in shown.stdout
    assert "attempts (1)" in shown.stdout and "purchase" in shown.stdout
    assert PHONE not in shown.stdout  # masked

    as_json = fleet.cli("status", "--json", oid)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["order"]["status"] == "success"
    assert [(a["action"], a["attempt_number"], a["status"]) for a in report["attempts"]] == [
        ("purchase", 1, "success")
    ]

    missing = str(uuid.uuid4())
    unknown = fleet.cli("status", missing)
    assert unknown.returncode == 3  # as `orders show`: not found
    assert f"no order with id {missing}" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    malformed = fleet.cli("status", "not-a-uuid")
    assert malformed.returncode == 2  # as `orders show`: bad input
    assert "not a UUID" in malformed.stderr and "Traceback" not in malformed.stderr

    # One reconciler pass as an operator runs it: everything is settled, nothing to do.
    report = fleet.reconcile_once()
    assert (report["found"], report["by_reason"]) == (0, {})

    for _ in range(2):
        migrated = fleet.cli("migrate")
        assert migrated.returncode == 0, migrated.stderr
        assert "nothing to do" in migrated.stdout  # the run's database is at the version


def test_no_log_line_carries_a_full_phone_number_or_a_secret(fleet: Fleet) -> None:
    """Success, a lost answer and a vendor rejection, then every process's log is read."""
    ok, lost, rejected = fleet.new_order(), fleet.new_order(), fleet.new_order()
    fleet.script(lost, ["drop_after_delivery"])
    fleet.script(rejected, ["invalid_phone"])
    for oid in (ok, lost, rejected):
        fleet.publish(oid)
    fleet.wait_for_status(ok, "success")
    fleet.wait_for_status(lost, "success")
    fleet.wait_dead_lettered(rejected)
    fleet.stop_consumers()
    text = "".join(p.read_text(errors="replace") for p in fleet.log_dir.glob("*.log"))
    assert "order_id" in text  # the logs were written
    digits = PHONE.lstrip("+")
    for needle in (PHONE, digits, "0" + digits[3:], fleet.env["AT_ISHARE_API_SECRET"]):
        assert needle not in text
