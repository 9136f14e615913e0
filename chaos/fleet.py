"""The fleet as real processes, started the way the Procfile starts them, each killable.

Every process is the leader of its own process group (fulfillment/processes.py), so SIGKILL
of the group is what a crashed host or the OOM killer does. A role killed or crashed is
started again; each start writes to its own log file under the state directory, so a killed
process's last words stay readable. `holder` finds the worker group whose process holds a
given TCP connection (Linux /proc), so that a kill can aim at the worker of one request.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import threading
import time
from pathlib import Path

from fulfillment.dev import launcher as processes
from fulfillment.dev.embedded import free_port
from fulfillment.dev.launcher import STOP_TIMEOUT_S

BIN = Path(sys.executable).parent

WORKER_READY = "Worker process is ready for action."
SIM_READY = "simulator listening on "
RECONCILER_READY = '"reconciler.started"'
WEB_READY = "Application startup complete."  # uvicorn's, once the app serves


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
    """Simulator, worker groups, dead-letter consumer, reconciler and the admin web process
    (the vendor's callbacks go to it) of one chaos run."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, *, worker_groups: int, threads: int
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self._lock = threading.Lock()  # kills and restarts come from more than one thread
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
        self.web = Proc(
            "web",
            [fulfillment, "web", "--port", env["WEB_PORT"]],
            env=env,
            log_dir=log_dir,
            ready=WEB_READY,
        )

    @property
    def consumers(self) -> list[Proc]:
        """Every role but the simulated vendor: started again when dead. A scheduled kill
        picks among the workers, the dead-letter consumer and the reconciler."""
        return [*self.workers, self.deadletter, self.reconciler, self.web]

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
        with self._lock:
            for proc in self.consumers:
                if not proc.alive:
                    proc.start()
                    restarted.append(proc.name)
        return restarted

    def kill(self, proc: Proc) -> list[str]:
        """SIGKILL a role's process group and start whatever is dead again (restart_dead)."""
        with self._lock:
            proc.kill()
        return self.restart_dead()

    def holder(self, local_port: int, remote_port: int) -> Proc | None:
        """The worker group one of whose processes holds the TCP connection from
        127.0.0.1:local_port to remote_port, or None (closed, or not a worker's)."""
        inode = _socket_inode(local_port, remote_port)
        if inode is None:
            return None
        groups = {proc.popen.pid: proc for proc in self.workers if proc.popen and proc.alive}
        target = f"socket:[{inode}]"
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                proc = groups.get(os.getpgid(int(entry.name)))
                if proc is not None and any(
                    os.readlink(fd) == target for fd in (entry / "fd").iterdir()
                ):
                    return proc
        return None

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


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the TCP socket local_port -> remote_port, from /proc/net/tcp{,6}."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if (
                    int(local.rsplit(":", 1)[1], 16) == local_port
                    and int(remote.rsplit(":", 1)[1], 16) == remote_port
                ):
                    return inode
    return None
