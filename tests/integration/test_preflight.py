"""`fulfillment check` (and `fulfillment health`, which shares its checks) against a real
PostgreSQL, Redis and the vendor simulator, as an SRE runs it on a host: one line per finding,
a summary, exit 0 only when nothing failed; nothing secret in what it prints."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from db.migrate import REQUIRED_VERSION, load_steps, migrate
from db.store import Store
from fulfillment.cli.main import main
from fulfillment.dev.embedded import free_port
from fulfillment.dev.simulator.server import Simulator
from fulfillment.runtime import bootstrap
from fulfillment.runtime.settings import Settings
from tests.conftest import ADMIN_URL

from .conftest import KEY, SECRET

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "preflight-admin-token-1"
API_TOKEN = "preflight-api-token-22"
DB_PASSWORD = "db-pass-never-shown"  # the test server trusts local connections: never asked
REDIS_PASSWORD = "redis-pass-never-shown"

Run = Callable[..., tuple[int, str]]


def with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


def with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{user}@{parts.netloc.rpartition('@')[2]}").geturl()


def key_value(url: str, **more: str) -> str:
    """`url` as libpq's key=value connection string, `more` pairs added as written."""
    parts = urlsplit(url)
    pairs = {
        "host": parts.hostname or "",
        "port": str(parts.port or 5432),
        "user": parts.username or "",
        "dbname": parts.path.lstrip("/"),
    }
    return " ".join(f"{k}={v}" for k, v in {**pairs, **more}.items())


@pytest.fixture
def run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    sim: Simulator,
    redis_url: str,
    redis_namespace: str,
) -> Run:
    """`fulfillment <args>` in this process with a complete environment (the variables of
    `env` replace or, given None, remove its own); its exit status and stdout."""

    def call(*args: str, env: dict[str, str | None] | None = None, db: str) -> tuple[int, str]:
        for name in Settings.model_fields:
            monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv("WORKER_THREADS", raising=False)
        values: dict[str, str | None] = {
            "DATABASE_URL": with_password(db, DB_PASSWORD),
            "REDIS_URL": redis_url,
            "REDIS_NAMESPACE": redis_namespace,
            "AT_ISHARE_API_URL": sim.url,
            "AT_ISHARE_API_KEY": KEY,
            "AT_ISHARE_API_SECRET": SECRET,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "API_TOKEN": API_TOKEN,
            "FULFILLMENT_DEV_DIR": str(tmp_path / "dev"),
            **(env or {}),
        }
        for name, value in values.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        bootstrap.reset()
        capsys.readouterr()
        try:
            code = main(list(args))
        finally:
            bootstrap.reset()
        out = capsys.readouterr().out
        print(out)  # shown when the test fails
        return code, out

    return call


def line(out: str, mark: str, name: str) -> str:
    """The first finding `name` printed with `mark` (ok, WARN, FAIL, info, skip)."""
    for text in out.splitlines():
        if text.split()[:2] == [mark, name]:
            return text
    raise AssertionError(f"no {mark!r} line for {name!r} in:\n{out}")


def assert_nothing_secret(out: str) -> None:
    for secret in (SECRET, ADMIN_TOKEN, API_TOKEN, DB_PASSWORD, REDIS_PASSWORD):
        assert secret not in out
    assert f"X-API-Key: {KEY}" not in out


def test_all_good_exits_0_and_says_so(run: Run, database_url: str, store: Store) -> None:
    # `store` empties the run's tables: no pause left behind by an earlier test
    code, out = run("check", db=database_url)
    assert code == 0
    assert "FAIL" not in out
    assert out.splitlines()[0] == (
        "fulfillment check, role all (web, worker, deadletter, reconciler, notify)"
    )
    for name in ("settings", "postgresql", "schema", "redis", "vendor"):
        line(out, "ok", name)
    assert "answers PING; broker namespace 'fulfillment-test-" in line(out, "ok", "redis")
    assert "the signed balance call answered" in line(out, "ok", "vendor")
    assert "not paused" in line(out, "info", "pause")
    assert "circuit is closed" in line(out, "info", "circuit")
    assert out.rstrip().splitlines()[-1].endswith("this host may start its processes")
    assert_nothing_secret(out)
    # the password is dropped from the URL shown, the rest kept
    assert "postgresql://postgres@127.0.0.1:" in line(out, "ok", "postgresql")


LATEST = len(load_steps())


