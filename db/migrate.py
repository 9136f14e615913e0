"""Versioned migrations: move a database to the code's schema version, or back to an earlier one.

The steps are db/migrations/NNNN_name.sql, each an `-- migrate:up` and a `-- migrate:down`
section. A database records the steps applied in `fulfillment_schema_migrations`, with a
checksum of each step's up section and the catalog (db/catalog.py) as it was right after the
step, so that a step edited after it was applied, or a schema changed by hand, shows as drift.

- An empty database gets schema.sql (the fresh install) and every step is recorded as applied.
- A database that holds the fleet (or a platform's orders) but no version table, created by
  the schema.sql before versions existed, is adopted: step 1 is that schema.sql, idempotent.
- Each step runs in its own transaction with its record, so a step that fails half-way
  leaves the database at the version before it. A section marked `concurrently` (one
  statement: CREATE / DROP INDEX CONCURRENTLY, which cannot run in a transaction) runs on its
  own and is recorded after; an invalid index left by a failed build is dropped and built
  again on the next run.
- One run holds a session-level advisory lock from start to end: a second `migrate` started
  meanwhile (another host deploying) waits, then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Final

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from db.catalog import MIGRATIONS_TABLE, Snapshot, drift, snapshot
from fulfillment.domain.errors import (
    MigrationError,
    SchemaDrift,
    SchemaTooOld,
    StoreError,
    UnknownSchemaVersion,
)

# The root schema.sql, shipped in the package as db/schema.sql (a symlink in the checkout).
SCHEMA_FILE = files("db").joinpath("schema.sql")
MIGRATIONS = files("db").joinpath("migrations")
MIGRATION_LOCK = 0x41_54_49_53  # "ATIS"; the lock key of every release's migrate
#: The oldest schema version this code runs on: its workers, web process and reconciler
#: refuse to start on an older one. It needs version 5 (the outboxes: the statements that
#: record an outcome write customer_sms and platform_events rows) and what came before it
#: (version 4's fleet_networks: the claim, the sweep and the stats read the networks served;
#: version 2's fleet_pauses, read by claim_order).
REQUIRED_VERSION = 5
#: A transactional step waits this long for a table lock, then gives up and tries again, so
#: that a long transaction on orders does not queue every other query behind the ALTER.
LOCK_TIMEOUT_S = 5.0
LOCK_TRIES = 5
#: Builds of a CONCURRENTLY step a deadlock may cancel before the run gives up.
CONCURRENT_TRIES = 3
#: How often a migrate that found the migration lock taken tries it again.
LOCK_POLL_S = 0.25

Say = Callable[[str], None]
Conn = psycopg.Connection[tuple[object, ...]]

_SECTION = re.compile(r"^--\s*migrate:(up|down)\b(.*)$", re.MULTILINE)
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$", re.ASCII)
_VERSION = re.compile(r"(\d{1,4})(?:_([a-z0-9_]+))?", re.ASCII)
_CONCURRENT_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I
)


@dataclass(frozen=True, slots=True)
class Step:
    version: int
    name: str
    up: str
    down: str
    up_concurrently: bool = False
    down_concurrently: bool = False

    @property
    def label(self) -> str:
        return version_label(self.version)

    @property
    def checksum(self) -> str:
        """Of the up section, what the recorded catalog came from (the down may be fixed)."""
        return hashlib.sha256(self.up.strip().encode()).hexdigest()

    def indexes_built_concurrently(self) -> list[str]:
        return _CONCURRENT_INDEX.findall(self.up) if self.up_concurrently else []


@dataclass(frozen=True, slots=True)
class Applied:
    version: int
    name: str
    checksum: str
    how: str
    applied_at: datetime
    applied_by: str
    catalog: Snapshot = field(repr=False)

    @property
    def label(self) -> str:
        return version_label(self.version)


@dataclass(frozen=True, slots=True)
class Status:
    """Where a database stands against the code's steps."""

    code_version: int
    applied: tuple[Applied, ...]
    pending: tuple[Step, ...]
    #: steps whose file changed after they were applied
    edited: tuple[str, ...] = ()
    #: the catalog's differences from what the last step recorded (changed by hand)
    drift: tuple[str, ...] = ()
    #: invalid indexes left by a failed CONCURRENTLY build, rebuilt by the next run
    leftovers: tuple[str, ...] = ()
    #: the fleet's tables exist but were never versioned (adopted as step 1 by migrate)
    unversioned: bool = False

    @property
    def version(self) -> int:
        return max((a.version for a in self.applied), default=0)

    @property
    def ahead(self) -> bool:
        """Migrated by newer code than this: fine, a newer schema keeps older code working."""
        return self.version > self.code_version

    @property
    def exit_code(self) -> int:
        """0: at the code's version (or ahead); 1: steps pending, or an index of a step cut
        off to settle; 2: drift."""
        if self.edited or self.drift:
            return 2
        return 1 if self.pending or self.leftovers else 0

    def lines(self) -> list[str]:
        out = [
            f"database at version {version_label(self.version)}; this code's version is "
            f"{version_label(self.code_version)} (it needs at least "
            f"{version_label(REQUIRED_VERSION)})"
        ]
        for a in self.applied:
            out.append(
                f"  applied  {a.label}  {a.name:<24} {a.applied_at:%Y-%m-%d %H:%M:%S%z}  "
                f"{a.how} by {a.applied_by}"
            )
        for s in self.pending:
            out.append(f"  pending  {s.label}  {s.name}")
        if self.unversioned:
            out.append(
                "  (no version recorded: created before versioned migrations; "
                "`fulfillment migrate` adopts it as version 0001)"
            )
        if self.ahead:
            out.append("  (the database is ahead of this code: migrated by a newer release)")
        out += [f"  leftover {line}" for line in self.leftovers]
        out += [f"  drift: {line}" for line in (*self.edited, *self.drift)]
        if self.drift:
            out.append(
                "  (changed by hand since its last step; `fulfillment migrate --accept-drift` "
                "records the schema as it is, once someone has checked it)"
            )
        return out


