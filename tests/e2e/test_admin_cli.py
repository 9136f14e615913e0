"""The admin CLI as a user runs it: `fulfillment orders|retry|dlq|export|stats` as processes.

Most tests need no worker: orders are committed through the store and put in a state with SQL,
then the CLI is run against the fleet's environment. One test dead-letters an order for real
and watches the requeued order succeed. Assertions are on output, exit status and rows.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from psycopg import sql

from db.store import Row
from fulfillment.services.admin import EXPORT_COLUMNS

from .conftest import PHONE, Fleet

pytestmark = [pytest.mark.e2e]

OTHER_PHONE = "+233201112233"
EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND = 1, 2, 3
NOW = datetime.now(UTC)
DEAD = {
    "fulfillment_status": "failed",
    "fulfillment_attempts": 3,
    "last_error_code": "INVALID_PHONE",
    "last_error_message": "phone_number rejected by the network",
    "dead_letter_reason": "vendor rejected the order: INVALID_PHONE",
    "dead_lettered_at": NOW,
}
STATES: dict[str, dict[str, Any]] = {
    "pending": {},
    "processing": {
        "fulfillment_status": "processing",
        "fulfillment_attempts": 1,
        "fulfillment_in_flight_attempt": 1,
        "claim_token": uuid.uuid4(),
        "claim_expires_at": NOW + timedelta(hours=1),
    },
    "success": {
        "fulfillment_status": "success",
        "fulfillment_attempts": 1,
        "fulfilled_at": NOW,
        "vendor_transaction_id": "TX-1",
    },
    "failed": {
        "fulfillment_status": "failed",
        "fulfillment_attempts": 1,
        "last_error_code": "VENDOR_5XX",
        "next_attempt_at": NOW + timedelta(hours=1),
    },
    "dead": DEAD,
    "dismissed": {**DEAD, "dead_letter_dismissed_at": NOW, "dead_letter_dismissed_by": "ops"},
}


@pytest.fixture
def admin(idle_fleet: Fleet) -> Fleet:
    """The fleet's environment and views with no process running: the CLI alone."""
    return idle_fleet


def add_order(
    fleet: Fleet, state: str = "pending", *, phone: str = PHONE, package: str | None = None
) -> str:
    """A committed order, put in one of STATES by SQL."""
    oid = str(uuid.uuid4())
    fleet.store.insert_order(
        oid, phone_number=phone, network="at-ishare", size_gb=2, package_name=package
    )
    changes = STATES[state]
    if changes:
        query = sql.SQL("UPDATE orders SET {} WHERE id = %(id)s").format(
            sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changes
            )
        )
        execute(fleet, query, {**changes, "id": oid})
    return oid