@pytest.mark.skipif(
    REQUIRED_VERSION == LATEST,
    reason="this release needs its newest step (0005: the outboxes): no version is "
    "behind yet still enough to start",
)
def test_schema_behind_warns_and_names_migrate(run: Run, own_database: str) -> None:
    migrate(own_database, to=REQUIRED_VERSION)
    code, out = run("check", db=own_database)
    assert code == 0, "behind but at REQUIRED_VERSION: it starts, a warning only"
    schema = line(out, "WARN", "schema")
    assert f"version {REQUIRED_VERSION:04d}, behind this code's {LATEST:04d}" in schema
    assert "run `fulfillment migrate`" in schema
    assert f"pending {REQUIRED_VERSION + 1:04d} " in out
    assert "0 failed" not in out and "1 warning(s)" in out.splitlines()[-1]


def test_every_vendor_a_network_routes_to_is_checked(
    run: Run, database_url: str, store: Store, sim: Simulator
) -> None:
    four = {"NETWORKS_ENABLED": "at-ishare,mtn,telecel,at-bigtime",
            "AGGREGATOR_API_URL": sim.aggregator_url,
            "AGGREGATOR_API_TOKEN": sim.aggregator.token}  # fmt: skip
    code, out = run("check", env=four, db=database_url)
    assert code == 0, out
    assert "the wallet call answered" in line(out, "ok", "aggregator")
    circuits = [t for t in out.splitlines() if t.split()[:2] == ["info", "circuit"]]
    assert len(circuits) == 2 and "the data aggregator: the circuit is closed" in out
    code, out = run("check", env={**four, "AGGREGATOR_API_TOKEN": "wrong-token"}, db=database_url)
    assert code == 1
    assert "AGGREGATOR_API_TOKEN is wrong" in line(out, "FAIL", "aggregator")
    assert "wrong-token" not in out
    code, out = run("check", db=database_url)  # at-ishare only: the aggregator is not asked
    assert code == 0 and " aggregator " not in out


def test_schema_too_old_fails_refuses_to_start(run: Run, own_database: str) -> None:
    migrate(own_database, to=REQUIRED_VERSION - 1)
    code, out = run("check", db=own_database)
    assert code == 1
    schema = line(out, "FAIL", "schema")
    assert (
        f"is at version {REQUIRED_VERSION - 1:04d}; this code needs {REQUIRED_VERSION:04d} "
        "or newer and refuses to start"
    ) in schema
    assert "run `fulfillment migrate`" in schema
    assert "fix what FAILED" in out.splitlines()[-1]


def test_schema_drift_fails_with_the_drift_lines(run: Run, own_database: str) -> None:
    migrate(own_database)
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute("ALTER TABLE fulfillment_logs ADD COLUMN added_by_hand integer")
    code, out = run("check", db=own_database)
    assert code == 1
    assert "drift" in line(out, "FAIL", "schema")
    assert "--accept-drift" in line(out, "FAIL", "schema")
    assert any("drift:" in t and "added_by_hand" in t for t in out.splitlines())


def test_a_wrong_vendor_secret_is_named_without_printing_it(run: Run, database_url: str) -> None:
    wrong = "not-the-vendor-secret-123"
    code, out = run("check", db=database_url, env={"AT_ISHARE_API_SECRET": wrong})
    assert code == 1
    vendor = line(out, "FAIL", "vendor")
    assert "401 UNAUTHORIZED" in vendor
    assert "AT_ISHARE_API_KEY or AT_ISHARE_API_SECRET is wrong" in vendor
    assert wrong not in out
    assert_nothing_secret(out)


def test_redis_unreachable_is_the_redis_line(run: Run, database_url: str) -> None:
    closed = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    code, out = run("check", db=database_url, env={"REDIS_URL": closed})
    assert code == 1
    redis_line = line(out, "FAIL", "redis")
    assert "does not answer" in redis_line
    assert "fix REDIS_URL" in redis_line
    assert "redis://127.0.0.1:" in redis_line  # the URL, its password dropped
    line(out, "ok", "postgresql")
    line(out, "ok", "vendor")
    assert_nothing_secret(out)


def test_unset_servers_are_the_development_default_and_nothing_starts(
    run: Run, database_url: str, tmp_path: Path
) -> None:
    code, out = run("check", db=database_url, env={"DATABASE_URL": None, "REDIS_URL": None})
    assert code == 1
    failures = [t for t in out.splitlines() if t.startswith("FAIL  settings")]
    assert any("DATABASE_URL is unset" in t and "DEVELOPMENT" in t for t in failures)
    assert any("REDIS_URL is unset" in t and "DEVELOPMENT" in t for t in failures)
    assert "not checked: DATABASE_URL is unset" in line(out, "skip", "postgresql")
    assert not (tmp_path / "dev").exists(), "the check must never start an embedded server"


