"""The fleet as real processes, started from the Procfile's process types, each killable.

Every process is the leader of its own process group (fulfillment/dev/launcher.py), so SIGKILL
of the group is what a crashed host or the OOM killer does. A role killed or crashed is
started again; each start writes to its own log file under the state directory, so a killed
process's last words stay readable. `holder` finds the worker group whose process holds a
given TCP connection (Linux /proc), so that a kill can aim at the worker of one request.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from pathlib import Path

from fulfillment.dev.launcher import (
    DEADLETTER,
    NOTIFY,
    RECONCILER,
    SIM,
    WEB,
    WORKER,
    Proc,
    stop_all,
)


class Fleet:
    """Simulator, worker groups, dead-letter consumer, reconciler, notifier (the customers'
    SMS and the platform's events) and the admin web process (the vendor's callbacks go to it)
    of one chaos run. `env` has SIM_PORT and WEB_PORT."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, *, worker_groups: int, threads: int
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self._lock = threading.Lock()  # kills and restarts come from more than one thread
        self.sim = SIM.proc(env, log_dir)
        # each worker role one dramatiq process: a kill takes out one worker's threads
        worker_env = {**env, "WORKER_PROCESSES": "1", "WORKER_THREADS": str(threads)}
        self.workers = [
            WORKER.proc(worker_env, log_dir, name=f"worker{i + 1}") for i in range(worker_groups)
        ]
        self.deadletter = DEADLETTER.proc(env, log_dir)
        self.reconciler = RECONCILER.proc(env, log_dir)
        self.notify = NOTIFY.proc(env, log_dir)
        self.web = WEB.proc({**env, "PORT": env["WEB_PORT"]}, log_dir)

    @property
    def consumers(self) -> list[Proc]:
        """Every role but the simulated vendor: started again when dead. A scheduled kill
        picks among the workers, the dead-letter consumer, the reconciler and the notifier."""
        return [*self.workers, self.deadletter, self.reconciler, self.notify, self.web]

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
        """A worker group, or else the dead-letter consumer, the reconciler or the notifier."""
        others = [self.deadletter, self.reconciler, self.notify]
        return rng.choice(self.workers if worker else others)

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
        groups = {proc.pid: proc for proc in self.workers if proc.alive}
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
        stop_all(reversed(self.procs))


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
