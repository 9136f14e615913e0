"""Versioned migrations on real PostgreSQL: a fresh install and every upgrade path end with the
same catalog; each step's reverse gives back the catalog of the version below, with data in the
tables; a failing step leaves the version before it; two runs at once queue on the lock; drift
(a step edited, a schema changed by hand) is found and refused."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from db.catalog import Snapshot, snapshot
from db.databases import create_database
from db.migrate import (
    MIGRATION_LOCK,
    REQUIRED_VERSION,
    Step,
    load_steps,
    migrate,
    parse_version,
    require_schema,
    status,
)
from fulfillment.domain.errors import (
    MigrationError,
    SchemaDrift,
    SchemaTooOld,
    UnknownSchemaVersion,
)
from tests.conftest import ADMIN_URL
from tests.unit.test_migration_steps import ALLOWED_REWRITES

pytestmark = pytest.mark.integration

STEPS = load_steps()
LATEST = len(STEPS)
#: the newest step that builds an index CONCURRENTLY (the cut-off tests below)
CONCURRENT = next(s for s in reversed(STEPS) if s.up_concurrently)
NewDatabase = Callable[[], str]
FULFILLMENT = str(Path(sys.executable).with_name("fulfillment"))


@pytest.fixture
def new_database() -> Iterator[NewDatabase]:
    """Empty databases on demand, all dropped at the end."""
    names: list[str] = []

    def make() -> str:
        names.append(f"fulfillment_mig_{uuid.uuid4().hex[:10]}")
        return create_database(ADMIN_URL, names[-1])

    yield make
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # ours: hex only


def catalog(url: str) -> Snapshot:
    with psycopg.connect(url) as conn:
        return snapshot(conn)


def run_sql(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql.encode() if not params else sql, params or None)  # type: ignore[call-overload]
        return cur.fetchall() if cur.description else []


def built_to(new_database: NewDatabase, version: int) -> Snapshot:
    """The catalog of a database moved step by step from empty to `version` (never through
    schema.sql: an empty database migrated to the latest version is a fresh install)."""
    url = new_database()
    migrate(url, to=min(version, LATEST - 1))
    if version == LATEST:
        assert migrate(url).applied[-1].how == "applied"
    return catalog(url)


def add_data(url: str) -> None:
    """Rows in every table the fleet has at the database's version."""
    oid = uuid.uuid4()
    run_sql(
        url,
        "INSERT INTO orders (id, phone_number, network, size_gb, fulfillment_status, "
        "fulfillment_attempts, vendor_transaction_id) VALUES (%s, '0241234567', 'at-ishare', 2, "
        "'success', 1, 'tx-1')",
        (oid,),
    )
    run_sql(
        url,
        "INSERT INTO fulfillment_logs (order_id, network, status, attempt_number, max_attempts) "
        "VALUES (%s, 'at-ishare', 'success', 1, 3)",
        (oid,),
    )
    run_sql(
        url,
        "INSERT INTO admin_audit (actor, action, order_id) VALUES ('ama', 'retry', %s)",
        (oid,),
    )
    if status(url).version >= 2:
        run_sql(
            url,
            "INSERT INTO fleet_pauses (scope, reason, paused_by) VALUES ('mtn', 'test', 'ama') "
            "ON CONFLICT DO NOTHING",
        )


def rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    return {
        "orders": run_sql(url, "SELECT * FROM orders ORDER BY id"),
        "fulfillment_logs": run_sql(url, "SELECT * FROM fulfillment_logs ORDER BY id"),
        "admin_audit": run_sql(url, "SELECT * FROM admin_audit ORDER BY id"),
    }


# -- one schema, whichever way it was reached ------------------------------------------------


def test_a_fresh_install_is_schema_sql_with_every_step_recorded(new_database: NewDatabase) -> None:
    url = new_database()
    said: list[str] = []
    after = migrate(url, say=said.append)
    assert after.version == LATEST and after.exit_code == 0
    assert any("fresh install" in line for line in said)
    assert [a.how for a in after.applied] == ["fresh install"] * LATEST
    again = migrate(url, say=said.append)
    assert again.version == LATEST and said[-1].endswith("nothing to do")


@pytest.mark.parametrize("start", range(LATEST))
def test_an_upgrade_from_every_earlier_version_ends_like_a_fresh_install(
    new_database: NewDatabase, start: int
) -> None:
    fresh = built_to(new_database, LATEST)
    fresh_url = new_database()
    migrate(fresh_url)  # schema.sql
    assert catalog(fresh_url) == fresh, "schema.sql and the steps disagree"
    url = new_database()
    migrate(url, to=start)
    add_data(url) if start else None
    migrate(url)
    assert catalog(url) == fresh
    assert status(url).exit_code == 0


