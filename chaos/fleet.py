"""The fleet as real processes, started the way the Procfile starts them, each killable.

Every process is the leader of its own process group (a dramatiq group forks its worker
processes and a metrics server into it), so SIGKILL of the group is what a crashed host or
the OOM killer does. Each start writes to its own log file under the state directory, so a
killed process's last words stay readable.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from fulfillment.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

WORKER_READY = "Worker process is ready for action."
SIM_READY = "simulator listening on "
RECONCILER_READY = '"reconciler.started"'
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env() -> dict[str, str]:
    """This process's environment without anything that configures the fleet."""
    ours = {name.upper() for name in Settings.model_fields}
    return {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in ours and not k.upper().startswith(("SIM_", "DRAMATIQ_"))
    }


class Proc:
    """One role of the fleet (a worker group, the reconciler...): its current process."""

    def __init__(
        self, name: str, argv: list[str], *, env: dict[str, str], log_dir: Path, ready: str
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_dir = log_dir
        self.ready = ready
        self.starts = 0
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.log_dir / f"{self.name}-{self.starts}.log"
        self._log = self.log_path.open("wb")
        # its own metrics port, so a group restarted at once never fights over the old one
        env = {**self.env, "METRICS_PORT": str(free_port())}
        self.popen = subprocess.Popen(  # noqa: S603 -- our own entry points, no shell
            self.argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def text(self) -> str:
        if self.log_path is None:
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def is_ready(self) -> bool:
        return self.ready in self.text()

    def wait_ready(self, timeout: float) -> str:
        """The log line that says the process is ready; RuntimeError if it dies or times out."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.text().splitlines():
                if self.ready in line:
                    return line
            if not self.alive:
                raise RuntimeError(f"{self.name} exited before it was ready:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready within {timeout} s:\n{self.tail()}")
            time.sleep(0.1)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)

    def _group_exists(self) -> bool:
        if self.popen is None:
            return False
        try:
            os.killpg(self.popen.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def reap(self, deadline: float) -> None:
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        # The group id stays reserved while any member lives: what is left is ours.
        while self._group_exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._group_exists():
            self._signal_group(signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the whole group at once; returns when it is gone."""
        self._signal_group(signal.SIGKILL)
        self.reap(time.monotonic() + STOP_TIMEOUT_S)

    def terminate(self) -> None:
        """SIGTERM the leader only, as a process manager does (dramatiq then stops its
        worker processes gracefully)."""
        if self.alive and self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)

    def stop(self, deadline: float | None = None) -> None:
        self.terminate()
        self.reap(deadline if deadline is not None else time.monotonic() + STOP_TIMEOUT_S)


class Fleet:
    """Simulator, worker groups, dead-letter consumer and reconciler of one chaos run."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, *, worker_groups: int, threads: int
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        dramatiq = str(BIN / "dramatiq")
        fulfillment = str(BIN / "fulfillment")
        self.sim = Proc(
            "sim",
            [fulfillment, "sim", "--port", env["SIM_PORT"]],
            env=env,
            log_dir=log_dir,
            ready=SIM_READY,
        )
        self.workers = [
            Proc(
                f"worker{i + 1}",
                [
                    dramatiq,
                    "workers.actors",
                    "--queues",
                    "fulfillment",
                    "-p",
                    "1",
                    "-t",
                    str(threads),
                ],
                env=env,
                log_dir=log_dir,
                ready=WORKER_READY,
            )
            for i in range(worker_groups)
        ]
        self.deadletter = Proc(
            "deadletter",
            [
                dramatiq,
                "workers.actors",
                "--queues",
                "fulfillment.deadletter",
                "-p",
                "1",
                "-t",
                "2",
            ],
            env=env,
            log_dir=log_dir,
            ready=WORKER_READY,
        )
        self.reconciler = Proc(
            "reconciler",
            [fulfillment, "reconcile", "--loop"],
            env=env,
            log_dir=log_dir,
            ready=RECONCILER_READY,
        )

    @property
    def consumers(self) -> list[Proc]:
        """The roles a fault may kill: every role but the simulated vendor."""
        return [*self.workers, self.deadletter, self.reconciler]

    @property
    def procs(self) -> list[Proc]:
        return [self.sim, *self.consumers]

    def start(self, timeout: float) -> None:
        self.sim.start()
        self.sim.wait_ready(timeout)
        for proc in self.consumers:
            proc.start()
        for proc in self.consumers:
            proc.wait_ready(timeout)

    def pick_victim(self, rng: random.Random, *, worker: bool) -> Proc:
        """A worker group, or else the dead-letter consumer or the reconciler."""
        return rng.choice(self.workers if worker else [self.deadletter, self.reconciler])

    def restart_dead(self) -> list[str]:
        """Start again whatever role is not running (a kill's restart, or a crash)."""
        restarted = []
        for proc in self.consumers:
            if not proc.alive:
                proc.start()
                restarted.append(proc.name)
        return restarted

    def wait_ready(self, timeout: float) -> None:
        for proc in self.consumers:
            proc.wait_ready(timeout)

    def stop(self) -> None:
        """SIGTERM every role at once, then give them STOP_TIMEOUT_S together."""
        for proc in reversed(self.procs):
            proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in reversed(self.procs):
            proc.reap(deadline)