def execute(fleet: Fleet, query: Any, params: Any = None) -> list[Row]:
    with fleet.store.pool.connection() as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def run(fleet: Fleet, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = fleet.cli(*args)
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def run_json(fleet: Fleet, *args: str, code: int = 0) -> Any:
    return json.loads(run(fleet, *args, "--json", code=code).stdout)


def listed(fleet: Fleet, *args: str) -> list[str]:
    return [o["id"] for o in run_json(fleet, "orders", "list", *args)["orders"]]


def open_dead_letters(fleet: Fleet) -> list[str]:
    return [o["id"] for o in run_json(fleet, "dlq", "list")["orders"]]


def test_orders_list_filters_searches_and_pages(admin: Fleet) -> None:
    ids = {state: add_order(admin, state) for state in STATES}
    other = add_order(admin, "failed", phone=OTHER_PHONE)
    newest_first = [other, *reversed(ids.values())]

    assert listed(admin) == newest_first
    expected = {
        "pending": [ids["pending"]],
        "processing": [ids["processing"]],
        "success": [ids["success"]],
        "failed": [other, ids["failed"]],
        "dead_lettered": [ids["dismissed"], ids["dead"]],
        "open_dead_letters": [ids["dead"]],
    }
    for status, want in expected.items():
        assert listed(admin, "--status", status) == want, status

    for typed in ("024 123 4567", "+233241234567", "233241234567"):
        assert listed(admin, "--phone", typed) == list(reversed(ids.values())), typed
    assert listed(admin, "--phone", "020-111-2233", "--status", "failed") == [other]

    first = run_json(admin, "orders", "list", "--limit", "4")
    assert [o["id"] for o in first["orders"]] == newest_first[:4] and first["nextCursor"]
    second = run_json(admin, "orders", "list", "--limit", "4", "--cursor", first["nextCursor"])
    assert [o["id"] for o in second["orders"]] == newest_first[4:]
    assert second["nextCursor"] is None
    row = first["orders"][0]
    assert row["phone"] == "+23320*****33" and row["created_at"].endswith("Z")

    table = run(admin, "orders", "list", "--status", "dead_lettered", "--limit", "1").stdout
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["id", "created", "phone", "status"]
    assert ids["dismissed"] in lines[1] and "dead_lettered" in lines[1]
    assert "+23324*****67" in lines[1] and "vendor rejected the" in lines[1]
    assert lines[-1].startswith("next page: --cursor ")
    assert PHONE not in table

    bad_status = run(admin, "orders", "list", "--status", "lost", code=EXIT_USAGE)
    assert "invalid choice: 'lost'" in bad_status.stderr
    assert "no digits" in run(admin, "orders", "list", "--phone", "abc", code=EXIT_USAGE).stderr
    bad_cursor = run(admin, "orders", "list", "--cursor", "nonsense", code=EXIT_USAGE)
    assert "cursor" in bad_cursor.stderr


def test_orders_show_every_attempt_audit_and_notification(admin: Fleet) -> None:
    oid = add_order(admin, "dead")
    execute(
        admin,
        "INSERT INTO fulfillment_logs (order_id, network, phone_number, action, status,"
        " attempt_number, max_attempts, http_status, api_response, error_code, error_message,"
        " latency_ms) VALUES (%s, 'at-ishare', %s, 'purchase', 'failed', 1, 3, 400, %s,"
        " 'INVALID_PHONE', 'rejected', 12)",
        (oid, PHONE, json.dumps({"error": "INVALID_PHONE", "phone": PHONE})),
    )
    execute(
        admin,
        "INSERT INTO admin_notifications (kind, order_id, message, dedupe_key)"
        " VALUES ('dead_letter', %s, 'order dead-lettered', %s)",
        (oid, f"dead_letter:{oid}"),
    )

    text = run(admin, "orders", "show", oid).stdout
    assert f"order {oid}" in text and "dead_letter_reason: vendor rejected" in text
    assert "attempts (1)" in text and "1/3" in text and "INVALID_PHONE" in text
    assert "notifications (1)" in text and "dead_letter" in text and "audit (0)" in text
    assert PHONE not in text

    detail = run_json(admin, "orders", "show", oid.upper())  # any spelling of a UUID
    assert detail["order"]["id"] == oid and detail["order"]["status"] == "dead_lettered"
    [attempt] = detail["attempts"]
    assert (attempt["attempt_number"], attempt["http_status"]) == (1, 400)
    assert attempt["api_response"]["error"] == "INVALID_PHONE"
    assert attempt["created_at"].endswith("Z")
    assert [n["kind"] for n in detail["notifications"]] == ["dead_letter"]
    assert detail["audit"] == []
    assert PHONE.lstrip("+") not in json.dumps(detail)

    missing = str(uuid.uuid4())
    unknown = run(admin, "orders", "show", missing, code=EXIT_NOT_FOUND)
    assert f"no order with id {missing}" in unknown.stderr
    malformed = run(admin, "orders", "show", "not-a-uuid", code=EXIT_USAGE)
    assert "not a UUID" in malformed.stderr

    # `status` is `orders show` under a shorter name: the same output and exit statuses
    assert run(admin, "status", oid).stdout == text
    assert run_json(admin, "status", oid) == run_json(admin, "orders", "show", oid)
    assert run(admin, "status", missing, code=EXIT_NOT_FOUND).stderr == unknown.stderr
    assert run(admin, "status", "not-a-uuid", code=EXIT_USAGE).stderr == malformed.stderr


def test_retry_requeue_and_dismiss_follow_the_rules_and_leave_audit(admin: Fleet) -> None:
    dead, success = add_order(admin, "dead"), add_order(admin, "success")
    assert open_dead_letters(admin) == [dead]

    retried = run(admin, "retry", dead, "--reason", "customer topped up")
    assert f"ok       {dead}  RETRY_SCHEDULED" in retried.stdout
    assert "1 done, 0 refused" in retried.stdout
    assert open_dead_letters(admin) == []
    assert admin.unfinished_messages() == 1  # fulfill_order(dead) is on the queue
    detail = run_json(admin, "orders", "show", dead)
    assert detail["order"]["status"] == "failed"
    [audit] = detail["audit"]
    assert (audit["action"], audit["reason"]) == ("retry", "customer topped up")
    assert audit["actor"].startswith("cli:")

    refused = run(admin, "retry", success, "--reason", "again", code=EXIT_REFUSED)
    assert f"refused  {success}  ORDER_SUCCEEDED  cannot retry" in refused.stdout
    as_json = run_json(admin, "retry", success, "--reason", "again", code=EXIT_REFUSED)
    assert as_json["results"][0]["code"] == "ORDER_SUCCEEDED" and as_json["refused"] == 1
    missing = str(uuid.uuid4())
    assert (
        "ORDER_NOT_FOUND"
        in run(admin, "retry", missing, "--reason", "x", code=EXIT_NOT_FOUND).stdout
    )
    bad = run(admin, "retry", dead, "nope", "--reason", "x", code=EXIT_USAGE)
    assert "not a UUID" in bad.stderr
    assert "--reason" in run(admin, "retry", dead, code=EXIT_USAGE).stderr
    assert "say why" in run(admin, "retry", dead, "--reason", " ", code=EXIT_USAGE).stderr
    run(admin, "retry", "--all-failed", dead, "--reason", "x", code=EXIT_USAGE)

    # Bulk: every failed and dead-lettered order created since a time, one network.
    old_failed = add_order(admin, "failed")
    execute(
        admin,
        "UPDATE orders SET created_at = now() - interval '2 days' WHERE id = %s",
        (old_failed,),
    )
    failed, second_dead = add_order(admin, "failed"), add_order(admin, "dead")
    since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    bulk = run_json(
        admin,
        "retry",
        "--all-failed",
        "--network",
        "at-ishare",
        "--since",
        since,
        "--reason",
        "vendor outage over",
    )
    assert bulk["refused"] == 0
    assert {r["orderId"] for r in bulk["results"]} == {dead, failed, second_dead}
    vague = run(admin, "retry", "--all-failed", "--since", "soon", "--reason", "x", code=EXIT_USAGE)
    assert "not an ISO date" in vague.stderr

    # Dead letters: requeue all, dismiss one by hand.
    a, b, c = add_order(admin, "dead"), add_order(admin, "dead"), add_order(admin, "dead")
    requeued = run_json(admin, "dlq", "requeue", a, "--reason", "one")
    assert requeued["results"][0]["code"] == "RETRY_SCHEDULED"
    dismissed = run(admin, "dlq", "dismiss", b, "--reason", "refunded")
    assert f"ok       {b}  DISMISSED" in dismissed.stdout
    assert open_dead_letters(admin) == [c]
    again = run(admin, "dlq", "dismiss", b, "--reason", "refunded", code=EXIT_REFUSED)
    assert f"refused  {b}" in again.stdout and "cannot dismiss" in again.stdout
    assert b in listed(admin, "--status", "dead_lettered")
    run(admin, "dlq", "requeue", "--all", "--reason", "the rest")
    assert open_dead_letters(admin) == []
    actions = [(r["action"], r["reason"]) for r in run_json(admin, "orders", "show", b)["audit"]]
    assert actions == [("dismiss", "refunded")]


def test_export_streams_iso_utc_and_neutralises_formulas(admin: Fleet, tmp_path: Path) -> None:
    formula = add_order(admin, "success", package="=HYPERLINK(1)")
    add_order(admin, "failed", package="@SUM(A1)")
    add_order(admin, "dead", phone=OTHER_PHONE)
    out = tmp_path / "orders.csv"

    result = run(admin, "export", "--status", "all", "--out", str(out))
    assert "exported 3 order(s)" in result.stderr
    header, *rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert header == list(EXPORT_COLUMNS) and len(rows) == 3
    by_id = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    row = by_id[formula]
    assert row["package_name"] == "'=HYPERLINK(1)"
    assert row["phone"] == "'+23324*****67"  # masked, and a leading + is escaped too
    for when in (row["created_at"], row["fulfilled_at"]):
        assert when.endswith("Z") and datetime.fromisoformat(when).utcoffset() == timedelta(0)
    assert {r["package_name"] for r in by_id.values()} >= {"'@SUM(A1)"}
    assert PHONE not in out.read_text()
    assert not list(tmp_path.glob("*.part"))

    piped = run(
        admin, "export", "--status", "dead_lettered", "--phone", "020 111 2233", "--out", "-"
    )
    assert len(list(csv.reader(io.StringIO(piped.stdout)))) == 2
    assert "exported 1 order(s) to -" in piped.stderr
    run(admin, "export", "--out", str(out), code=EXIT_USAGE)  # --status is required


def test_stats(admin: Fleet) -> None:
    for state in ("pending", "success", "success", "failed", "dead", "dismissed"):
        add_order(admin, state)
    stats = run_json(admin, "stats")
    assert {k: stats[k] for k in ("total", "success", "failed", "pending", "processing")} == {
        "total": 6,
        "success": 2,
        "failed": 1,
        "pending": 1,
        "processing": 0,
    }
    assert (stats["dead_lettered"], stats["open_dead_letters"]) == (2, 1)
    assert stats["success_rate"] == 0.5
    table = run(admin, "stats").stdout
    assert "success rate" in table and "50.0%" in table


def _dead_message(fleet: Fleet, *args: Any) -> str:
    """A message as Dramatiq's Redis broker keeps one it gave up on."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="fulfillment", actor_name="fulfill_order", args=args, kwargs={}, options={}
    )
    key = f"{fleet.namespace}:fulfillment.XQ"
    fleet.redis.zadd(key, {message.message_id: time.time() * 1000})
    fleet.redis.hset(f"{key}.msgs", message.message_id, message.encode())
    return message.message_id


def _message_audit(fleet: Fleet, message_id: str) -> list[Row]:
    return execute(
        fleet,
        "SELECT * FROM admin_audit WHERE details->>'message_id' = %s ORDER BY id",
        (message_id,),
    )


def test_raw_dead_letter_messages_list_requeue_delete(admin: Fleet) -> None:
    oid = add_order(admin, "failed")
    junk, real = _dead_message(admin, "x"), _dead_message(admin, oid)

    listing = run_json(admin, "dlq", "list", "--messages")
    assert listing["count"] == 2
    by_id = {m["id"]: m for m in listing["messages"]}
    assert by_id[junk]["args"] == ["x"] and by_id[junk]["actor"] == "fulfill_order"
    assert '"args":["x"]' in by_id[junk]["body"] and by_id[junk]["failed_at"].endswith("Z")
    text = run(admin, "dlq", "list", "--messages").stdout
    assert text.startswith("2 message(s) in Dramatiq's dead-letter queue") and junk in text

    requeued = run(admin, "dlq", "requeue", "--messages", real, "--reason", "bug fixed")
    assert f"ok       {real}  REQUEUED" in requeued.stdout
    assert admin.unfinished_messages() == 1  # on the fulfillment queue again
    [audit] = _message_audit(admin, real)
    assert (audit["action"], audit["reason"], str(audit["order_id"])) == (
        "dlq_requeue",
        "bug fixed",
        oid,
    )
    assert [a["action"] for a in run_json(admin, "orders", "show", oid)["audit"]] == ["dlq_requeue"]

    deleted = run_json(admin, "dlq", "delete", "--messages", junk, "--reason", "garbage")
    assert deleted["results"] == [
        {"messageId": junk, "ok": True, "code": "DELETED", "message": "deleted from the DLQ"}
    ]
    [audit] = _message_audit(admin, junk)
    assert (audit["action"], audit["order_id"]) == ("dlq_delete", None)
    assert run_json(admin, "dlq", "list", "--messages") == {"count": 0, "messages": []}

    gone = run(admin, "dlq", "delete", "--messages", junk, "--reason", "again", code=EXIT_NOT_FOUND)
    assert "MESSAGE_NOT_FOUND" in gone.stdout
    run(admin, "dlq", "delete", junk, "--reason", "no flag", code=EXIT_USAGE)


def test_a_real_dead_letter_is_found_requeued_and_delivered(fleet: Fleet) -> None:
    oid = fleet.new_order()
    fleet.script(oid, ["invalid_phone"])
    fleet.publish(oid)
    fleet.wait_dead_lettered(oid)
    fleet.wait_until(lambda: fleet.notifications("dead_letter"), what="the dead-letter notice")

    text = run(fleet, "dlq", "list").stdout
    assert oid in text and "INVALID_PHONE" in text and PHONE not in text
    assert [
        o["id"] for o in run_json(fleet, "orders", "list", "--phone", "0241234567")["orders"]
    ] == [oid]

    run(fleet, "dlq", "requeue", oid, "--reason", "number confirmed with the customer")
    assert open_dead_letters(fleet) == []
    fleet.wait_for_status(oid, "success")
    detail = run_json(fleet, "orders", "show", oid)
    assert detail["order"]["status"] == "success"
    purchases = [a for a in detail["attempts"] if a["action"] == "purchase"]
    assert [(a["attempt_number"], a["status"]) for a in purchases] == [
        (1, "failed"),
        (2, "success"),
    ]
    assert [a["action"] for a in detail["audit"]] == ["retry"]


def test_networks_lists_and_disables_and_stats_take_a_network(admin: Fleet) -> None:
    listed = run_json(admin, "networks")
    assert [n["network"] for n in listed["networks"]] == ["at-ishare"]
    assert listed["this_host"] == ["at-ishare"] and listed["networks"][0]["served_here"]
    # migrate records this host's NETWORKS_ENABLED fleet-wide
    admin.env.update({"NETWORKS_ENABLED": "at-ishare,mtn", "AGGREGATOR_API_URL": "http://x/v1",
                      "AGGREGATOR_API_TOKEN": "t"})  # fmt: skip
    run(admin, "migrate")
    listed = run_json(admin, "networks")
    assert {n["network"]: n["vendor"] for n in listed["networks"]} == {
        "at-ishare": "at-ishare",
        "mtn": "aggregator",
    }
    table = run(admin, "networks").stdout
    assert "mtn (MTN)" in table and "the data aggregator" in table
    mtn = str(uuid.uuid4())
    admin.store.insert_order(mtn, phone_number=PHONE, network="mtn", size_gb=5, package_name=None)
    add_order(admin, "success")
    assert run_json(admin, "stats", "--network", "mtn")["pending"] == 1
    assert run_json(admin, "stats", "--network", "at-ishare")["total"] == 1
    run(admin, "stats", "--network", "glo", code=EXIT_USAGE)

    said = run(admin, "networks", "disable", "mtn").stdout
    assert "no longer served" in said and "NETWORKS_ENABLED on every host" in said
    assert [n["network"] for n in run_json(admin, "networks")["networks"]] == ["at-ishare"]
    run(admin, "networks", "disable", "mtn", code=EXIT_REFUSED)
    assert admin.order(mtn)["fulfillment_status"] == "pending"  # its orders stay as they are