def version_label(version: int) -> str:
    return f"{version:04d}"


# -- the steps ------------------------------------------------------------------------------


def load_steps(directory: Traversable = MIGRATIONS) -> tuple[Step, ...]:
    steps = [
        parse_step(entry.name, entry.read_text(encoding="utf-8"))
        for entry in directory.iterdir()
        if entry.name.endswith(".sql")
    ]
    steps.sort(key=lambda s: s.version)
    for expected, step in enumerate(steps, start=1):
        if step.version != expected:
            raise MigrationError(
                f"migration steps must be numbered 1, 2, 3...: found {step.label} "
                f"where {version_label(expected)} was expected"
            )
    return tuple(steps)


def parse_step(filename: str, text: str) -> Step:
    match = _FILE.match(filename)
    if match is None:
        raise MigrationError(f"{filename}: a step is named NNNN_name.sql (lower case)")
    marks = list(_SECTION.finditer(text))
    if [m.group(1) for m in marks] != ["up", "down"]:
        raise MigrationError(f"{filename}: needs '-- migrate:up' then '-- migrate:down'")
    up = text[marks[0].end() : marks[1].start()].strip()
    down = text[marks[1].end() :].strip()
    flags = [m.group(2).split() for m in marks]
    for flag in flags:
        if set(flag) - {"concurrently"}:
            raise MigrationError(f"{filename}: unknown section flag {flag}")
    step = Step(
        version=int(match.group(1)),
        name=match.group(2),
        up=up,
        down=down,
        up_concurrently="concurrently" in flags[0],
        down_concurrently="concurrently" in flags[1],
    )
    for section, concurrent in ((up, step.up_concurrently), (down, step.down_concurrently)):
        if not _statements(section):
            raise MigrationError(f"{filename}: an empty section")
        if concurrent and len(_statements(section)) != 1:
            raise MigrationError(
                f"{filename}: a concurrently section is one statement (it runs outside a "
                "transaction, so it must be all or nothing by itself)"
            )
    return step


def _statements(section: str) -> list[str]:
    code = "\n".join(line for line in section.splitlines() if not line.strip().startswith("--"))
    return [part for part in code.split(";") if part.strip()]