def test_invalid_settings_name_their_variables(run: Run, database_url: str) -> None:
    code, out = run(
        "check",
        db=database_url,
        env={"MAX_ATTEMPTS": "three", "RETRY_DELAYS": ",", "DB_POOL_MIN_SIZE": "20"},
    )
    assert code == 1
    failures = [t for t in out.splitlines() if t.startswith("FAIL  settings")]
    assert any(t.startswith("FAIL  settings    MAX_ATTEMPTS: ") for t in failures)
    assert any("RETRY_DELAYS" in t and "at least one number" in t for t in failures)
    assert "three" not in out, "the value given is never echoed (it might be a secret)"


def test_roles_decide_what_the_tokens_and_the_vendor_mean(run: Run, database_url: str) -> None:
    code, out = run("check", db=database_url, env={"ADMIN_TOKEN": None, "API_TOKEN": None})
    assert code == 1
    assert "ADMIN_TOKEN and API_TOKEN unset" in line(out, "FAIL", "settings")
    assert "--role worker" in line(out, "FAIL", "settings")

    code, out = run(
        "check", "--role", "worker", db=database_url, env={"ADMIN_TOKEN": None, "API_TOKEN": None}
    )
    assert code == 0
    assert "role worker needs" in line(out, "ok", "settings")

    code, out = run("check", "--role", "web", db=database_url, env={"AT_ISHARE_API_SECRET": None})
    assert code == 0, "the web process serves without the vendor: a warning"
    assert "webhook answers 503" in line(out, "WARN", "settings")
    assert "not checked" in line(out, "skip", "vendor")


def test_inconsistent_settings_are_warnings(run: Run, database_url: str) -> None:
    code, out = run(
        "check",
        db=database_url,
        env={
            "MAX_ATTEMPTS": "5",
            "RETRY_DELAYS": "1,2",
            "CLAIM_TTL_S": "10",
            "WORKER_THREADS": "32",
            "API_TOKEN": ADMIN_TOKEN,
        },
    )
    assert code == 0
    warnings = [t for t in out.splitlines() if t.startswith("WARN  settings")]
    assert any("MAX_ATTEMPTS=5 allows 4 retries but RETRY_DELAYS has 2" in t for t in warnings)
    assert any("CLAIM_TTL_S=10" in t for t in warnings)
    assert any("WORKER_THREADS=32 is above VENDOR_MAX_CONNECTIONS=20" in t for t in warnings)
    assert any("ADMIN_TOKEN and API_TOKEN are the same" in t for t in warnings)
    assert_nothing_secret(out)


def test_pauses_and_the_kill_switch_are_said_never_failed(
    run: Run, own_database: str, sim: Simulator
) -> None:
    migrate(own_database)
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO fleet_pauses (scope, reason, paused_by, paused_at) VALUES "
            "('*', 'vendor asked us to stop; call +233241234567', 'Ama', now() - interval '2 min'),"
            " ('mtn', 'aggregator maintenance', 'Kofi', now())"
        )
    code, out = run("check", db=own_database, env={"FULFILLMENT_ENABLED": "false"})
    assert code == 0
    pauses = [t for t in out.splitlines() if t.startswith("info  pause")]
    assert any("FULFILLMENT_ENABLED=false on this host" in t for t in pauses)
    fleet = next(t for t in pauses if "the whole fleet is paused by Ama" in t)
    assert "(2 min 0" in fleet and "vendor asked us to stop" in fleet
    assert re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", fleet), fleet
    assert "241234567" not in out, "a phone number in a reason is masked"
    assert any("network mtn is paused by Kofi" in t for t in pauses)


def test_health_shares_the_checks(run: Run, database_url: str) -> None:
    code, out = run("health", db=database_url)
    assert code == 0
    body = json.loads(out)
    assert body["healthy"] is True
    assert body["checks"]["postgresql"].startswith("ok: ")
    assert body["checks"]["schema"].startswith(f"ok: version {LATEST:04d}")
    assert body["checks"]["vendor"].startswith("ok: ")
    assert body["checks"]["fulfillment_enabled"] is True

    code, out = run("health", db=database_url, env={"AT_ISHARE_API_SECRET": "wrong-secret-1234"})
    assert code == 1
    body = json.loads(out)
    assert body["healthy"] is False
    assert "401 UNAUTHORIZED" in body["checks"]["vendor"]
    assert "wrong-secret-1234" not in out
    assert_nothing_secret(out)


# -- passwords in every form a driver takes -------------------------------------------------


