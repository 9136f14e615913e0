"""Embedded development servers: start, reuse across calls and processes, stop."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

import fulfillment
from fulfillment.dev import embedded

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

REPO_ROOT = Path(fulfillment.__file__).resolve().parents[1]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "dev-state"
    yield state
    embedded.stop_embedded(state)


def _ping(url: str) -> bool:
    client = redis.Redis.from_url(
        url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def test_redis_starts_is_reused_and_stops(state_dir: Path) -> None:
    url = embedded.embedded_redis_url(state_dir)

    assert url.startswith("redis://127.0.0.1:")
    assert _ping(url)
    assert embedded.embedded_redis_url(state_dir) == url

    embedded.stop_embedded(state_dir)

    assert not _ping(url)
    assert not (state_dir / "redis" / "redis.pid").exists()  # removed by a clean shutdown


def test_concurrent_processes_share_one_redis(state_dir: Path) -> None:
    code = "import sys; from pathlib import Path; from fulfillment.dev import embedded; "
    code += "print(embedded.embedded_redis_url(Path(sys.argv[1])))"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(state_dir)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    urls = {proc.communicate(timeout=20)[0].strip() for proc in procs}

    assert all(proc.returncode == 0 for proc in procs)
    assert len(urls) == 1
    assert embedded.embedded_redis_url(state_dir) in urls


def test_postgres_starts_is_reused_and_stops(state_dir: Path) -> None:
    url = embedded.embedded_postgres_url(state_dir)

    with psycopg.connect(url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert embedded.embedded_postgres_url(state_dir) == url

    embedded.stop_embedded(state_dir)

    assert not (state_dir / "pg" / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    # A handle cached in this process must not hide that the server was stopped.
    with psycopg.connect(embedded.embedded_postgres_url(state_dir)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_resolve_urls_keeps_given_urls_and_warns_once_for_embedded(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "_WARNED", set())
    given = ("postgresql://app:secret@db.example/app", "redis://cache.example:6379/0")

    with capture_logs() as logs:
        assert embedded.resolve_urls(*given, state_dir) == given
        first = embedded.resolve_urls(given[0], None, state_dir)
        second = embedded.resolve_urls(given[0], None, state_dir)

    assert first == second
    assert _ping(first[1])
    assert [(e["event"], e["service"], e["url"], e["log_level"]) for e in logs] == [
        ("embedded.development_only", "redis", first[1], "warning")
    ]
    assert "DEVELOPMENT ONLY: REDIS_URL is unset" in logs[0]["message"]


def test_missing_pgserver_says_how_to_fix(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pgserver", "pgserver.postgres_server"):  # None in sys.modules: ImportError
        monkeypatch.setitem(sys.modules, name, None)

    with pytest.raises(RuntimeError, match=r"pip install -e \.\[dev-servers\]"):
        embedded.embedded_postgres_url(state_dir)


def test_stop_when_nothing_runs_is_a_no_op(state_dir: Path) -> None:
    embedded.stop_embedded(state_dir)
    (state_dir / "redis").mkdir(parents=True)
    (state_dir / "redis" / "redis.port").write_text("1\n")
    (state_dir / "redis" / "redis.pid").write_text("999999\n")

    embedded.stop_embedded(state_dir)
