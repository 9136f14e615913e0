"""Where a worker process spends its time: py-spy samples of the fulfil hot path, by phase.

`record` samples one worker process with py-spy (`--gil`: only the thread holding the GIL,
i.e. Python CPU; `--idle`: every thread, running or waiting, i.e. wall time) into its raw
"collapsed stacks" format; `breakdown` files every sample under one phase of a message
(claim_order, the vendor call, logging...) by the frames it contains.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from bench.common import BIN

IDLE = "idle: waiting for a message"

# (label, substrings of one frame "function (file:line)"); checked frame by frame from the
# outermost, after the cross-cutting concerns below.
_PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("claim_order (SQL)", ("Store.claim ",)),
    ("begin_purchase (SQL)", ("Store.begin_purchase ",)),
    ("finish_call (SQL)", ("Store.finish_call ",)),
    ("other SQL", ("Store.",)),
    ("breaker.allow (Redis)", ("VendorBreaker.allow ",)),
    ("breaker.record (Redis)", ("VendorBreaker.record ",)),
    ("vendor call", ("AtIshareClient.",)),
    ("order validation (phonenumbers)", ("Order.request ",)),
    ("Dramatiq ack (Redis)", ("_RedisConsumer.ack ",)),
    ("wiring (bootstrap.fulfil_deps)", ("fulfil_deps ",)),
)
# Inside the vendor call, the innermost of these names the cost.
_VENDOR_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vendor call: HMAC signing", ("vendors/atishare_signing.py",)),
    ("vendor call: JSON", ("json/",)),
    ("vendor call: httpx", ("httpx/", "httpcore/", "h11/")),
)
# Anywhere in a message's stack, these win over the phase they happen in.
_CROSS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging (structlog)", ("structlog/", "fulfillment/telemetry/logs.py")),
    (
        "metrics (Prometheus)",
        (
            "prometheus_client/",
            "fulfillment/telemetry/metrics.py",
            "middleware/prometheus.py",
            "_InSeconds",
        ),
    ),
)


def available() -> bool:
    return (BIN / "py-spy").exists() or shutil.which("py-spy") is not None


def start(
    pid: int, output: Path, *, mode: str, seconds: float, rate: int = 400
) -> subprocess.Popen[bytes]:
    """Start sampling pid for `seconds` (mode "gil" or "idle"); wait on the returned process."""
    exe = BIN / "py-spy" if (BIN / "py-spy").exists() else Path(shutil.which("py-spy") or "py-spy")
    return subprocess.Popen(
        [
            str(exe),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(int(seconds), 1)),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            f"--{mode}",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _match(frames: Iterable[str], table: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    for frame in frames:
        for label, needles in table:
            if any(n in frame for n in needles):
                return label
    return None


def classify(frames: list[str]) -> str | None:
    """The phase of one sample; None for threads that are not worker threads."""
    if not any("WorkerThread.run " in f for f in frames):
        return None
    if not any("WorkerThread.process_message " in f for f in frames):
        return IDLE
    cross = _match(frames, _CROSS)
    if cross is not None:
        return cross
    phase = _match(frames, _PHASES)
    if phase == "vendor call":
        inner = _match(reversed(frames), _VENDOR_PARTS)
        return inner or "vendor call: client code"
    if phase is not None:
        return phase
    if any("fulfillment/" in f or "workers/" in f or "db/" in f for f in frames):
        return "fulfil state machine (the rest)"
    return "Dramatiq (decode, middleware, dispatch)"


def breakdown(path: Path) -> tuple[Counter[str], int]:
    """(samples per phase of the worker threads, samples of the other threads)."""
    phases: Counter[str] = Counter()
    others = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        label = classify(stack.split(";"))
        if label is None:
            others += int(count)
        else:
            phases[label] += int(count)
    return phases, others
