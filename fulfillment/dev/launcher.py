"""The fleet's process types, defined once: the Procfile is rendered from them, and the demo,
the chaos harness (chaos/fleet.py), the benchmarks (bench/common.py) and the end-to-end tests
(tests/e2e) start their processes from them with `Proc`.

Each type is a console script (`dramatiq`, `fulfillment`; `python -m` when the script is not
next to the interpreter) with arguments that may read a variable (`${WORKER_THREADS:-8}`).
Under honcho, `PORT` is numbered per type in Procfile order from a base (default 5000, each
type 100 further), and a type that serves metrics derives its `METRICS_PORT` from it
(PORT + 4000): web 5000; worker metrics 9100 (9101... with `-c worker=N`), deadletter 9200,
reconciler 9300, notify 9400; the simulator ignores PORT (SIM_PORT, 8099). Run without honcho,
PORT unset: web WEB_PORT (8000), metrics 9191, 9192, 9193, 9194. Started here, each process
that serves metrics gets a free METRICS_PORT instead, a new one at every start.

Every process is the leader of its own process group (a dramatiq group forks its worker
processes and a metrics server into it), so SIGKILL of the group is what a crashed host or the
OOM killer does. Its output goes to a log file, so a killed process's last words stay readable.
It runs in its log directory, never in the source tree: this works from an installed wheel.

`main` is `fulfillment dev`: `procfile` prints the Procfile (`--check` compares), `stop` stops
the embedded servers the demo leaves running.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, NoReturn

from fulfillment.dev.embedded import free_port, stop_embedded
from fulfillment.domain.constants import (
    DEAD_LETTER_QUEUE,
    EVENTS_QUEUE,
    FULFILLMENT_QUEUE,
    SMS_QUEUE,
)
from fulfillment.runtime.settings import Settings

#: SIGTERM, then this long for a process group to exit before SIGKILL: a dramatiq group
#: finishes the messages in hand first (each vendor call bounded by its read timeout).
STOP_TIMEOUT_S: Final = 30.0
#: Prefixes of the variables that configure the fleet besides its settings.
FLEET_PREFIXES = ("SIM_", "DRAMATIQ_")
#: How a type that serves metrics derives METRICS_PORT from honcho's PORT.
METRICS_PORT_OFFSET: Final = 4000
PROCFILE_HEADER: Final = (
    "# Generated from fulfillment/dev/launcher.py: `fulfillment dev procfile > Procfile`."
)
BIN = Path(sys.executable).parent
#: The fleet's actors, as `dramatiq` imports them.
ACTORS_MODULE: Final = "workers.actors"

WORKER_READY: Final = "Worker process is ready for action."
SIM_READY: Final = "simulator listening on "
RECONCILER_READY: Final = '"reconciler.started"'
WEB_READY: Final = "Application startup complete."  # uvicorn's, once the app serves


@dataclass(frozen=True, slots=True)
class Var:
    """`${NAME:-default}`: the variable, or the default when it is unset or empty."""

    name: str
    default: str | Var

    def shell(self) -> str:
        default = self.default if isinstance(self.default, str) else self.default.shell()
        return f"${{{self.name}:-{default}}}"

    def value(self, env: Mapping[str, str]) -> str:
        if env.get(self.name):
            return env[self.name]
        return self.default if isinstance(self.default, str) else self.default.value(env)


Arg = str | Var


@dataclass(frozen=True, slots=True)
class Program:
    """A console script of the installed distribution, and the module that runs the same."""

    script: str
    module: str

    def argv(self) -> list[str]:
        script = BIN / self.script
        return [str(script)] if script.exists() else [sys.executable, "-m", self.module]


DRAMATIQ = Program("dramatiq", "dramatiq")
FULFILLMENT = Program("fulfillment", "fulfillment.cli.main")


@dataclass(frozen=True, slots=True)
class ProcessType:
    """One line of the Procfile."""

    name: str
    program: Program
    args: tuple[Arg, ...]
    #: the log line that says the process is ready
    ready: str
    #: PORT when honcho does not set it, for METRICS_PORT = PORT + 4000; None: no metrics
    metrics_base_port: int | None = None
    #: a variable that sets METRICS_PORT outright, under honcho too
    metrics_override: str | None = None

    @property
    def serves_metrics(self) -> bool:
        return self.metrics_base_port is not None

    def procfile_line(self) -> str:
        words = [self.program.script, *(a if isinstance(a, str) else a.shell() for a in self.args)]
        if self.metrics_base_port is not None:
            port = f"$((${{PORT:-{self.metrics_base_port}}} + {METRICS_PORT_OFFSET}))"
            if self.metrics_override:
                port = f"${{{self.metrics_override}:-{port}}}"
            words.insert(0, f"METRICS_PORT={port}")
        return f"{self.name}: {' '.join(words)}"

    def argv(self, env: Mapping[str, str], *extra: str) -> list[str]:
        """The command line the Procfile runs, its variables read from `env`, then `extra`."""
        args = [a if isinstance(a, str) else a.value(env) for a in self.args]
        return [*self.program.argv(), *args, *extra]

    def proc(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        name: str | None = None,
        extra: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> Proc:
        """A `Proc` of this type (not started yet)."""
        return Proc(
            name or self.name,
            self.argv(env, *extra),
            env=env,
            log_dir=log_dir,
            ready=self.ready,
            metrics=self.serves_metrics,
            cwd=cwd,
        )


def _dramatiq_args(module: str, queue: str, processes: Arg, threads: Arg) -> tuple[Arg, ...]:
    return (module, "--queues", queue, "--processes", processes, "--threads", threads)


def dramatiq_argv(module: str, queue: str, *, processes: int, threads: int) -> list[str]:
    """`dramatiq MODULE --queues QUEUE ...`: a group of other actors (the benchmarks'), started
    as the `worker:` type starts its own."""
    args = _dramatiq_args(module, queue, str(processes), str(threads))
    return [*DRAMATIQ.argv(), *(a for a in args if isinstance(a, str))]


#: web first: honcho gives it the base PORT, the port a platform routes to.
WEB = ProcessType(
    "web", FULFILLMENT, ("web", "--port", Var("PORT", Var("WEB_PORT", "8000"))), WEB_READY
)
WORKER = ProcessType(
    "worker",
    DRAMATIQ,
    _dramatiq_args(
        ACTORS_MODULE, FULFILLMENT_QUEUE, Var("WORKER_PROCESSES", "2"), Var("WORKER_THREADS", "8")
    ),
    WORKER_READY,
    metrics_base_port=5191,
    metrics_override="WORKER_METRICS_PORT",
)
DEADLETTER = ProcessType(
    "deadletter",
    DRAMATIQ,
    _dramatiq_args(ACTORS_MODULE, DEAD_LETTER_QUEUE, "1", "2"),
    WORKER_READY,
    metrics_base_port=5192,
)
RECONCILER = ProcessType(
    "reconciler", FULFILLMENT, ("reconcile", "--loop"), RECONCILER_READY, metrics_base_port=5193
)
#: the customer's SMS and the platform's events: their own queues, their own processes, so a
#: slow SMS provider or platform never holds a worker thread that delivers bundles
NOTIFY = ProcessType(
    "notify",
    DRAMATIQ,
    (
        ACTORS_MODULE,
        "--queues",
        SMS_QUEUE,
        EVENTS_QUEUE,
        "--processes",
        "1",
        "--threads",
        Var("NOTIFY_THREADS", "4"),
    ),
    WORKER_READY,
    metrics_base_port=5194,
)
SIM = ProcessType("sim", FULFILLMENT, ("sim", "--port", Var("SIM_PORT", "8099")), SIM_READY)
#: In Procfile order.
PROCESS_TYPES: Final = (WEB, WORKER, DEADLETTER, RECONCILER, NOTIFY, SIM)


def render_procfile() -> str:
    """The Procfile's text: one line per process type."""
    return "\n".join([PROCFILE_HEADER, *(t.procfile_line() for t in PROCESS_TYPES)]) + "\n"


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
    """One process, the leader of its own process group, and its log file. `start` starts it,
    and starts it again once it is dead (each start its own log file under `log_dir`, and its
    own METRICS_PORT when `metrics`: a group restarted at once never fights over the old one).
    It runs in `cwd`, by default `log_dir`."""

    tail_lines = 40

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: Mapping[str, str],
        log_dir: Path,
        ready: str | None = None,
        metrics: bool = False,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_dir = log_dir
        self.ready = ready
        self.metrics = metrics
        self.cwd = cwd or log_dir
        self.starts = 0
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log: IO[bytes] | None = None

    def start(self, log_path: Path | None = None) -> None:
        """Start `argv` with `env`, its stdout and stderr to `log_path` (by default
        `log_dir/NAME-N.log` for the N-th start)."""
        self.starts += 1
        if self.metrics:
            self.env["METRICS_PORT"] = str(free_port())
        self.log_path = log_path or self.log_dir / f"{self.name}-{self.starts}.log"
        self._log = self.log_path.open("wb")
        try:
            self.popen = subprocess.Popen(  # noqa: S603 -- our own entry points, no shell
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen.pid

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

    def wait_ready(self, timeout: float) -> str:
        """The log line that says the process is ready; fails if it dies or times out."""
        if self.ready is None:
            raise ValueError(f"{self.name} has no ready line")
        return self.wait_for_output(self.ready, timeout)

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
        stop_all([self])


def stop_all(procs: Iterable[Proc], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every process at once, then give them `timeout_s` together; SIGKILL the rest."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        proc.reap(deadline)


# -- `fulfillment dev` ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`fulfillment dev procfile [--check [-f PATH]]` and `fulfillment dev stop`."""
    parser = argparse.ArgumentParser(prog="fulfillment dev", description="development tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("procfile", help="print the Procfile rendered from the process types")
    p.add_argument(
        "--check",
        action="store_true",
        help="compare with the Procfile instead; exit 1 if it differs",
    )
    p.add_argument("-f", "--procfile", type=Path, default=Path("Procfile"), help="for --check")
    sub.add_parser("stop", help="stop the embedded PostgreSQL and Redis under FULFILLMENT_DEV_DIR")
    args = parser.parse_args(argv)
    if args.command == "stop":
        return _stop()
    text = render_procfile()
    if not args.check:
        sys.stdout.write(text)
        return 0
    try:
        current = args.procfile.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"{args.procfile}: {exc.strerror}", file=sys.stderr)
        return 1
    if current != text:
        print(
            f"{args.procfile} differs from the process types in fulfillment/dev/launcher.py; "
            f"regenerate it: fulfillment dev procfile > {args.procfile}",
            file=sys.stderr,
        )
        return 1
    return 0


def _stop() -> int:
    state = Settings().fulfillment_dev_dir.expanduser().resolve()
    stopped = stop_embedded(state)
    print(
        f"stopped embedded {' and '.join(stopped)} under {state}"
        if stopped
        else f"no embedded server running under {state}"
    )
    return 0
