"""`fulfillment pause|resume|pauses` as a user runs them, against a running worker group: a
pause holds the running fleet at its next claim (no restart), resume hands the orders back
and each is delivered once; bad input exits 2."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Fleet

pytestmark = [pytest.mark.e2e]

EXIT_USAGE = 2


def run_json(fleet: Fleet, *args: str) -> Any:
    result = fleet.cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_running_fleet_is_paused_and_resumed_from_the_cli(fleet: Fleet) -> None:
    paused = fleet.cli("pause", "--reason", "vendor maintenance", "--actor", "ama")
    assert paused.returncode == 0, paused.stderr
    assert "the whole fleet is paused" in paused.stdout and "cli:ama" in paused.stdout
    listed = run_json(fleet, "pauses")
    assert listed["paused"] is True
    assert [(p["scope"], p["paused_by"], p["reason"]) for p in listed["pauses"]] == [
        ("*", "cli:ama", "vendor maintenance")
    ]
    table = fleet.cli("pauses")
    assert table.returncode == 0 and "the whole fleet" in table.stdout

    held = fleet.publish_new_orders(3)
    # the worker takes each message and leaves its order as it was
    fleet.wait_until(lambda: fleet.unfinished_messages() == 0, what="the messages to be taken")
    assert fleet.workers is not None
    fleet.workers.wait_for_output('"event": "worker.paused"')
    for oid in held:
        row = fleet.order(oid)
        assert (row["fulfillment_status"], row["fulfillment_attempts"]) == ("pending", 0)
        assert fleet.logs(oid) == [] and fleet.vendor_entry(oid)["purchase_requests"] == 0

    again = run_json(fleet, "pause", "--reason", "second thoughts")
    assert again["already_paused"] is True and again["paused_by"] == "cli:ama"

    resumed = run_json(fleet, "resume", "--actor", "kofi")
    assert (resumed["was_paused"], resumed["requeued"]) == (True, 3)
    for oid in held:
        fleet.wait_for_status(oid, "success")
        assert fleet.deliveries(oid) == 1
    assert run_json(fleet, "pauses") == {"paused": False, "pauses": []}
    text = fleet.cli("resume")
    assert text.returncode == 0 and "was not paused" in text.stdout

    with fleet.store.pool.connection() as conn:
        audit = conn.execute(
            "SELECT actor, action FROM admin_audit WHERE order_id IS NULL ORDER BY id"
        ).fetchall()
    assert [(r["actor"], r["action"]) for r in audit] == [
        ("cli:ama", "pause"),
        ("cli:" + (fleet.env.get("USER") or "unknown"), "pause"),
        ("cli:kofi", "resume"),
        ("cli:" + (fleet.env.get("USER") or "unknown"), "resume"),
    ]


def test_a_network_paused_on_its_own_does_not_hold_another(fleet: Fleet) -> None:
    """mtn paused: at-ishare orders go on (mtn orders are not this fleet's to fulfil yet;
    tests/integration/test_pause.py holds a paused network's own orders at the claim)."""
    other = fleet.cli("pause", "--network", "mtn", "--reason", "aggregator down")
    assert other.returncode == 0, other.stderr
    (delivered,) = fleet.publish_new_orders(1)
    fleet.wait_for_status(delivered, "success")
    assert run_json(fleet, "resume", "--network", "mtn")["was_paused"] is True


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("pause",), "--reason"),
        (("pause", "--reason", "   "), "say why"),
        (("pause", "--network", "vodafone", "--reason", "x"), "invalid choice"),
        (("resume", "--network", "vodafone"), "invalid choice"),
        (("pause", "--reason", "x", "--actor", " "), "--actor"),
        (("pauses", "--network", "mtn"), "unrecognized arguments"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(
    idle_fleet: Fleet, args: tuple[str, ...], says: str
) -> None:
    result = idle_fleet.cli(*args)
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    assert says in result.stderr
    with idle_fleet.store.pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM fleet_pauses").fetchone() == {"n": 0}
        assert conn.execute("SELECT count(*) AS n FROM admin_audit").fetchone() == {"n": 0}
