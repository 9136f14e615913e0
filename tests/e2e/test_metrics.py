"""Metrics after an end-to-end run agree with the database; promtool accepts them (issue 4)."""

from __future__ import annotations

import os
import shutil
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fulfillment.dev.embedded import free_port
from fulfillment.dev.launcher import WEB

from .conftest import Fleet

pytestmark = [pytest.mark.e2e]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: str) -> tuple[str, Samples]:
    return parse(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)


def parse(text: str) -> tuple[str, Samples]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == val for k, val in labels.items())
    )


def promtool_check(text: str) -> None:
    if shutil.which("promtool") is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI (Debian package prometheus)")
        return
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, text=True, capture_output=True, check=False
    )
    # promtool exits non-zero for lint problems; it prints them on stdout/stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_group_metrics_match_the_database(fleet: Fleet) -> None:
    ok = [fleet.new_order() for _ in range(5)]
    retried, rejected = fleet.new_order(), fleet.new_order()
    fleet.script(retried, ["error"])
    fleet.script(rejected, ["invalid_phone"])
    for oid in [*ok, retried, rejected]:
        fleet.publish(oid)
    for oid in [*ok, retried]:
        fleet.wait_for_status(oid, "success")
    fleet.wait_dead_lettered(rejected)
    assert fleet.workers is not None
    text, samples = scrape(fleet.workers.env["METRICS_PORT"])
    with fleet.store.pool.connection() as conn:
        db = conn.execute(
            "SELECT count(*) FILTER (WHERE action = 'purchase') AS purchases, "
            "count(*) FILTER (WHERE action = 'purchase' AND status = 'success') AS ok "
            "FROM fulfillment_logs"
        ).fetchone()
    assert db is not None
    assert total(samples, "fulfillment_outcomes_total", outcome="success") == 6
    # not held by the boot-time kill switch (the group's live minimum)
    assert [v for (n, _), v in samples.items() if n == "fulfillment_enabled"] == [1.0]
    assert total(samples, "fulfillment_outcomes_total", outcome="dead_lettered") == 1
    assert total(samples, "fulfillment_attempts_total") == db["purchases"]
    assert total(samples, "fulfillment_attempts_total", outcome="success") == db["ok"]
    assert total(samples, "fulfillment_attempts_total", error_code="VENDOR_5XX") == 1
    assert total(samples, "fulfillment_retries_scheduled_total", reason="transient") == 1
    assert total(samples, "fulfillment_dead_letters_total", reason="vendor_rejected") == 1
    assert total(samples, "fulfillment_time_to_success_seconds_count") == 6
    assert (
        total(samples, "fulfillment_vendor_request_duration_seconds_count", endpoint="purchase")
        == db["purchases"]
    )
    assert total(samples, "dramatiq_messages_total", actor_name="fulfill_order") >= 8
    for line in text.splitlines():  # low cardinality: no order id, no phone number
        series = line.split("}")[0] if "}" in line else line.split(" ")[0]  # not the value
        assert rejected not in line and "233" not in series
    promtool_check(text)


def test_admin_process_serves_live_fleet_metrics_and_readiness(fleet: Fleet) -> None:
    """`fulfillment web` as the Procfile runs it: /readyz checks PostgreSQL, Redis and the
    vendor; /metrics has the scrape-time collector, current with the database."""
    refused = fleet.cli("web", "--port", "1")
    assert refused.returncode == 2 and "ADMIN_TOKEN" in refused.stderr  # no tokens: no start
    ok = fleet.publish_new_orders(3)
    for oid in ok:
        fleet.wait_for_status(oid, "success")
    waiting = fleet.new_order()  # committed, never published: pending
    port = free_port()
    fleet.env.update({"ADMIN_TOKEN": "e2e-admin", "API_TOKEN": "e2e-api"})
    web = fleet.spawn_type(WEB, env={"PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    fleet.wait_until(lambda: _answers(f"{base}/healthz"), 20, what="the web process to answer")
    ready = httpx.get(f"{base}/readyz", timeout=10).json()
    assert ready == {
        "ready": True,
        "checks": {"postgresql": "ok", "redis": "ok", "vendor": "ok"},
    }, ready
    text = httpx.get(f"{base}/metrics", timeout=10).text
    _, samples = parse(text)
    assert total(samples, "fulfillment_orders", status="success") == 3
    assert total(samples, "fulfillment_orders", status="pending") == 1
    assert total(samples, "fulfillment_oldest_pending_seconds") >= 0
    assert ("fulfillment_outcome_unknown_orders", ()) in samples
    assert total(samples, "fulfillment_outcome_unknown_orders") == 0
    assert total(samples, "fulfillment_circuit_state", state="closed") == 1
    assert total(samples, "fulfillment_workers_alive") >= 1
    assert ("fulfillment_queue_depth", (("queue", "fulfillment"), ("state", "ready"))) in samples
    assert samples[("fulfillment_paused", (("scope", "*"),))] == 0  # there when not paused
    assert waiting
    promtool_check(text)
    web.terminate()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