def test_a_database_of_the_schema_before_versions_is_adopted(new_database: NewDatabase) -> None:
    url = new_database()
    run_sql(url, STEPS[0].up)  # what the release before versioned migrations applied
    add_data(url)
    before = status(url)
    assert before.unversioned and before.version == 0 and before.exit_code == 1
    data = rows(url)
    after = migrate(url)
    assert [a.how for a in after.applied] == ["adopted"] + ["applied"] * (LATEST - 1)
    assert catalog(url) == built_to(new_database, LATEST)
    assert rows(url) == data


# -- the way back ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", range(LATEST, 1, -1))
def test_each_reverse_step_gives_back_the_version_below_with_the_data(
    new_database: NewDatabase, version: int
) -> None:
    url = new_database()
    migrate(url, to=version)
    add_data(url)
    data = rows(url)
    down = migrate(url, to=version - 1)
    assert down.version == version - 1
    assert catalog(url) == built_to(new_database, version - 1)
    assert rows(url) == data  # the reverse of a step never touches orders' rows or the logs
    assert status(url).exit_code == 1  # steps pending again, no drift
    migrate(url, to=version)
    assert catalog(url) == built_to(new_database, version)
    assert rows(url) == data


def test_a_rollback_of_several_steps_and_forward_again(new_database: NewDatabase) -> None:
    url = new_database()
    migrate(url)
    said: list[str] = []
    migrate(url, to=1, say=said.append)
    assert [line.split(" (")[0] for line in said[:-1]] == [
        f"reversed {s.label} {s.name}" for s in reversed(STEPS[1:])
    ]
    assert status(url).version == 1
    migrate(url)
    assert catalog(url) == built_to(new_database, LATEST)


