"""`fulfillment sms failed|retry` and `fulfillment events failed|resend` (and the outboxes in
`orders show`), run in this process against the run's PostgreSQL: tables and --json, the
audit row with the `cli:<user>` actor, the exit statuses of the rest of the admin CLI.

The wiring's announce (it enqueues on Redis through Dramatiq's global broker) is replaced by
a recorder: which order's rows were announced is what this tier checks."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from db.outbox_store import OutboxStore
from db.store import Store
from fulfillment.cli.admin import main
from fulfillment.runtime import bootstrap
from fulfillment.runtime.settings import Settings

from .test_admin_outbox import (
    DIGITS,
    MISSING,
    audit,
    dead_lettered,
    delivered,
    event_row,
    fail_event,
    fail_sms,
    outbox,
    sms_row,
)

__all__ = ["dead_lettered", "delivered", "outbox"]  # fixtures, shared

pytestmark = pytest.mark.integration

EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND = 1, 2, 3
Run = Callable[..., tuple[int, str]]


@pytest.fixture
def announced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(bootstrap, "announce_outcome", calls.append)
    return calls


@pytest.fixture
def run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    redis_url: str,
    redis_namespace: str,
    announced: list[str],
) -> Run:
    """The admin CLI (`fulfillment <args>`) in this process; its exit status and stdout."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_NAMESPACE", redis_namespace)
    monkeypatch.setenv("USER", "ama")

    def call(*args: str) -> tuple[int, str]:
        bootstrap.reset()
        capsys.readouterr()
        try:
            code = main(list(args))
        finally:
            bootstrap.reset()
        out = capsys.readouterr().out
        print(out)  # shown when the test fails
        return code, out

    return call


def test_sms_failed_and_retry(
    run: Run,
    store: Store,
    outbox: OutboxStore,
    announced: list[str],
    dead_lettered: Callable[[], str],
) -> None:
    oid = dead_lettered()
    sms_id = fail_sms(store, oid)
    code, out = run("sms", "failed")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "1 failed SMS"
    assert lines[1].split()[:8] == [
        "id",
        "order",
        "kind",
        "gen",
        "provider",
        "tries",
        "last",
        "error",
    ]
    assert lines[2].split()[:6] == [str(sms_id), oid, "failed", "0", "Failed", "1"]
    assert "024*****67" in out and DIGITS not in out
    code, out = run("sms", "failed", "--json")
    data = json.loads(out)
    assert data["count"] == 1 and [s["id"] for s in data["sms"]] == [sms_id]
    assert "phone_number" not in data["sms"][0]

    code, out = run("sms", "retry", str(sms_id), "--reason", "credit topped up")
    assert code == 0
    assert out.splitlines() == [
        f"ok       {sms_id} (order {oid})  SMS_QUEUED  the SMS is queued to send again",
        "1 done, 0 refused",
    ]
    assert sms_row(store, sms_id)["status"] == "queued"
    assert announced == [oid]
    assert [(a[0], a[1], a[2], a[3]) for a in audit(store)] == [
        ("cli:ama", "sms_retry", oid, "credit topped up")
    ]
    code, out = run("sms", "retry", str(sms_id), "--reason", "again", "--json")
    assert code == EXIT_REFUSED
    data = json.loads(out)
    assert (data["ok"], data["refused"]) == (0, 1)
    assert data["results"][0]["code"] == "SMS_NOT_FAILED"
    code, out = run("sms", "failed")
    assert (code, out.strip()) == (0, "0 failed SMS")


def test_events_failed_and_resend(
    run: Run,
    store: Store,
    outbox: OutboxStore,
    announced: list[str],
    dead_lettered: Callable[[], str],
) -> None:
    oid = dead_lettered()
    row_id = fail_event(store, oid)
    code, out = run("events", "failed")
    assert code == 0
    assert out.splitlines()[0] == "1 failed event(s)"
    assert out.splitlines()[2].split()[:6] == [str(row_id), oid, "order.failed", "0", "8", "503"]
    code, out = run("events", "failed", "--json", "--limit", "5")
    assert [e["event_id"] for e in json.loads(out)["events"]] == [
        str(event_row(store, row_id)["event_id"])
    ]
    code, out = run("events", "resend", str(row_id), str(MISSING), "--reason", "platform back")
    assert code == EXIT_NOT_FOUND  # something named does not exist
    assert out.splitlines() == [
        f"ok       {row_id} (order {oid})  EVENT_QUEUED  the event is queued to send again",
        f"refused  {MISSING} (order -)  EVENT_NOT_FOUND  no event with id {MISSING}",
        "1 done, 1 refused",
    ]
    assert event_row(store, row_id)["status"] == "pending" and announced == [oid]
    assert [(a[0], a[1], a[3]) for a in audit(store)] == [
        ("cli:ama", "event_resend", "platform back")
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("sms", "retry", "abc", "--reason", "x"),
        ("sms", "retry", "0", "--reason", "x"),
        ("sms", "retry", "1"),  # no reason
        ("sms", "retry", "--reason", "x"),  # no id
        ("events", "resend", "1", "--reason", " "),
        ("events", "failed", "--limit", "0"),
        ("sms", "list"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(
    run: Run, store: Store, outbox: OutboxStore, announced: list[str], args: tuple[str, ...]
) -> None:
    code, _ = run(*args)
    assert code == EXIT_USAGE
    assert audit(store) == [] and announced == []


def test_orders_show_lists_the_orders_sms_and_events(
    run: Run, store: Store, outbox: OutboxStore, delivered: Callable[[], str]
) -> None:
    oid = delivered()
    code, out = run("orders", "show", oid)
    assert code == 0
    sms = out[out.index("\nsms (1)") :]
    assert sms.splitlines()[3].split()[3:5] == ["delivered", "queued"]
    events = out[out.index("\nevents (1)") :]
    assert events.splitlines()[3].split()[3:5] == ["order.fulfilled", "pending"]
    code, out = run("orders", "show", oid, "--json")
    detail = json.loads(out)
    assert [s["kind"] for s in detail["sms"]] == ["delivered"]
    assert [e["type"] for e in detail["events"]] == ["order.fulfilled"]
    assert DIGITS not in json.dumps(detail["sms"])
