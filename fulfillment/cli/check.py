"""`fulfillment check` and `fulfillment health`: the reports of fulfillment.runtime.preflight,
printed. `check` is for people (one line per finding, then a summary); `health` is one JSON
object for scripts and probes."""

from __future__ import annotations

import json
from typing import Any

from fulfillment.runtime.preflight import ROLE_PROCESSES, Level, Report, Role

#: plain ASCII marks, so the output survives any terminal and any log collector
MARKS = {
    Level.OK: "ok  ",
    Level.INFO: "info",
    Level.WARN: "WARN",
    Level.FAIL: "FAIL",
    Level.SKIP: "skip",
}
#: the checks whose failure makes `health` unhealthy
HEALTH_CHECKS = ("postgresql", "schema", "redis", "vendor", "aggregator")

ROLE_HELP = (
    "which processes this host runs: worker (worker, deadletter, reconciler: needs the vendor "
    "credentials; ADMIN_TOKEN and API_TOKEN are not checked), web (the admin process: needs "
    "ADMIN_TOKEN and API_TOKEN; missing vendor credentials are only a warning, its vendor "
    "webhook would answer 503), all (default: web, worker, deadletter and reconciler on one host)"
)
DESCRIPTION = """\
The pre-flight before starting or upgrading this host's processes. It checks, one line each:
the settings (the environment parses; what the role needs is set; the retry table fits
MAX_ATTEMPTS; DATABASE_URL and REDIS_URL are set, since unset they start embedded development
servers), PostgreSQL and the schema version (behind this code: a warning, run `fulfillment
migrate`; older than this code can run on, or drifted: a failure), the database role's
privileges on the fleet's tables (what the role's processes need: a failure when one is
missing), Redis and the broker namespace, the vendor credentials (one signed balance call),
and says whether the fleet is paused or the vendor circuit open (never a failure; pauses the
workers cannot read are one). It starts nothing and prints no secret. Exit 0 when nothing
failed (warnings allowed), 1 otherwise."""


def render(report: Report) -> list[str]:
    """The report as people read it: one line per finding, detail lines indented under it,
    then the summary and what to do."""
    width = max((len(c.name) for c in report.checks), default=0)
    lines = [f"fulfillment check, role {report.role} ({ROLE_PROCESSES[report.role]})"]
    for check in report.checks:
        lines.append(f"{MARKS[check.level]}  {check.name:<{width}}  {check.message}")
        lines += [f"{'':4}  {'':<{width}}    {d}" for d in check.details]
    lines.append(summary(report))
    return lines


def summary(report: Report) -> str:
    counts = [
        (report.count(Level.FAIL), "failed"),
        (report.count(Level.WARN), "warning(s)"),
        (report.count(Level.OK), "ok"),
        (report.count(Level.SKIP), "not checked"),
    ]
    told = ", ".join(f"{n} {word}" for n, word in counts if n)
    if report.ok:
        return f"summary: {told}: this host may start its processes"
    return (
        f"summary: {told}: fix what FAILED, then run `fulfillment check` again before "
        "starting this host's processes"
    )


def run_check(role: Role) -> int:
    from fulfillment.runtime.preflight import preflight

    report = preflight(role)
    print("\n".join(render(report)), flush=True)
    return report.exit_code


def health_json(report: Report) -> dict[str, Any]:
    """{"healthy", "checks": {name: "ok: ..." | "warn: ..." | "fail: ..."}, ...}: a name with
    several findings (pauses) gets them joined by "; "."""
    checks: dict[str, Any] = {}
    for check in report.checks:
        text = f"{check.level}: {check.message}"
        checks[check.name] = f"{checks[check.name]}; {text}" if check.name in checks else text
    healthy = not any(c.level is Level.FAIL for c in report.checks if c.name in HEALTH_CHECKS)
    return {"healthy": healthy, "checks": checks}


def run_health() -> int:
    from fulfillment.runtime import bootstrap
    from fulfillment.runtime.preflight import health

    body = health_json(health())
    body["checks"]["fulfillment_enabled"] = bootstrap.settings().fulfillment_enabled
    print(json.dumps(body), flush=True)
    return 0 if body["healthy"] else 1