def parse_version(text: str, steps: Sequence[Step]) -> int:
    """'3', '0003' or '0003_orders_waiting_idx' as --status prints it; 0 is no fleet schema."""
    known = ", ".join(["0000 (no fleet schema)", *(f"{s.label} {s.name}" for s in steps)])
    match = _VERSION.fullmatch(text.strip())
    version = int(match.group(1)) if match else -1
    name = match.group(2) if match else None
    if not 0 <= version <= len(steps) or (
        name is not None and (version == 0 or steps[version - 1].name != name)
    ):
        raise UnknownSchemaVersion(f"unknown schema version {text!r}; known: {known}")
    return version


# -- reading where a database stands -------------------------------------------------------


def status(database_url: str, steps: Sequence[Step] | None = None) -> Status:
    steps = load_steps() if steps is None else tuple(steps)
    try:
        with _connect(database_url) as conn:
            return _status(conn, steps)
    except psycopg.Error as exc:
        raise StoreError(f"cannot read the schema version: {exc}") from exc


def require_schema(database_url: str, minimum: int = REQUIRED_VERSION) -> int:
    """The database's version, or SchemaTooOld naming `fulfillment migrate`."""
    try:
        with _connect(database_url) as conn:
            version = _version(conn)
    except psycopg.Error as exc:
        raise StoreError(f"cannot read the schema version: {exc}") from exc
    if version < minimum:
        raise SchemaTooOld(
            f"the database is at schema version {version_label(version)} and this code needs "
            f"{version_label(minimum)} or newer: run `fulfillment migrate` first (deploy order: "
            "migrate, then upgrade the hosts one by one)"
        )
    return version


def _version(conn: Conn) -> int:
    if not _has_table(conn, MIGRATIONS_TABLE):
        return 0
    row = conn.execute(
        "SELECT coalesce(max(version), 0) FROM fulfillment_schema_migrations"
    ).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def _status(conn: Conn, steps: Sequence[Step]) -> Status:
    applied = _applied(conn)
    done = {a.version for a in applied}
    pending = tuple(s for s in steps if s.version not in done)
    by_version = {s.version: s for s in steps}
    edited = tuple(
        f"step {a.label} {a.name} was edited after it was applied (checksum differs): "
        "restore the file as it was, and add a new step instead"
        for a in applied
        if a.version in by_version and by_version[a.version].checksum != a.checksum
    )
    current = snapshot(conn)
    # The indexes of CONCURRENTLY steps that a run cut off may have left in any state: not
    # built, built but not recorded (the server finished the build after the client died),
    # invalid (a build or a reverse that failed). They are the next migrate's to settle, not
    # drift, so they are left out of the comparison on both sides.
    in_flight = _in_flight(current, steps, done)
    restored = bool(applied) and _restored_default(current, applied[-1].catalog, done)
    if restored:
        in_flight = {**in_flight, _STATUS_COLUMN: str(_DEFAULT_DROPPED_IN)}
    found: tuple[str, ...] = ()
    if applied:
        found = tuple(
            drift(
                {k: v for k, v in applied[-1].catalog.items() if k not in in_flight},
                {k: v for k, v in current.items() if k not in in_flight},
            )
        )
    unversioned = not _has_table(conn, MIGRATIONS_TABLE) and (
        _has_table(conn, "fulfillment_logs") or _has_column(conn, "orders", "fulfillment_status")
    )
    return Status(
        code_version=len(steps),
        applied=applied,
        pending=pending,
        edited=edited,
        drift=found,
        leftovers=tuple(
            f"{key}: {current[key]}"
            + (" (built, not recorded yet)" if not current[key].endswith("(INVALID)") else "")
            for key in sorted(in_flight)
            if key in current
            and key != _STATUS_COLUMN
            and (current[key].endswith("(INVALID)") or int(in_flight[key]) not in done)
        )
        + (
            (
                f"{_STATUS_COLUMN}: default 'pending' set again by a previous release's "
                "schema.sql (the next migrate drops it)",
            )
            if restored
            else ()
        ),
        unversioned=unversioned,
    )


