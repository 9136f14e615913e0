"""The chaos run's table, and the evidence printed under an invariant that failed."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.callbacks import CallbackReplayer
from chaos.db import rows
from chaos.faults import Kind
from chaos.invariants import Result
from chaos.midcall import MidCallKill
from chaos.vendors import LABELS, NETWORKS, VENDORS, vendor_of
from db.store import Row, Store

WIDTH = 66
LOG_LINES_PER_ORDER = 14
EVIDENCE_ORDERS = 3
OFFENDER_IDS = 40
_DRAMATIQ_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\]")


@dataclass(frozen=True, slots=True)
class Timings:
    startup_s: float
    fault_window_s: float
    converge_s: float | None  # None: did not converge within the budget
    total_s: float


def _line(label: str, value: object) -> str:
    return f"  {label:<34} {value}"


def table(
    *,
    orders: int,
    seed: int,
    command: str,
    status: Mapping[str, int],
    networks: Sequence[Row],
    reasons: Sequence[tuple[str, int]],
    purchase_path: Mapping[str, int],
    faults: Mapping[str, int],
    fault_details: Mapping[str, int],
    scenarios: Mapping[str, int],
    cases: Sequence[tuple[str, str]],
    ledgers: Mapping[str, Mapping[str, Any]],
    results: Sequence[Result],
    timings: Timings,
) -> str:
    out = ["=" * WIDTH, f"chaos run: {orders} orders, seed {seed}", f"  $ {command}", "-" * WIDTH]
    out.append(
        _line(
            "orders",
            f"{status.get('total', 0)}: success {status.get('success', 0)}, "
            f"dead-lettered {status.get('dead_lettered', 0)}, "
            f"unfinished {status.get('unfinished', 0)}",
        )
    )
    if status.get("outcome_unknown"):
        out.append(_line("", f"outcome unknown (a human's): {status['outcome_unknown']}"))
    order = {network: i for i, network in enumerate(NETWORKS)}
    for row in sorted(networks, key=lambda r: order.get(r["network"], len(order))):
        vendor = LABELS.get(vendor_of(row["network"]), "?") if row["network"] in order else "?"
        out.append(
            _line(
                f"  {row['network']} ({vendor})",
                f"{row['total']}: success {row['success']}, dead-lettered {row['dead_lettered']}",
            )
        )
    for reason, n in reasons:
        out.append(_line("", f"dead letter: {n:>4}  {reason[:60]}"))
    for vendor in VENDORS:
        totals: Mapping[str, Any] = ledgers.get(vendor, {}).get("totals", {})
        blind = int(totals.get("blind_repurchases", 0))
        out.append(
            _line(
                f"{LABELS[vendor]} ledger",
                f"deliveries {totals.get('deliveries', 0)}, purchase requests "
                f"{totals.get('purchase_requests', 0)}, status requests "
                f"{totals.get('status_requests', 0)}, blind re-purchases {blind}",
            )
        )
        if blind:
            refs = list(totals.get("blind_repurchase_references", []))
            more = " ..." if len(refs) > 4 else ""
            out.append(_line("", f"bought blind: {' '.join(refs[:4])}{more}"))
    out.append(_line("purchase path", ", ".join(f"{k} {v}" for k, v in purchase_path.items())))
    out.append("faults injected")
    for kind in Kind:
        out.append(_line(f"  {kind.value}", faults.get(kind.value, 0)))
    for what, n in sorted(fault_details.items()):
        out.append(_line(f"    {what}", n))
    for vendor in VENDORS:
        vendor_faults: Mapping[str, int] = (
            ledgers.get(vendor, {}).get("totals", {}).get("faults", {})
        )
        out.append(_line(f"  {LABELS[vendor]} faults (its ledger)", sum(vendor_faults.values())))
        for what, n in sorted(vendor_faults.items()):
            out.append(_line(f"    {what}", n))
    out.append(_line("  vendor scenarios (scripted orders)", sum(scenarios.values())))
    for what, n in sorted(scenarios.items()):
        out.append(f"      {n:>3}  {what}")
    if cases:
        out.append("  aimed cases (issue 9)")
        out.extend(_line(f"    {label}", value) for label, value in cases)
    out.append("invariants")
    for result in results:
        verdict = "PASS" if result.ok else "FAIL"
        out.append(f"  {verdict}  {result.name}")
        out.append(f"        checked {result.checked}, violations {result.violations}: "
                   f"{result.detail}")  # fmt: skip
    out.append("time")
    converge = (
        f"{timings.converge_s:.1f} s after the last fault"
        if timings.converge_s is not None
        else "DID NOT CONVERGE within the budget"
    )
    out.append(_line("startup (servers, migrate, fleet)", f"{timings.startup_s:.1f} s"))
    out.append(_line("fault window (publishing inside)", f"{timings.fault_window_s:.1f} s"))
    out.append(_line("converged", converge))
    out.append(_line("total", f"{timings.total_s:.1f} s"))
    ok = timings.converge_s is not None and all(r.ok for r in results)
    out.append("-" * WIDTH)
    out.append(f"RESULT: {'PASS' if ok else 'FAIL'}")
    out.append("=" * WIDTH)
    return "\n".join(out)


def evidence(
    results: Sequence[Result],
    store: Store,
    ledgers: Mapping[str, Mapping[str, Any]],
    log_dir: Path,
    driven_by: Mapping[str, str],
) -> str:
    """For each failed invariant: its orders by what drove the vendor's answers to them (the
    dice, a scripted scenario, the trap), then a few of them in full: row, audit trail,
    each vendor's ledger entry and the fleet log lines that name the order."""
    out: list[str] = []
    logs = sorted(log_dir.glob("*.log"))
    for result in results:
        if result.ok:
            continue
        out.append(f"\n## evidence: {result.name}  ({result.detail})")
        kinds = Counter(driven_by.get(order_id, "dice") for order_id in result.offenders)
        out.append("offending orders by what drove the vendor's answers:")
        out.extend(f"  {n:>4}  {kind}" for kind, n in kinds.most_common())
        out.append("ids: " + " ".join(result.offenders[:OFFENDER_IDS]))
        for order_id in result.offenders[:EVIDENCE_ORDERS]:
            out.append(f"\n### order {order_id}  ({driven_by.get(order_id, 'dice')})")
            row = store.order_row(order_id)
            if row is not None:
                keep = (
                    "fulfillment_status", "fulfillment_attempts", "fulfillment_in_flight_attempt",
                    "fulfillment_status_checks", "fulfillment_deferrals", "claim_token",
                    "next_attempt_at", "last_error_code", "dead_letter_reason", "dead_lettered_at",
                    "vendor_transaction_id", "phone_number", "network",
                )  # fmt: skip
                out.append("row: " + json.dumps({k: row.get(k) for k in keep}, default=str))
            for vendor in VENDORS:
                entry = ledgers.get(vendor, {}).get("references", {}).get(order_id)
                out.append(f"{LABELS[vendor]} ledger: {json.dumps(entry)}")
            for log_row in rows(store, "order_trail", {"order_id": order_id}):
                out.append(
                    f"  log {log_row['created_at']:%H:%M:%S.%f} {log_row['action']:<12} "
                    f"{log_row['status']:<9} #{log_row['attempt_number']} "
                    f"http={log_row['http_status']} {log_row['error_code'] or ''} "
                    f"{log_row['error_message'] or ''} tx={log_row['vendor_transaction_id']} "
                    f"by {log_row['worker']}"
                )
            out.append("fleet log lines naming it:")
            out.extend(_log_lines(logs, order_id))
    return "\n".join(out)


