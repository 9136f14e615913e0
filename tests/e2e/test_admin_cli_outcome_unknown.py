"""`fulfillment orders recheck|mark-delivered|mark-not-delivered` and the outcome_unknown
filter and count, as a user runs the CLI (issue 9).

An order is put in outcome unknown with SQL, the way the worker leaves one: processing, with
a dead-letter reason, no claim, nothing due, its attempt in flight. One test runs the fleet:
the vendor delivered, the fleet never learned it, and a recheck finds the delivery without
buying again.
"""

from __future__ import annotations

import csv
import io

import pytest

from .conftest import PHONE, Fleet
from .test_admin_cli import (
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_USAGE,
    add_order,
    admin,
    execute,
    listed,
    open_dead_letters,
    run,
    run_json,
)

__all__ = ["admin"]  # the CLI-only fixture, shared

pytestmark = [pytest.mark.e2e]

REASON = "vendor outcome still unknown after 30 status checks; check by hand"


def make_outcome_unknown(fleet: Fleet, order_id: str) -> None:
    execute(
        fleet,
        "UPDATE orders SET fulfillment_status = 'processing', fulfillment_attempts = 1,"
        " fulfillment_in_flight_attempt = 1, fulfillment_status_checks = 30,"
        " claim_token = NULL, claim_expires_at = NULL, next_attempt_at = NULL,"
        " last_error_code = 'TIMEOUT', dead_letter_reason = %s,"
        " dead_letter_requested_at = now(), dead_lettered_at = now() WHERE id = %s",
        (REASON, order_id),
    )


def unknown_order(fleet: Fleet) -> str:
    oid = add_order(fleet)
    make_outcome_unknown(fleet, oid)
    return oid


