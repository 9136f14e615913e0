"""The fleet as real processes, started the way the Procfile starts them, each killable.

Every process is the leader of its own process group (fulfillment/processes.py), so SIGKILL
of the group is what a crashed host or the OOM killer does. A role killed or crashed is
started again; each start writes to its own log file under the state directory, so a killed
process's last words stay readable.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from fulfillment import processes
from fulfillment.embedded import free_port
from fulfillment.processes import STOP_TIMEOUT_S

BIN = Path(sys.executable).parent

WORKER_READY = "Worker process is ready for action."
SIM_READY = "simulator listening on "
RECONCILER_READY = '"reconciler.started"'


class Proc(processes.Proc):
    """One role of the fleet (a worker group, the reconciler...): its current process."""

    def __init__(
        self, name: str, argv: list[str], *, env: dict[str, str], log_dir: Path, ready: str
    ) -> None:
        super().__init__(name, argv)
        self.env = env
        self.log_dir = log_dir
        self.ready = ready
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        # its own metrics port, so a group restarted at once never fights over the old one
        env = {**self.env, "METRICS_PORT": str(free_port())}
        self.launch(env, self.log_dir / f"{self.name}-{self.starts}.log")

    def wait_ready(self, timeout: float) -> str:
        """The log line that says the process is ready; RuntimeError if it dies or times out."""
        return self.wait_for_output(self.ready, timeout)


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
