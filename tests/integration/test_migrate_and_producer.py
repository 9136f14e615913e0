"""schema.sql is idempotent and adopts an existing orders table; the producer publishes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis

from db.databases import database_url as database_url_of
from db.migrate import migrate
from fulfillment.domain.constants import FULFILLMENT_QUEUE
from fulfillment.domain.errors import InvalidPackage, InvalidPhoneNumber, UnsupportedNetwork
from fulfillment.messaging.publish import build_broker
from producers.publish import publish_fulfillment
from tests.conftest import ADMIN_URL

pytestmark = pytest.mark.integration


@pytest.fixture
def blank_database(database_url: str) -> Iterator[str]:
    name = f"fulfillment_blank_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield database_url_of(ADMIN_URL, name)
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _schema(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2"
        ).fetchall()


def test_migrate_twice_changes_nothing(blank_database: str) -> None:
    migrate(blank_database)
    first = _schema(blank_database)
    migrate(blank_database)
    assert _schema(blank_database) == first
    tables = {t for t, _, _ in first}
    assert {"orders", "fulfillment_logs", "admin_notifications"} <= tables


def test_migrate_adopts_an_existing_orders_table_and_keeps_rows(blank_database: str) -> None:
    old_id = uuid.uuid4()
    with psycopg.connect(blank_database) as conn:
        conn.execute(
            "CREATE TABLE orders (id uuid PRIMARY KEY, phone_number text, "
            "network text, package_name text, amount numeric)"
        )
        conn.execute(
            "INSERT INTO orders VALUES (%s, '0241234567', 'at-ishare', '2GB', 10)", (old_id,)
        )
    migrate(blank_database)
    with psycopg.connect(blank_database) as conn:
        row = conn.execute(
            "SELECT amount, fulfillment_status, fulfillment_attempts FROM orders WHERE id = %s",
            (old_id,),
        ).fetchone()
        assert row == (10, None, 0)  # kept; not managed, so never delivered again
        new_id = uuid.uuid4()
        conn.execute(
            "INSERT INTO orders (id, phone_number, network) VALUES (%s, '0241234567', 'at-ishare')",
            (new_id,),
        )
        status = conn.execute(
            "SELECT fulfillment_status FROM orders WHERE id = %s", (new_id,)
        ).fetchone()
        assert status == ("pending",)


def test_logs_are_append_only(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO fulfillment_logs (order_id, network, status, attempt_number, "
            "max_attempts) VALUES (%s, 'at-ishare', 'failed', 1, 3)",
            (uuid.uuid4(),),
        )
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE fulfillment_logs SET status = 'success'")


def test_producer_publishes_the_contract_message(redis_url: str, redis_namespace: str) -> None:
    broker = build_broker(redis_url, redis_namespace)
    oid = str(uuid.uuid4())
    result = publish_fulfillment(
        oid,
        phone_number="024 123 4567",
        network="at-ishare",
        package_name="AT iShare 2GB",
        broker=broker,
        enabled=True,
    )
    assert result.published and result.request.phone_number == "+233241234567"
    client = redis.Redis.from_url(redis_url)
    messages = client.hvals(f"{redis_namespace}:{FULFILLMENT_QUEUE}.msgs")
    assert len(messages) == 1
    import json

    body = json.loads(messages[0])
    assert (body["actor_name"], body["args"], body["kwargs"]) == ("fulfill_order", [oid], {})
    broker.close()


def test_producer_refuses_bad_input_and_publishes_nothing(
    redis_url: str, redis_namespace: str
) -> None:
    broker = build_broker(redis_url, redis_namespace)
    with pytest.raises(InvalidPhoneNumber, match="phone_number"):
        publish_fulfillment(
            str(uuid.uuid4()),
            phone_number="12345",
            network="at-ishare",
            size_gb=2,
            broker=broker,
            enabled=True,
        )
    with pytest.raises(UnsupportedNetwork, match="network"):
        publish_fulfillment(
            str(uuid.uuid4()),
            phone_number="0241234567",
            network="vodafone",
            size_gb=2,
            broker=broker,
            enabled=True,
        )
    with pytest.raises(InvalidPackage, match="at-bigtime does not sell 2GB"):
        publish_fulfillment(
            str(uuid.uuid4()),
            phone_number="0241234567",
            network="at-bigtime",
            size_gb=2,
            broker=broker,
            enabled=True,
        )
    disabled = publish_fulfillment(
        str(uuid.uuid4()),
        phone_number="0241234567",
        network="at-ishare",
        size_gb=2,
        broker=broker,
        enabled=False,
    )
    assert (disabled.published, disabled.reason) == (False, "disabled")
    client = redis.Redis.from_url(redis_url)
    assert client.hlen(f"{redis_namespace}:{FULFILLMENT_QUEUE}.msgs") == 0
    broker.close()


def test_producer_survives_redis_down() -> None:
    dead = build_broker("redis://127.0.0.1:1/0", "nowhere")
    result = publish_fulfillment(
        str(uuid.uuid4()),
        phone_number="0241234567",
        network="at-ishare",
        size_gb=1,
        broker=dead,
        enabled=True,
    )
    assert (result.published, result.reason) == (False, "broker_unavailable")
