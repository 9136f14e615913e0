"""Shared fixtures: one PostgreSQL database and one Redis namespace per test run.

Servers come from TEST_DATABASE_URL / TEST_REDIS_URL (defaults: the local ones). A missing
server skips the test locally and fails it in CI (CI=true).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import psycopg
import pytest
import redis

from db.databases import create_database
from db.databases import database_url as database_url_of
from db.migrate import migrate
from db.store import Store, open_pool
from fulfillment.dev.embedded import free_port

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} unavailable: {exc}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test run, with schema.sql applied; dropped at the end."""
    name = f"fulfillment_test_{RUN_ID}"
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name is ours: hex only
    except psycopg.OperationalError as exc:
        _unavailable("PostgreSQL", exc)
    url = database_url_of(ADMIN_URL, name)
    migrate(url)
    yield url
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    """An empty database of this test alone on the run's server (no schema), named after the
    run's; dropped afterwards, sessions and all."""
    name = f"{database_url.rsplit('/', 1)[1]}_{uuid.uuid4().hex[:8]}"
    url = create_database(ADMIN_URL, name)
    try:
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # ours: hex only


@pytest.fixture(scope="session")
def session_store(database_url: str) -> Iterator[Store]:
    store = Store(open_pool(database_url, min_size=1, max_size=8))
    yield store
    store.close()


@pytest.fixture
def store(session_store: Store) -> Store:
    """The run's store, emptied before each test."""
    with session_store.pool.connection() as conn:
        conn.execute(
            "TRUNCATE orders, fulfillment_logs, admin_notifications, admin_audit, vendor_callbacks,"
            " fleet_pauses, fleet_networks, customer_sms, platform_events"
        )
        # as after `fulfillment migrate` with the default NETWORKS_ENABLED
        conn.execute(
            "INSERT INTO fleet_networks (network, enabled_by) VALUES ('at-ishare', 'test')"
        )
    return session_store


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        _unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    namespace = f"fulfillment-test-{RUN_ID}-{uuid.uuid4().hex[:8]}"
    yield namespace
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    if keys:
        client.delete(*keys)


# -- the admin web process, served for real over HTTP -----------------------------------


@dataclass
class WebServer:
    url: str
    api_token: str
    admin_token: str
    published: list[tuple[str, float]]
    namespace: str
    vendor_key: str
    vendor_secret: str
    #: the FastAPI app served (its state: sessions, the token-guessing throttle)
    app: Any = None


def park_dead_messages(
    namespace: str, order_ids: list[str], options: dict[str, Any] | None = None
) -> list[str]:
    """Put fulfill_order messages into Dramatiq's dead-letter queue (XQ) as its Redis broker
    keeps them when it gives up; their message ids, in order."""
    client = redis.Redis.from_url(REDIS_URL)
    ids = []
    for oid in order_ids:
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name="fulfillment",
            actor_name="fulfill_order",
            args=(oid,),
            kwargs={},
            options=dict(options or {}),
        )
        client.zadd(f"{namespace}:fulfillment.XQ", {message.message_id: time.time() * 1000})
        client.hset(f"{namespace}:fulfillment.XQ.msgs", message.message_id, message.encode())
        ids.append(message.message_id)
    client.close()
    return ids


@pytest.fixture
def web(store: Store, redis_url: str, redis_namespace: str) -> Iterator[WebServer]:
    """The admin app under uvicorn on a free port, against this run's database and a Redis
    namespace of the test. Publishing is recorded (the broker is not the subject here)."""
    import uvicorn

    from fulfillment.messaging.dlq import DeadMessageQueue
    from fulfillment.messaging.publish import build_broker
    from fulfillment.services.admin import AdminService
    from fulfillment.services.pauses import PauseService
    from fulfillment.web.app import create_app
    from fulfillment.web.deps import WebDeps

    published: list[tuple[str, float]] = []
    broker = build_broker(redis_url, redis_namespace)
    client = redis.Redis.from_url(redis_url)
    service = AdminService(
        store=store, publish=lambda oid, d: published.append((oid, d)), max_attempts=3
    )
    pauses = PauseService(store=store, publish=lambda oid, d: published.append((oid, d)))

    def no_fulfil_deps() -> Any:
        raise RuntimeError("this fixture has no vendor; see the webhook tests")

    deps = WebDeps(
        service=service,
        pauses=pauses,
        dlq=DeadMessageQueue(client, redis_namespace, broker),
        store=store,
        api_token="test-api-token",
        admin_token="test-admin-token",
        vendor_key="it-key",
        vendor_secret="it-secret",
        aggregator_secret="it-aggregator-secret",
        fulfil_deps=no_fulfil_deps,
        ping_redis=client.ping,
    )
    port = free_port()
    app = create_app(deps)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield WebServer(
        url=f"http://127.0.0.1:{port}",
        api_token="test-api-token",
        admin_token="test-admin-token",
        published=published,
        namespace=redis_namespace,
        vendor_key="it-key",
        vendor_secret="it-secret",
        app=app,
    )
    server.should_exit = True
    thread.join(timeout=10)
    broker.close()