def _log_lines(logs: Sequence[Path], needle: str) -> list[str]:
    found: list[tuple[str, str]] = []
    for path in logs:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if needle in line:
                found.append((_stamp(line), f"  [{path.stem}] {line[:400]}"))
    found.sort(key=lambda item: item[0])
    return [text for _, text in found[-LOG_LINES_PER_ORDER:]]


def _stamp(line: str) -> str:
    """A sortable time of a fleet log line: structlog's ISO timestamp, or Dramatiq's
    `[2026-11-26 18:50:01,123]` prefix (the fleet runs in UTC on the CI machine)."""
    try:
        return str(json.loads(line).get("timestamp", ""))
    except (ValueError, AttributeError):
        match = _DRAMATIQ_TIME.match(line)
        return match.group(1).replace(" ", "T").replace(",", ".") if match else ""


def cases(
    midcall: MidCallKill | None,
    callbacks: CallbackReplayer | None,
    quiet: Sequence[str],
    *,
    every_s: float,
    outage_s: float,
) -> list[tuple[str, str]]:
    """What each aimed case did (chaos.midcall, chaos.callbacks, chaos.quiet), for the table."""
    out: list[tuple[str, str]] = []
    if midcall is not None:
        ran = [LABELS[vendor] for vendor in midcall.brownout_began]
        brownout = f"ran at {', '.join(ran)}" if ran else "did not run"
        out.append(
            (
                "killed between POST and answer",
                f"{len(midcall.killed)} of {len(midcall.armed)} armed (brownout {brownout}); "
                f"connection gone first {len(midcall.missed)}, "
                f"not caught {len(midcall.not_caught)}",
            )
        )
        out += [
            ("", f"{LABELS[vendor]}: {name}, +{at:.1f} s into the brownout, circuit {state}")
            for _, name, at, state, vendor in midcall.killed
        ]
        out += [("", f"{oid}: no worker held it after {s:.2f} s") for oid, s in midcall.missed]
    if callbacks is not None:
        bursts = sum(callbacks.bursts.values())
        out.append(("replayed vendor callbacks", f"{callbacks.sent} sent, {bursts} bursts"))
        out += [("", f"{n:>3} x {what}") for what, n in sorted(callbacks.bursts.items())]
    if quiet:
        out.append(
            (
                "quiet outage",
                f"{len(quiet)} orders, each vendor's 1 per {every_s:g} s, "
                f"both vendors down {outage_s:g} s",
            )
        )
    return out