def test_outcome_unknown_is_its_own_filter_and_count_and_each_decision_is_audited(
    admin: Fleet,
) -> None:
    first, second, third = unknown_order(admin), unknown_order(admin), unknown_order(admin)
    dead, delivered = add_order(admin, "dead"), add_order(admin, "success")

    assert listed(admin, "--status", "outcome_unknown") == [third, second, first]
    assert listed(admin, "--status", "processing") == []
    assert open_dead_letters(admin) == [dead]
    stats = run_json(admin, "stats")
    assert (stats["outcome_unknown"], stats["processing"], stats["dead_lettered"]) == (3, 0, 1)
    assert "outcome unknown" in run(admin, "stats").stdout
    exported = run(admin, "export", "--status", "outcome_unknown", "--out", "-").stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert {(r["id"], r["status"]) for r in rows} == {
        (oid, "outcome_unknown") for oid in (first, second, third)
    }
    table = run(admin, "orders", "list", "--status", "outcome_unknown").stdout
    assert "outcome_unknown" in table and PHONE not in table

    # Neither retried nor dismissed (refunded) while the vendor may have delivered it.
    refused = run(admin, "retry", first, "--reason", "x", code=EXIT_REFUSED)
    assert f"refused  {first}  ORDER_OUTCOME_UNKNOWN" in refused.stdout
    refused = run(admin, "dlq", "dismiss", first, "--reason", "refunded", code=EXIT_REFUSED)
    assert "ORDER_OUTCOME_UNKNOWN" in refused.stdout

    rechecked = run(admin, "orders", "recheck", first, "--reason", "vendor status API back")
    assert f"ok       {first}  RECHECK_SCHEDULED" in rechecked.stdout
    assert "1 done, 0 refused" in rechecked.stdout
    assert admin.unfinished_messages() == 1  # fulfill_order(first) is on the queue
    detail = run_json(admin, "orders", "show", first)
    assert detail["order"]["status"] == "processing"
    assert detail["order"]["dead_letter_reason"] is None
    [entry] = detail["audit"]
    assert (entry["action"], entry["reason"]) == ("recheck", "vendor status API back")
    assert entry["actor"].startswith("cli:")
    [row] = execute(admin, "SELECT * FROM orders WHERE id = %s", (first,))
    assert row["fulfillment_in_flight_attempt"] == 1 and row["fulfillment_status_checks"] == 0

    marked = run_json(
        admin,
        "orders",
        "mark-delivered",
        second,
        "--reason",
        "vendor dashboard: delivered",
        "--transaction-id",
        "TX-77",
    )
    assert [(r["orderId"], r["ok"], r["code"]) for r in marked["results"]] == [
        (second, True, "MARKED_DELIVERED")
    ]
    detail = run_json(admin, "orders", "show", second)
    assert detail["order"]["status"] == "success"
    assert detail["order"]["vendor_transaction_id"] == "TX-77"
    assert [a["action"] for a in detail["audit"]] == ["mark_delivered"]

    not_delivered = run(
        admin, "orders", "mark-not-delivered", third, "--reason", "vendor: no such reference"
    )
    assert f"ok       {third}  MARKED_NOT_DELIVERED" in not_delivered.stdout
    assert run_json(admin, "orders", "show", third)["order"]["status"] == "dead_lettered"
    assert sorted(open_dead_letters(admin)) == sorted([dead, third])
    assert listed(admin, "--status", "outcome_unknown") == []
    # From there, a dead letter like any other: retry works.
    again = run(admin, "retry", third, "--reason", "buy it again")
    assert f"ok       {third}  RETRY_SCHEDULED" in again.stdout

    # Refusals: not in outcome unknown (1), unknown order (3), bad input (2); nothing changed.
    for oid in (first, second, delivered, dead):
        for decision in ("recheck", "mark-delivered", "mark-not-delivered"):
            result = run(admin, "orders", decision, oid, "--reason", "x", code=EXIT_REFUSED)
            assert f"refused  {oid}  ORDER_NOT_OUTCOME_UNKNOWN" in result.stdout
            assert "not outcome unknown" in result.stdout
    as_json = run_json(admin, "orders", "recheck", delivered, "--reason", "x", code=EXIT_REFUSED)
    assert as_json["refused"] == 1 and as_json["results"][0]["code"] == "ORDER_NOT_OUTCOME_UNKNOWN"
    missing = "7f0e1c2a-0000-4000-8000-000000000001"
    gone = run(admin, "orders", "recheck", missing, "--reason", "x", code=EXIT_NOT_FOUND)
    assert "ORDER_NOT_FOUND" in gone.stdout
    target = unknown_order(admin)
    assert "--reason" in run(admin, "orders", "recheck", target, code=EXIT_USAGE).stderr
    blank = run(admin, "orders", "mark-delivered", target, "--reason", " ", code=EXIT_USAGE)
    assert "say why" in blank.stderr
    assert (
        "not a UUID"
        in run(admin, "orders", "recheck", "nope", "--reason", "x", code=EXIT_USAGE).stderr
    )
    run(
        admin,
        "orders",
        "recheck",
        target,
        "--reason",
        "x",
        "--transaction-id",
        "T",
        code=EXIT_USAGE,
    )
    run(
        admin,
        "orders",
        "mark-delivered",
        target,
        "--reason",
        "x",
        "--transaction-id",
        " ",
        code=EXIT_USAGE,
    )
    assert listed(admin, "--status", "outcome_unknown") == [target]
    actions = [a["action"] for a in run_json(admin, "orders", "show", delivered)["audit"]]
    assert actions == []


def test_a_recheck_finds_the_delivery_the_fleet_never_learned_of(fleet: Fleet) -> None:
    oid = fleet.new_order()
    fleet.publish(oid)
    fleet.wait_for_status(oid, "success")
    assert fleet.deliveries(oid) == 1
    # As if the vendor's answer had been lost and every lookup had failed since.
    make_outcome_unknown(fleet, oid)
    execute(fleet, "UPDATE orders SET fulfilled_at = NULL WHERE id = %s", (oid,))
    purchases_before = fleet.purchases(oid)

    run(fleet, "orders", "recheck", oid, "--reason", "vendor status API back")
    fleet.wait_for_status(oid, "success")
    detail = run_json(fleet, "orders", "show", oid)
    assert detail["order"]["status"] == "success" and detail["order"]["fulfilled_at"]
    assert fleet.purchases(oid) == purchases_before  # looked up, not bought again
    assert detail["attempts"][-1]["action"] == "status_check"
    assert fleet.deliveries(oid) == 1
    assert [a["action"] for a in detail["audit"]] == ["recheck"]