def test_a_key_value_database_url_never_shows_its_password(
    run: Run, database_url: str, store: Store
) -> None:
    # trust auth: PostgreSQL accepts the connection whatever the password says
    for password, written in (
        ("Kx9-very-secret", "Kx9-very-secret"),
        ("Kx9 very secret, quoted", "'Kx9 very secret, quoted'"),
    ):
        dsn = key_value(database_url, password=written, application_name="preflight")
        code, out = run("check", db=database_url, env={"DATABASE_URL": dsn})
        assert code == 0
        shown = line(out, "ok", "postgresql")
        assert "host=127.0.0.1" in shown and "application_name=preflight" in shown
        assert "password" not in shown
        assert password not in out and "Kx9" not in out
        assert_nothing_secret(out)
        code, out = run("health", db=database_url, env={"DATABASE_URL": dsn})
        assert code == 0
        assert "Kx9" not in out

    # PostgreSQL away: the failure line quotes the string, still without its password
    away = key_value(database_url, password="Kx9-very-secret").replace(
        f"port={urlsplit(database_url).port}", f"port={free_port()}"
    )
    code, out = run("check", db=database_url, env={"DATABASE_URL": away})
    assert code == 1
    assert "host=127.0.0.1" in line(out, "FAIL", "postgresql")
    assert "Kx9" not in out


def test_a_password_in_the_query_is_never_shown(
    run: Run, database_url: str, store: Store, redis_url: str
) -> None:
    password = "Qp7-very-secret"
    joiner = "&" if "?" in database_url else "?"
    db = f"{database_url}{joiner}application_name=preflight&password={password}"
    code, out = run("check", db=database_url, env={"DATABASE_URL": db})
    assert code == 0
    shown = line(out, "ok", "postgresql")
    assert "?application_name=preflight" in shown and "password" not in shown
    assert password not in out

    # the same in REDIS_URL (redis-py reads it there; the test server asks for none)
    code, out = run("check", db=database_url, env={"REDIS_URL": f"{redis_url}?password={password}"})
    assert code == 0
    assert f"{redis_url} answers PING" in line(out, "ok", "redis")
    assert password not in out
    assert_nothing_secret(out)


# -- the database role's privileges ---------------------------------------------------------


@pytest.fixture
def limited_role(own_database: str) -> Iterator[str]:
    """A login role of this test alone, granted every privilege on the tables of the test's
    own (migrated) database; the test takes away what it wants. Its URL; the role is dropped
    afterwards (roles are the whole server's)."""
    migrate(own_database)
    name = f"review_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(own_database, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {name} LOGIN")  # ours: hex only
            conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}")
            conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {name}")
        yield with_user(own_database, name)
    finally:
        with psycopg.connect(own_database, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                conn.execute(f"DROP OWNED BY {name}")  # its grants in this database
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {name}")


def as_owner(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def test_a_role_that_cannot_read_the_pauses_fails_the_check(
    run: Run, own_database: str, limited_role: str
) -> None:
    role = urlsplit(limited_role).username
    as_owner(own_database, f"REVOKE SELECT ON fleet_pauses FROM {role}")
    for host_role in ("worker", "all"):
        code, out = run("check", "--role", host_role, db=limited_role)
        assert code == 1, "every worker claim would fail: the host must not start"
        grants = line(out, "FAIL", "privileges")
        assert f"the database role '{role}' lacks SELECT on fleet_pauses" in grants
        assert "workers cannot claim orders" in grants
        assert f"GRANT SELECT ON TABLE public.fleet_pauses TO {role};" in out
        assert any(
            "SELECT on fleet_pauses: needed by " in t and "claim_order" in t
            for t in out.splitlines()
        )
        assert "permission denied for table fleet_pauses" in line(out, "FAIL", "pause")
        assert "fix what FAILED" in out.splitlines()[-1]
        line(out, "ok", "postgresql")
        line(out, "ok", "schema")
    # the web process lists, sets and lifts pauses: a failure there too; its pause line is a
    # skip (the dashboard shows the pauses as unknown and serves on)
    code, out = run("check", "--role", "web", db=limited_role)
    assert code == 1
    assert "SELECT on fleet_pauses" in line(out, "FAIL", "privileges")
    assert "workers cannot claim" not in out
    line(out, "skip", "pause")

    # SELECT back, no USAGE on the sequences: the inserts of finish_call, the dead-letter
    # consumer's notifications and the admin audit would fail
    as_owner(
        own_database,
        f"GRANT SELECT ON fleet_pauses TO {role}",
        f"REVOKE USAGE ON ALL SEQUENCES IN SCHEMA public FROM {role}",
    )
    code, out = run("check", "--role", "worker", db=limited_role)
    assert code == 1
    grants = line(out, "FAIL", "privileges")
    assert "USAGE on sequence fulfillment_logs_id_seq" in grants
    assert "USAGE on sequence admin_notifications_id_seq" in grants
    assert "admin_audit" not in grants, "the worker processes never write the admin audit"
    assert "not paused" in line(out, "info", "pause")

    as_owner(own_database, f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
    code, out = run("check", db=limited_role)
    assert code == 0
    assert f"the database role '{role}' may run the statements of" in line(out, "ok", "privileges")