#: Step 0004 drops orders.fulfillment_status's constant default (the status trigger decides
#: instead); a host of the previous release running its own schema.sql during a rolling
#: upgrade sets it again. That is not drift: the next migrate drops it again, and meanwhile
#: the trigger reads a 'pending' of a network not served as the default's, not a request.
_STATUS_COLUMN: Final = "column orders.fulfillment_status"
_RESTORED_DEFAULT: Final = "text default 'pending'::text"
_DEFAULT_DROPPED_IN: Final = 4


def _restored_default(current: Snapshot, recorded: Mapping[str, object], done: set[int]) -> bool:
    return (
        _DEFAULT_DROPPED_IN in done
        and current.get(_STATUS_COLUMN) == _RESTORED_DEFAULT
        and recorded.get(_STATUS_COLUMN) == "text"
    )


def _in_flight(current: Snapshot, steps: Sequence[Step], done: set[int]) -> dict[str, str]:
    """{"index NAME": version} for the indexes of pending CONCURRENTLY steps, and for those
    of applied ones that are invalid."""
    found: dict[str, str] = {}
    for step in steps:
        for name in step.indexes_built_concurrently():
            key = f"index {name}"
            if step.version not in done or current.get(key, "").endswith("(INVALID)"):
                found[key] = str(step.version)
    return found


def _applied(conn: Conn) -> tuple[Applied, ...]:
    if not _has_table(conn, MIGRATIONS_TABLE):
        return ()
    rows = conn.execute(
        "SELECT version, name, checksum, how, applied_at, applied_by, catalog "
        "FROM fulfillment_schema_migrations ORDER BY version"
    ).fetchall()
    return tuple(
        Applied(
            version=int(r[0]),  # type: ignore[call-overload]
            name=str(r[1]),
            checksum=str(r[2]),
            how=str(r[3]),
            applied_at=r[4],  # type: ignore[arg-type]
            applied_by=str(r[5]),
            catalog=dict(r[6]),  # type: ignore[call-overload]
        )
        for r in rows
    )