def test_to_an_unknown_version_is_a_clear_error(new_database: NewDatabase) -> None:
    for text in ("9", "x", "-1", "0002_not_its_name", "", f"0000_{STEPS[-1].name}", "\u0663"):
        with pytest.raises(UnknownSchemaVersion, match="unknown schema version"):
            parse_version(text, STEPS)
    assert parse_version("0002", STEPS) == 2
    assert parse_version(f"0002_{STEPS[1].name}", STEPS) == 2
    assert parse_version("0", STEPS) == 0
    url = new_database()
    migrate(url)
    cli = subprocess.run(
        [FULFILLMENT, "migrate", "--to", "42"],
        env=_env(url),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2
    assert "unknown schema version '42'" in cli.stderr and "0001 baseline" in cli.stderr
    assert status(url).version == LATEST  # nothing moved


def test_a_database_ahead_of_the_code_is_left_alone(new_database: NewDatabase) -> None:
    """An older release (a host not yet upgraded, or rolled back) never undoes what a newer
    one applied: its migrate has nothing to do, and --to refuses."""
    url = new_database()
    newer = Step(version=LATEST + 1, name="newer", up="CREATE TABLE newer (id int);",
                 down="DROP TABLE newer;")  # fmt: skip
    migrate(url, steps=(*STEPS, newer))
    said: list[str] = []
    assert migrate(url, say=said.append).version == LATEST + 1
    assert "ahead of this code: nothing to do" in said[-1]
    assert status(url).exit_code == 0 and status(url).ahead
    with pytest.raises(MigrationError, match="newer than this code knows"):
        migrate(url, to=1)
    assert status(url).version == LATEST + 1


# -- a step that fails -----------------------------------------------------------------------


def test_a_step_failing_half_way_leaves_the_version_before_it(new_database: NewDatabase) -> None:
    url = new_database()
    migrate(url)
    add_data(url)
    bad = Step(
        version=LATEST + 1,
        name="half_way",
        up="CREATE TABLE half_done (id int);\nALTER TABLE orders ADD COLUMN half int;\n"
        "SELECT 1 / 0;",
        down="DROP TABLE half_done;",
    )
    before = catalog(url)
    with pytest.raises(MigrationError, match=r"step .* half_way failed.*stays at the version"):
        migrate(url, steps=(*STEPS, bad))
    assert status(url).version == LATEST
    assert catalog(url) == before  # nothing of the step is left
    assert status(url, (*STEPS, bad)).exit_code == 1  # pending, no drift


def test_an_invalid_index_of_a_failed_concurrent_build_is_rebuilt(
    new_database: NewDatabase,
) -> None:
    url = new_database()
    migrate(url)
    for _ in range(2):  # the same phone twice: a unique index build fails part way
        run_sql(
            url,
            "INSERT INTO orders (id, phone_number, network) VALUES (%s, '0240000000', 'mtn')",
            (uuid.uuid4(),),
        )
    step = Step(
        version=LATEST + 1,
        name="unique_phone",
        up="CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS orders_phone_uniq "
        "ON orders (phone_number)",
        down="DROP INDEX CONCURRENTLY IF EXISTS orders_phone_uniq",
        up_concurrently=True,
        down_concurrently=True,
    )
    steps = (*STEPS, step)
    with pytest.raises(MigrationError, match="unique_phone failed"):
        migrate(url, steps=steps)
    left = status(url, steps)
    assert left.version == LATEST and left.exit_code == 1
    assert left.leftovers and "orders_phone_uniq" in left.leftovers[0]
    assert not left.drift  # an invalid index of a pending step is not drift
    run_sql(url, "DELETE FROM orders WHERE network = 'mtn'")
    said: list[str] = []
    after = migrate(url, steps=steps, say=said.append)
    assert after.version == LATEST + 1 and after.exit_code == 0
    assert any("dropping invalid index orders_phone_uniq" in line for line in said)
    valid = run_sql(
        url,
        "SELECT x.indisvalid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE i.relname = 'orders_phone_uniq'",
    )
    assert valid == [(True,)]


# -- two hosts at once -----------------------------------------------------------------------


def test_a_second_migrate_waits_for_the_lock_then_finds_nothing_to_do(
    new_database: NewDatabase,
) -> None:
    url = new_database()
    migrate(url, to=1)
    slow = replace(STEPS[1], up="SELECT pg_sleep(1.5);\n" + STEPS[1].up)
    steps = (STEPS[0], slow, *STEPS[2:])
    first_said: list[str] = []
    second_said: list[str] = []
    first = threading.Thread(target=lambda: migrate(url, steps=steps, say=first_said.append))
    first.start()
    _wait_for_lock_holder(url)
    second_started = time.monotonic()
    result = migrate(url, steps=steps, say=second_said.append)
    waited = time.monotonic() - second_started
    first.join(timeout=30)
    assert second_said[0].startswith("waiting for another migration to finish")
    assert second_said[-1] == f"database at version {LATEST:04d}: nothing to do"
    assert result.version == LATEST and result.exit_code == 0
    assert waited > 0.5
    assert sum(line.startswith("applied") for line in first_said) == LATEST - 1


def test_the_cli_waits_for_a_held_lock_and_exits_0(new_database: NewDatabase) -> None:
    url = new_database()
    migrate(url)
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        cli = subprocess.Popen(
            [FULFILLMENT, "migrate"],
            env=_env(url),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        assert cli.poll() is None  # still waiting
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        out, _ = cli.communicate(timeout=60)
    assert cli.returncode == 0
    assert out.startswith("waiting for another migration") and "nothing to do" in out


def _wait_for_lock_holder(url: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        held = run_sql(
            url,
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = %s",
            (MIGRATION_LOCK,),
        )
        if held:
            return
        time.sleep(0.02)
    raise AssertionError("the first migrate never took the lock")


# -- drift -----------------------------------------------------------------------------------


def test_a_step_edited_after_it_was_applied_is_drift(new_database: NewDatabase) -> None:
    url = new_database()
    migrate(url)
    edited = replace(STEPS[1], up=STEPS[1].up + "\nCREATE INDEX x ON fleet_pauses (reason);")
    steps = (STEPS[0], edited, *STEPS[2:])
    found = status(url, steps)
    assert found.exit_code == 2
    assert "0002 fleet_pauses was edited after it was applied" in found.edited[0]
    with pytest.raises(SchemaDrift, match="edited after it was applied"):
        migrate(url, steps=steps)
    with pytest.raises(SchemaDrift):
        migrate(url, steps=steps, accept_drift=True)  # a file edit is never accepted


def test_a_schema_changed_by_hand_is_drift_until_accepted(new_database: NewDatabase) -> None:
    url = new_database()
    migrate(url, to=LATEST - 1)
    run_sql(url, "ALTER TABLE admin_audit ADD COLUMN ticket text")
    run_sql(url, "DROP INDEX admin_audit_created_at_idx")
    found = status(url)
    assert found.exit_code == 2
    assert any(line.startswith("unexpected column admin_audit.ticket") for line in found.drift)
    assert any(line.startswith("missing index admin_audit_created_at_idx") for line in found.drift)
    with pytest.raises(SchemaDrift, match="nothing was changed"):
        migrate(url)
    assert status(url).version == LATEST - 1
    cli = subprocess.run(
        [FULFILLMENT, "migrate", "--status"],
        env=_env(url),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2 and "drift: unexpected column admin_audit.ticket" in cli.stdout
    after = migrate(url, accept_drift=True)
    assert after.version == LATEST and after.exit_code == 0


def test_status_exit_codes(new_database: NewDatabase) -> None:
    url = new_database()
    assert status(url).exit_code == 1  # empty: everything pending
    migrate(url, to=1)
    assert status(url).exit_code == 1
    migrate(url)
    assert status(url).exit_code == 0
    lines = status(url).lines()
    assert lines[0].startswith(f"database at version {LATEST:04d}")
    assert [line.split()[:2] for line in lines[1:]] == [["applied", s.label] for s in STEPS]


# -- the code's own minimum ------------------------------------------------------------------


def test_code_refuses_a_schema_older_than_it_needs(new_database: NewDatabase) -> None:
    url = new_database()
    migrate(url, to=REQUIRED_VERSION - 1)
    with pytest.raises(SchemaTooOld, match="run `fulfillment migrate` first"):
        require_schema(url)
    migrate(url, to=REQUIRED_VERSION)
    assert require_schema(url) == REQUIRED_VERSION


def _env(url: str) -> dict[str, str]:
    import os

    return {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "DATABASE_URL": url,
        "REDIS_URL": "redis://127.0.0.1:1/0",  # never touched by migrate
    }


# -- what drift is, in a database the platform shares ---------------------------------------


def test_what_the_platform_adds_beside_the_fleet_is_not_drift(new_database: NewDatabase) -> None:
    url = new_database()
    migrate(url)
    run_sql(url, "CREATE TABLE payments (id int PRIMARY KEY)")
    run_sql(url, "ALTER TABLE orders ADD COLUMN coupon text")
    run_sql(url, "CREATE INDEX orders_coupon_idx ON orders (coupon)")
    run_sql(url, "CREATE FUNCTION platform_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    run_sql(url, "CREATE EXTENSION IF NOT EXISTS pg_trgm")
    assert status(url).drift == ()
    assert status(url).exit_code == 0


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("ALTER TABLE fulfillment_logs DISABLE TRIGGER fulfillment_logs_append_only",
         "trigger fulfillment_logs.fulfillment_logs_append_only"),
        ("ALTER TABLE orders ALTER COLUMN fulfillment_status SET DEFAULT 'processing'",
         "column orders.fulfillment_status"),
        ("DROP INDEX orders_created_idx", "index orders_created_idx"),
        ("ALTER TABLE admin_audit ENABLE ROW LEVEL SECURITY", "table admin_audit"),
        ("ALTER TABLE fleet_pauses ALTER COLUMN reason TYPE text COLLATE \"C\"",
         "column fleet_pauses.reason"),
        ("ALTER SEQUENCE fulfillment_logs_id_seq INCREMENT BY 100",
         "sequence fulfillment_logs_id_seq"),
        ("ALTER TABLE vendor_callbacks SET UNLOGGED", "table vendor_callbacks"),
        ("CREATE INDEX by_hand ON admin_audit (actor)", "index by_hand"),
        ("CREATE OR REPLACE FUNCTION fulfillment_logs_append_only() RETURNS trigger "
         "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$", "function"),
    ],
)  # fmt: skip
def test_a_change_by_hand_to_what_the_fleet_owns_is_drift(
    new_database: NewDatabase, change: str, named: str
) -> None:
    url = new_database()
    migrate(url)
    run_sql(url, change)
    found = status(url)
    assert found.exit_code == 2
    assert any(named in line for line in found.drift), found.drift


def test_the_search_path_never_moves_the_fleet_out_of_public(new_database: NewDatabase) -> None:
    url = new_database()
    run_sql(url, "CREATE SCHEMA postgres")  # "$user", first on the default search path
    run_sql(url, "CREATE FUNCTION postgres.ghana_msisdn(phone text) RETURNS text "
                 "LANGUAGE sql AS 'SELECT phone'")  # fmt: skip
    migrate(url)
    assert run_sql(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'postgres'") == [(0,)]
    assert status(url).exit_code == 0
    assert migrate(url).version == LATEST
    assert status(url).drift == ()


# -- a CONCURRENTLY step cut off -------------------------------------------------------------


def test_an_index_built_but_not_recorded_is_recorded_by_the_next_run(
    new_database: NewDatabase,
) -> None:
    """The client died (a killed deploy job) after the server finished the build."""
    url = new_database()
    migrate(url, to=CONCURRENT.version - 1)
    run_sql(url, CONCURRENT.up)  # the build, without its record
    found = status(url)
    assert found.version == CONCURRENT.version - 1 and not found.drift and found.exit_code == 1
    assert found.leftovers and "built, not recorded yet" in found.leftovers[0]
    assert migrate(url).version == LATEST
    assert catalog(url) == built_to(new_database, LATEST)


def test_an_index_left_invalid_by_a_cut_off_reverse_is_settled(new_database: NewDatabase) -> None:
    """DROP INDEX CONCURRENTLY cancelled part-way leaves the index invalid, the step still
    recorded: neither direction may refuse, and going up builds it again."""
    url = new_database()
    migrate(url)
    (index,) = CONCURRENT.indexes_built_concurrently()
    run_sql(  # what a cancelled DROP INDEX CONCURRENTLY leaves (as a superuser can show it)
        url,
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
        (index,),
    )
    found = status(url)
    assert found.version == LATEST and not found.drift and found.exit_code == 1
    assert index in found.leftovers[0]
    said: list[str] = []
    assert migrate(url, say=said.append).exit_code == 0
    assert any("building it again" in line for line in said)
    assert catalog(url) == built_to(new_database, LATEST)
    run_sql(url, "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
            (index,))  # fmt: skip
    below = CONCURRENT.version - 1
    assert migrate(url, to=below).version == below
    assert catalog(url) == built_to(new_database, below)


# -- orders' rows are never rewritten --------------------------------------------------------


#: 0004's one allowed rewrite (tests/unit/test_migration_steps.py says why): the rows of
#: networks no fleet served that the old constant default made 'pending', never touched
STALE_PENDING = (
    "SELECT id FROM orders WHERE fulfillment_status = 'pending' "
    "AND network IS DISTINCT FROM 'at-ishare' AND fulfillment_attempts = 0 "
    "AND last_enqueued_at IS NULL AND claim_token IS NULL"
)


@pytest.mark.parametrize("step", STEPS[1:], ids=lambda s: s.label)
def test_a_step_and_its_reverse_never_rewrite_orders(new_database: NewDatabase, step: Step) -> None:
    """The same heap file and the same row versions before and after: nothing rewrote the
    table, nor updated a row (a default that needs a rewrite, an UPDATE, a type change)."""
    url = new_database()
    migrate(url, to=step.version - 1)
    add_data(url)
    for _ in range(20):
        run_sql(url, "INSERT INTO orders (id, network) VALUES (%s, 'mtn')", (uuid.uuid4(),))

    def heap() -> tuple[object, ...]:
        return (
            run_sql(url, "SELECT pg_relation_filenode('orders')")[0],
            run_sql(url, "SELECT id, xmin::text FROM orders ORDER BY id"),
        )

    before = heap()
    stale = {oid for (oid,) in run_sql(url, STALE_PENDING)}
    migrate(url, to=step.version)
    if step.label in ALLOWED_REWRITES:  # 0004: only the rows its rule names, in place
        after = heap()
        old_rows, new_rows = dict(before[1]), dict(after[1])  # type: ignore[call-overload]
        assert after[0] == before[0] and old_rows.keys() == new_rows.keys()
        assert {oid for oid in new_rows if new_rows[oid] != old_rows[oid]} == stale
        assert len(stale) >= 20 and run_sql(url, STALE_PENDING) == []
        before = after
    assert heap() == before
    migrate(url, to=step.version - 1)
    assert heap() == before


def test_drift_with_an_invalid_index_is_never_accepted(new_database: NewDatabase) -> None:
    url = new_database()
    migrate(url)
    add_data(url)
    add_data(url)  # the same actor twice: a unique index build fails and leaves it invalid
    with pytest.raises(psycopg.errors.UniqueViolation):
        run_sql(url, "CREATE UNIQUE INDEX CONCURRENTLY by_hand ON admin_audit (actor)")
    assert any("by_hand" in line and "(INVALID)" in line for line in status(url).drift)
    with pytest.raises(SchemaDrift, match="invalid indexes"):
        migrate(url, accept_drift=True)
    run_sql(url, "DROP INDEX by_hand")
    assert status(url).exit_code == 0


def test_removing_the_fleet_needs_a_yes(new_database: NewDatabase) -> None:
    url = new_database()
    migrate(url)
    cli = subprocess.run(
        [FULFILLMENT, "migrate", "--to", "0"],
        env=_env(url),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2 and "add --yes" in cli.stderr
    assert status(url).version == LATEST


def test_status_cannot_tell_when_postgresql_is_away() -> None:
    cli = subprocess.run(
        [FULFILLMENT, "migrate", "--status"],
        env=_env("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2"),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 4, cli.stderr
    assert "cannot tell the schema version" in cli.stderr and "Traceback" not in cli.stderr
