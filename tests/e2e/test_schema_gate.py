"""New code refuses to start on a schema older than it needs, naming `fulfillment migrate`: the
worker and dead-letter groups (the Procfile's dramatiq lines), the web process and the
reconciler, each as the Procfile starts it."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from db.databases import create_database
from db.migrate import REQUIRED_VERSION, migrate
from fulfillment.dev.embedded import free_port
from fulfillment.dev.launcher import DEADLETTER, RECONCILER, WEB, WORKER, ProcessType, base_env
from tests.conftest import ADMIN_URL, REDIS_URL

pytestmark = pytest.mark.e2e

TIMEOUT_S = 90.0  # a cold interpreter on a loaded 2-core machine


@pytest.fixture
def old_database() -> Iterator[str]:
    name = f"fulfillment_gate_{uuid.uuid4().hex[:10]}"
    url = create_database(ADMIN_URL, name)
    migrate(url, to=REQUIRED_VERSION - 1)
    yield url
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # ours: hex only


@pytest.mark.parametrize("kind", [WORKER, DEADLETTER, WEB, RECONCILER], ids=lambda k: k.name)
def test_a_process_refuses_a_schema_older_than_it_needs(
    kind: ProcessType, old_database: str, tmp_path: Path
) -> None:
    env = {
        **base_env(),
        "DATABASE_URL": old_database,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": f"gate-{uuid.uuid4().hex[:8]}",
        "ADMIN_TOKEN": "gate-admin-token-0123456789",
        "API_TOKEN": "gate-api-token-0123456789",
        "AT_ISHARE_API_URL": "http://127.0.0.1:9/v1",
        "AT_ISHARE_API_KEY": "k",
        "AT_ISHARE_API_SECRET": "s",
        "PORT": str(free_port()),
        "WORKER_PROCESSES": "1",
        "WORKER_THREADS": "1",
        "LOG_FORMAT": "console",
    }
    done = subprocess.run(
        kind.argv(env),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert f"schema version {REQUIRED_VERSION - 1:04d}" in said, said[-2000:]
    assert "run `fulfillment migrate` first" in said, said[-2000:]


def test_a_worker_serving_a_network_without_its_vendors_settings_refuses_to_start(
    database_url: str, store: object, tmp_path: Path
) -> None:
    """mtn routes to the aggregator, whose URL and token are unset: the worker group exits
    at boot saying so, and mtn is not recorded as served (its orders stay no one's)."""
    env = {
        **base_env(),
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": f"gate-{uuid.uuid4().hex[:8]}",
        "AT_ISHARE_API_URL": "http://127.0.0.1:9/v1",
        "AT_ISHARE_API_KEY": "k",
        "AT_ISHARE_API_SECRET": "s",
        "NETWORKS_ENABLED": "at-ishare,mtn",
        "PORT": str(free_port()),
        "WORKER_PROCESSES": "1",
        "WORKER_THREADS": "1",
        "LOG_FORMAT": "console",
    }
    done = subprocess.run(
        WORKER.argv(env), env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "AGGREGATOR_API_URL" in said, said[-2000:]
    with psycopg.connect(database_url) as conn:
        served = [r[0] for r in conn.execute("SELECT network FROM fleet_networks ORDER BY 1")]
    assert served == ["at-ishare"]