def _has_table(conn: Conn, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{name}",)).fetchone()
    return bool(row and row[0])


def _has_column(conn: Conn, table: str, column: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s AND column_name = %s",
        (table, column),
    ).fetchone()
    return row is not None


# -- moving a database ---------------------------------------------------------------------


def migrate(
    database_url: str,
    *,
    to: int | None = None,
    steps: Sequence[Step] | None = None,
    accept_drift: bool = False,
    schema_file: Traversable = SCHEMA_FILE,
    say: Say | None = None,
) -> Status:
    """Move the database to version `to` (default: the code's), up or down; return where it
    stands after. Raises SchemaDrift (nothing done) when it is not what its version says,
    MigrationError when a step fails (the database stays at the version before it)."""
    steps = load_steps() if steps is None else tuple(steps)
    target = len(steps) if to is None else to
    if not 0 <= target <= len(steps):
        raise UnknownSchemaVersion(f"unknown schema version {to}")
    tell = say or (lambda _line: None)
    try:
        with _connect(database_url) as conn, _migration_lock(conn, tell):
            before = _status(conn, steps)
            conn.execute(_BOOKKEEPING.encode())
            if before.edited:
                raise SchemaDrift(
                    "the database is not what its version says; nothing was changed:\n  "
                    + "\n  ".join(before.edited)
                )
            if not before.ahead and _repair(conn, steps[: min(before.version, target)], tell):
                before = _status(conn, steps)
            if before.drift and not accept_drift:
                raise SchemaDrift(
                    "the database is not what its version says; nothing was changed:\n  "
                    + "\n  ".join(before.drift)
                )
            if before.drift:
                _accept_drift(conn, before, tell)
            if before.ahead and to is not None:
                raise MigrationError(
                    f"the database is at version {version_label(before.version)}, newer than "
                    f"this code knows ({version_label(len(steps))}): move it with the release "
                    "that applied those steps"
                )
            if before.ahead:
                tell(
                    f"database at version {version_label(before.version)}, ahead of this "
                    "code: nothing to do"
                )
                return before
            if before.version == target:
                tell(f"database at version {version_label(target)}: nothing to do")
                return before
            if target > before.version:
                _upgrade(conn, steps, before, target, schema_file, tell)
            else:
                _downgrade(conn, steps, before, target, tell)
            after = _status(conn, steps)
    except psycopg.Error as exc:
        raise StoreError(f"migration failed: {exc}") from exc
    tell(f"database at version {version_label(after.version)}")
    return after


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS fulfillment_schema_migrations (
    version integer PRIMARY KEY CHECK (version > 0),
    name text NOT NULL,
    checksum text NOT NULL,
    how text NOT NULL CHECK (how IN ('applied', 'adopted', 'fresh install')),
    -- the catalog right after this step (db/catalog.py): what drift is measured against
    catalog jsonb NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL,
    note text
)
"""


def _upgrade(
    conn: Conn,
    steps: Sequence[Step],
    before: Status,
    target: int,
    schema_file: Traversable,
    tell: Say,
) -> None:
    if before.version == 0 and target == len(steps) and _is_empty(conn):
        with conn.transaction():
            conn.execute(schema_file.read_text(encoding="utf-8").encode())
            catalog = snapshot(conn)
            for step in steps:
                _record(conn, step, "fresh install", catalog)
        tell(f"fresh install: schema.sql applied, steps 0001..{version_label(target)} recorded")
        return
    adopting = before.unversioned
    for step in steps[before.version : target]:
        started = time.monotonic()
        how = "adopted" if adopting and step.version == 1 else "applied"
        if step.up_concurrently:
            _run_concurrently(conn, step, tell)
            with conn.transaction():
                _record(conn, step, how, snapshot(conn))
        else:
            _in_transaction(
                conn,
                step,
                step.up,
                partial(lambda s, h: _record(conn, s, h, snapshot(conn)), step, how),
            )
        tell(f"{how} {step.label} {step.name} ({(time.monotonic() - started) * 1000:.0f} ms)")


def _downgrade(conn: Conn, steps: Sequence[Step], before: Status, target: int, tell: Say) -> None:
    for step in reversed(steps[target : before.version]):
        started = time.monotonic()

        def forget(step: Step = step) -> None:
            # The version below is now the last: drift is measured from the catalog as this
            # reverse left it (a fresh install recorded only the newest catalog; the tests
            # hold each reverse step to the catalog its version had going up).
            conn.execute(
                "DELETE FROM fulfillment_schema_migrations WHERE version = %s", (step.version,)
            )
            conn.execute(
                "UPDATE fulfillment_schema_migrations SET catalog = %s WHERE version = %s",
                (Jsonb(snapshot(conn)), step.version - 1),
            )

        if step.down_concurrently:
            _execute(conn, step, step.down)
            with conn.transaction():
                forget()
        else:
            _in_transaction(conn, step, step.down, forget)
        tell(f"reversed {step.label} {step.name} ({(time.monotonic() - started) * 1000:.0f} ms)")


def _in_transaction(conn: Conn, step: Step, script: str, then: Callable[[], None]) -> None:
    for tries_left in range(LOCK_TRIES - 1, -1, -1):
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true)", (f"{LOCK_TIMEOUT_S * 1000:.0f}",)
                )
                _execute(conn, step, script)
                then()
        except MigrationError as exc:
            if not isinstance(exc.__cause__, psycopg.errors.LockNotAvailable) or not tries_left:
                raise
            time.sleep(1.0)
        else:
            return


def _repair(conn: Conn, applied: Sequence[Step], tell: Say) -> bool:
    """Build again the invalid index of an applied CONCURRENTLY step (a reverse cut off
    part-way leaves one), drop the status default a previous release set again; True when
    there was something to do."""
    broken = [
        s for s in applied if any(map(partial(_invalid, conn), s.indexes_built_concurrently()))
    ]
    for step in broken:
        tell(f"step {step.label} {step.name}: its index is invalid; building it again")
        _run_concurrently(conn, step, tell)
    recorded = _applied(conn)
    done = {s.version for s in applied}
    if recorded and _restored_default(snapshot(conn), recorded[-1].catalog, done):
        tell("orders.fulfillment_status: dropping the default a previous release set again")
        conn.execute("ALTER TABLE orders ALTER COLUMN fulfillment_status DROP DEFAULT")
        return True
    return bool(broken)


def _invalid(conn: Conn, name: str) -> bool:
    row = conn.execute(
        "SELECT NOT x.indisvalid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE i.relname = %s AND i.relnamespace = 'public'::regnamespace",
        (name,),
    ).fetchone()
    return bool(row and row[0])


def _run_concurrently(conn: Conn, step: Step, tell: Say) -> None:
    for tries_left in range(CONCURRENT_TRIES - 1, -1, -1):
        for name in step.indexes_built_concurrently():
            if _invalid(conn, name):
                tell(f"dropping invalid index {name} left by a failed build")
                conn.execute(
                    sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name))
                )
        try:
            _execute(conn, step, step.up)
        except MigrationError as exc:
            # A session waiting for a lock inside a transaction (a previous release's
            # migrate, blocked in pg_advisory_xact_lock) holds a snapshot the build waits
            # for: PostgreSQL cancels one of the two. Build again once it has gone.
            if not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected) or not tries_left:
                raise
            tell(f"step {step.label} {step.name}: deadlock with another session; trying again")
            time.sleep(1.0)
        else:
            return


def _execute(conn: Conn, step: Step, script: str) -> None:
    try:
        conn.execute(script.encode())  # bytes: a script, no parameters
    except psycopg.Error as exc:
        raise MigrationError(
            f"step {step.label} {step.name} failed ({exc.__class__.__name__}: "
            f"{str(exc).strip()}); the database stays at the version before it"
        ) from exc


def _record(conn: Conn, step: Step, how: str, catalog: Snapshot) -> None:
    conn.execute(
        "INSERT INTO fulfillment_schema_migrations "
        "(version, name, checksum, how, catalog, applied_by) VALUES (%s, %s, %s, %s, %s, %s)",
        (step.version, step.name, step.checksum, how, Jsonb(catalog), _who()),
    )


def _accept_drift(conn: Conn, before: Status, tell: Say) -> None:
    last = before.applied[-1]
    invalid = [k for k, v in snapshot(conn).items() if v.endswith("(INVALID)")]
    if invalid:
        raise SchemaDrift(
            f"refusing to accept a schema with invalid indexes ({', '.join(invalid)}): "
            "drop or rebuild them first"
        )
    with conn.transaction():
        conn.execute(
            "UPDATE fulfillment_schema_migrations SET catalog = %s, note = %s WHERE version = %s",
            (
                Jsonb(snapshot(conn)),
                json.dumps({"drift_accepted_by": _who(), "differences": list(before.drift)}),
                last.version,
            ),
        )
    tell(f"drift accepted at version {last.label}: {len(before.drift)} differences recorded")


def _is_empty(conn: Conn) -> bool:
    return not any(_has_table(conn, t) for t in ("orders", "fulfillment_logs"))


def _who() -> str:
    return f"{socket.gethostname()}"


@contextmanager
def _connect(database_url: str) -> Iterator[Conn]:
    try:
        conn = psycopg.connect(database_url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
    with conn:
        # Everything the fleet has lives in public, and the catalog prints names relative to
        # the search path: pin it, so that a "$user" schema or a name defined earlier on the
        # path never takes the tables nor changes how a definition reads.
        conn.execute("SELECT set_config('search_path', 'public, pg_catalog', false)")
        yield conn


def _try_lock(conn: Conn) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK,)).fetchone()
    return bool(row and row[0])


@contextmanager
def _migration_lock(conn: Conn, tell: Say) -> Iterator[None]:
    """Session-level, held by this connection for the whole run (released when it closes)."""
    if not _try_lock(conn):
        holder = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objid = %s AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())",
            (MIGRATION_LOCK,),
        ).fetchone()
        tell(
            "waiting for another migration to finish"
            + (f" (PostgreSQL backend {holder[0]})" if holder else "")
        )
        # Poll rather than block in pg_advisory_lock: a statement waiting that way holds a
        # snapshot, and the other run's CREATE INDEX CONCURRENTLY waits for every snapshot to
        # end, while this one waits for its lock: a deadlock (found by the test of two runs).
        while not _try_lock(conn):
            time.sleep(LOCK_POLL_S)
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
