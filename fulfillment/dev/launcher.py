"""Processes of the fleet started the way the Procfile starts them, each stoppable and killable
as a whole: for the chaos harness (chaos/fleet.py) and the end-to-end tests (tests/e2e);
`base_env` serves the benchmarks too (bench/common.py).

Every process is the leader of its own process group (a dramatiq group forks its worker
processes and a metrics server into it), so SIGKILL of the group is what a crashed host or the
OOM killer does. Its output goes to a log file, so a killed process's last words stay readable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, NoReturn

from fulfillment.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 10.0
#: Prefixes of the variables that configure the fleet besides its settings.
FLEET_PREFIXES = ("SIM_", "DRAMATIQ_")


def base_env(prefixes: tuple[str, ...] = FLEET_PREFIXES) -> dict[str, str]:
    """This process's environment without anything that configures the fleet: no variable of
    the settings, none that starts with one of `prefixes`."""
    ours = {name.upper() for name in Settings.model_fields}
    return {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in ours and not k.upper().startswith(prefixes)
    }


class Proc:
    """One process, the leader of its own process group, and its log file. `launch` starts it,
    and starts it again once it is reaped."""

    tail_lines = 40

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log: IO[bytes] | None = None

    def launch(self, env: dict[str, str], log_path: Path) -> None:
        """Start `argv` in the repository with `env`, its stdout and stderr to `log_path`."""
        self.log_path = log_path
        self._log = log_path.open("wb")
        try:
            self.popen = subprocess.Popen(  # noqa: S603 -- our own entry points, no shell
                self.argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def text(self) -> str:
        if self.log_path is None:
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def tail(self) -> str:
        return "\n".join(self.text().splitlines()[-self.tail_lines :])

    def fail(self, problem: str) -> NoReturn:
        """Give up on the process: RuntimeError, with the tail of its log."""
        raise RuntimeError(f"{problem}:\n{self.tail()}")

    def await_output(self, needle: str, timeout: float) -> str | None:
        """The first log line containing `needle`; None if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.text().splitlines():
                if needle in line:
                    return line
            if not self.alive:
                return None
            if time.monotonic() > deadline:
                self.fail(f"{self.name} did not print {needle!r} within {timeout} s")
            time.sleep(0.1)

    def wait_for_output(self, needle: str, timeout: float) -> str:
        """The first log line containing `needle`; fails if the process exits first."""
        line = self.await_output(needle, timeout)
        if line is None:
            code = None if self.popen is None else self.popen.returncode
            self.fail(f"{self.name} exited with {code} before printing {needle!r}")
        return line

    def signal_group(self, sig: signal.Signals) -> None:
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)  # start_new_session: the leader's pid is the pgid

    def _group_exists(self) -> bool:
        if self.popen is None:
            return False
        try:
            os.killpg(self.popen.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def reap(self, deadline: float) -> None:
        """Wait for the group to exit until `deadline`, then SIGKILL whatever is left of it."""
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        # The leader is gone; a pgid stays reserved while any member lives, so these are ours.
        while self._group_exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._group_exists():
            self.signal_group(signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crashed host or the OOM killer would; returns
        when it is gone."""
        self.signal_group(signal.SIGKILL)
        self.reap(time.monotonic() + STOP_TIMEOUT_S)

    def terminate(self) -> None:
        """SIGTERM the leader only, as a process manager does: dramatiq's main process then
        stops its workers gracefully (a second SIGTERM would make them hard-kill themselves)."""
        if self.alive and self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL what is left after STOP_TIMEOUT_S."""
        self.terminate()
        self.reap(time.monotonic() + STOP_TIMEOUT_S)
