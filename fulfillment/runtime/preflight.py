"""Can this host run the fleet? The checks behind `fulfillment check` (the pre-flight before a
deploy) and `fulfillment health` (can it work right now), each written once, each returning a
`Check`: a level, one line saying what is wrong and what to do, and detail lines. The CLI only
prints them.

- settings: the environment parses (each error names its variable); what the host's role
  needs is set (vendor credentials for the worker processes, ADMIN_TOKEN and API_TOKEN for
  the web process); the retry table fits MAX_ATTEMPTS; no embedded development server would
  start (DATABASE_URL and REDIS_URL set).
- postgresql and schema: reachable; the schema version against this code's (behind but
  runnable: a warning; too old or drifted: a failure).
- privileges: the database role may run the statements of the role's processes (SELECT,
  INSERT, UPDATE, DELETE on each table as db/privileges.py lists them): a missing one is a
  failure, named with the GRANT that gives it.
- redis: PING, the broker namespace, its queue depths and live consumers.
- vendor: one signed balance call with a short timeout (401: the key or the secret is wrong).
- pause and circuit: the fleet or a network paused, FULFILLMENT_ENABLED=false, the vendor
  circuit open: said, never a failure; but pauses that cannot be read are one for the worker
  processes (every claim reads them).

Nothing here starts a server, and nothing printed carries a secret: URLs lose their password
(in the user info, in the query, or a libpq key=value string's), and every secret value of the
settings, those passwords included, is replaced by *** in every line before it leaves.
Phone numbers in free text (a pause's reason) are masked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr, ValidationError

from fulfillment.domain.constants import (
    DEFAULT_REDIS_NAMESPACE,
    EXIT_REFUSED,
    FULFILLMENT_QUEUE,
)
from fulfillment.domain.errors import (
    ConfigurationError,
    FulfillmentError,
    RateLimited,
    VendorError,
    VendorServerError,
    VendorUnauthorized,
)
from fulfillment.domain.networks import VENDOR_AGGREGATOR, VENDOR_AT_ISHARE, VENDOR_NAMES
from fulfillment.domain.pause import scope_label
from fulfillment.domain.phone import mask_phones_in_text
from fulfillment.runtime.settings import Settings
from fulfillment.telemetry.logs import duration, passwords_in, url_without_password

if TYPE_CHECKING:
    from db.pause_store import PauseRow
    from fulfillment.vendors.aggregator import AggregatorClient
    from fulfillment.vendors.atishare import AtIshareClient

Role = Literal["worker", "web", "all"]
ROLES: tuple[Role, ...] = ("worker", "web", "all")
#: what a role's processes are (the Procfile's types)
PROCESSES: dict[Role, tuple[str, ...]] = {
    "worker": ("worker", "deadletter", "reconciler", "notify"),
    "web": ("web",),
    "all": ("web", "worker", "deadletter", "reconciler", "notify"),
}
ROLE_PROCESSES: dict[Role, str] = {role: ", ".join(names) for role, names in PROCESSES.items()}
#: the pre-flight's own timeouts: a host that cannot answer within them is not ready
CONNECT_TIMEOUT_S = 3.0
VENDOR_READ_TIMEOUT_S = 5.0
#: a Dramatiq consumer is alive when its heartbeat is this recent (as the metrics count it)
HEARTBEAT_S = 60
#: shorter values are not scrubbed from the lines (they would hit ordinary words)
_SECRET_MIN_CHARS = 8


class Level(StrEnum):
    OK = "ok"
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: `name` is the subject (settings, postgresql, schema, redis, vendor, pause,
    circuit), `message` one line of what was found and what to do."""

    name: str
    level: Level
    message: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Report:
    role: Role
    checks: tuple[Check, ...]

    def count(self, level: Level) -> int:
        return sum(1 for c in self.checks if c.level is level)

    @property
    def ok(self) -> bool:
        return self.count(Level.FAIL) == 0

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else EXIT_REFUSED


# -- the two runs -----------------------------------------------------------------------------


def preflight(role: Role = "all") -> Report:
    """Everything a host needs before its processes start, on the URLs it is configured with:
    an unset DATABASE_URL or REDIS_URL is a failure here (the processes would start embedded
    development servers), never a server started."""
    settings, checks = read_settings()
    if settings is None:
        checks.append(
            Check("postgresql", Level.SKIP, "not checked: the settings above do not parse")
        )
        return _scrubbed(Report(role, tuple(checks)), _secrets_in_environment())
    checks += configuration(settings, role)
    paused_in: str | None = None
    if settings.database_url:
        found = database(settings.database_url)
        checks += found
        if _pauses_readable(found):
            checks.append(privileges(settings.database_url, role))
            paused_in = settings.database_url
    else:
        checks.append(_not_checked("postgresql", "DATABASE_URL"))
    redis_ok = False
    if settings.redis_url:
        redis_check = redis_broker(settings.redis_url, settings.redis_namespace)
        checks.append(redis_check)
        redis_ok = redis_check.level is Level.OK
    else:
        checks.append(_not_checked("redis", "REDIS_URL"))
    checks += _vendor_checks(settings)
    checks += pauses(settings, paused_in, role)
    if redis_ok:
        checks += circuits()
    return _scrubbed(Report(role, tuple(checks)), secrets_of(settings))


def health() -> Report:
    """`fulfillment health`: can this host work now? PostgreSQL and its schema, Redis, the
    vendor, on the URLs its processes resolve (in development the embedded servers, started
    if needed), plus the circuit and the pauses. ConfigurationError when the settings do not
    parse."""
    from fulfillment.runtime import bootstrap

    settings = bootstrap.settings()
    url = bootstrap.database_url()
    found = database(url)
    redis_check = redis_broker(bootstrap.redis_url(), settings.redis_namespace)
    readable = url if _pauses_readable(found) else None
    checks = [*found, redis_check, *_vendor_checks(settings), *pauses(settings, readable)]
    if redis_check.level is Level.OK:
        checks += circuits()
    return _scrubbed(Report("all", tuple(checks)), secrets_of(settings))


# -- settings ---------------------------------------------------------------------------------


def read_settings() -> tuple[Settings | None, list[Check]]:
    """The settings from the environment, or None and one failure per invalid variable."""
    try:
        return Settings(), []
    except ValidationError as exc:
        return None, [
            Check("settings", Level.FAIL, f"{line}: fix it in this host's environment")
            for line in validation_lines(exc)
        ]


def validation_lines(exc: ValidationError) -> list[str]:
    """Pydantic's errors as `VARIABLE: what is wrong`, never with the value given (it may be
    a secret)."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error.get("loc", ()))
        text = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{where.upper()}: {text}" if where else text)
    return lines


def configuration(settings: Settings, role: Role) -> list[Check]:
    """What the role needs, and the settings that contradict each other."""
    checks = [*_servers(settings), *_vendor_settings(settings, role), *_tokens(settings, role)]
    checks += _retry_table(settings)
    if role != "web":
        checks += _worker_sizing(settings)
    if not any(c.level in (Level.FAIL, Level.WARN) for c in checks):
        checks.insert(
            0,
            Check(
                "settings",
                Level.OK,
                f"the environment parses and has what role {role} needs ({ROLE_PROCESSES[role]})",
            ),
        )
    return checks


def _servers(settings: Settings) -> list[Check]:
    out = []
    for variable, product, value in (
        ("DATABASE_URL", "PostgreSQL", settings.database_url),
        ("REDIS_URL", "Redis", settings.redis_url),
    ):
        if not value:
            out.append(
                Check(
                    "settings",
                    Level.FAIL,
                    f"{variable} is unset: every process on this host would start an embedded "
                    f"{product} under {settings.fulfillment_dev_dir}/ (the DEVELOPMENT default, "
                    f"never for production); set {variable} to the fleet's {product}",
                )
            )
    return out


def _routed(settings: Settings) -> set[str]:
    """The vendor connections the networks this host serves route to (none when the
    settings do not parse: the settings check says why)."""
    try:
        return set(settings.routes().values())
    except ConfigurationError:
        return set()


def _vendor_settings(settings: Settings, role: Role) -> list[Check]:
    missing = _vendor_missing(settings)
    if not missing or VENDOR_AT_ISHARE not in _routed(settings):
        return []
    names = ", ".join(missing)
    if role == "web":
        return [
            Check(
                "settings",
                Level.WARN,
                f"{names} unset: the web process serves, but the vendor's webhook answers 503; "
                "set them as on the worker hosts",
            )
        ]
    return [
        Check(
            "settings",
            Level.FAIL,
            f"{names} unset: the workers cannot call the vendor; set the vendor base URL "
            "(with /v1) and credentials",
        )
    ]


def _tokens(settings: Settings, role: Role) -> list[Check]:
    if role == "worker":
        return []
    admin, api = _secret(settings.admin_token), _secret(settings.api_token)
    missing = [n for n, v in (("ADMIN_TOKEN", admin), ("API_TOKEN", api)) if not v.strip()]
    if missing:
        return [
            Check(
                "settings",
                Level.FAIL,
                f"{' and '.join(missing)} unset: the web process refuses to start without "
                "them; set them (or run this check with --role worker on a host that runs no "
                "web process)",
            )
        ]
    if admin == api:
        return [
            Check(
                "settings",
                Level.WARN,
                "ADMIN_TOKEN and API_TOKEN are the same: the platform's token would open the "
                "admin routes; give them different values",
            )
        ]
    return []


def _retry_table(settings: Settings) -> list[Check]:
    retries = settings.max_attempts - 1
    delays = settings.retry_delays
    if len(delays) >= retries:
        return []
    return [
        Check(
            "settings",
            Level.WARN,
            f"MAX_ATTEMPTS={settings.max_attempts} allows {retries} retries but RETRY_DELAYS "
            f"has {len(delays)} delay(s): from the retry after attempt {len(delays) + 1} on, "
            f"the last one ({delays[-1]:g} s) is used again; give RETRY_DELAYS one delay per "
            "retry",
        )
    ]


def _worker_sizing(settings: Settings) -> list[Check]:
    out = []
    call_s = settings.vendor_connect_timeout_s + 2 * settings.vendor_read_timeout_s
    if settings.claim_ttl_s <= 2 * call_s:
        out.append(
            Check(
                "settings",
                Level.WARN,
                f"CLAIM_TTL_S={settings.claim_ttl_s:g} is not well above twice a vendor call's "
                f"longest ({call_s:g} s: VENDOR_CONNECT_TIMEOUT_S + 2 x VENDOR_READ_TIMEOUT_S): "
                "an order could be recovered while its call is under way; raise CLAIM_TTL_S",
            )
        )
    threads = os.environ.get("WORKER_THREADS", "").strip()
    if threads.isdigit() and int(threads) > settings.vendor_max_connections:
        out.append(
            Check(
                "settings",
                Level.WARN,
                f"WORKER_THREADS={threads} is above VENDOR_MAX_CONNECTIONS="
                f"{settings.vendor_max_connections}: threads would wait for a vendor "
                "connection; raise VENDOR_MAX_CONNECTIONS",
            )
        )
    return out


# -- PostgreSQL and the schema ---------------------------------------------------------------


def database(url: str) -> list[Check]:
    """Two checks: PostgreSQL answers, and where its schema stands against this code."""
    from db.migrate import REQUIRED_VERSION, status, version_label

    shown = url_without_password(url)
    try:
        where = status(url)
    except FulfillmentError as exc:
        return [
            Check("postgresql", Level.FAIL, f"{shown}: {_one_line(exc)}"),
            Check("schema", Level.SKIP, "not checked: PostgreSQL did not answer"),
        ]
    except Exception as exc:  # noqa: BLE001 - reported as a line, whatever the driver raised
        return [
            Check(
                "postgresql",
                Level.FAIL,
                f"{shown}: cannot read the schema ({type(exc).__name__}: {_one_line(exc)})",
            ),
            Check("schema", Level.SKIP, "not checked: the database could not be read"),
        ]
    reachable = Check("postgresql", Level.OK, f"{shown} answers")
    have, code = version_label(where.version), version_label(where.code_version)
    need = version_label(REQUIRED_VERSION)
    pending = tuple(f"pending {s.label} {s.name}" for s in where.pending)
    if where.exit_code == 2:
        drift = (*where.edited, *where.drift)
        return [
            reachable,
            Check(
                "schema",
                Level.FAIL,
                f"version {have}, but the database is not what that version says (drift): "
                "find out who changed it; `fulfillment migrate --status` shows it, and "
                "`fulfillment migrate --accept-drift` records it once someone has checked it",
                tuple(f"drift: {line}" for line in drift),
            ),
        ]
    if where.version < REQUIRED_VERSION:
        state = (
            "has no version recorded (created before versioned migrations)"
            if where.unversioned
            else ("has no fleet schema" if where.version == 0 else f"is at version {have}")
        )
        return [
            reachable,
            Check(
                "schema",
                Level.FAIL,
                f"the database {state}; this code needs {need} or newer and refuses to start: "
                "run `fulfillment migrate` (once, from any host)",
                pending,
            ),
        ]
    if where.pending:
        return [
            reachable,
            Check(
                "schema",
                Level.WARN,
                f"version {have}, behind this code's {code} (it needs {need}, so it starts): "
                "run `fulfillment migrate` to finish the upgrade",
                pending + tuple(f"leftover {line}" for line in where.leftovers),
            ),
        ]
    if where.leftovers:
        return [
            reachable,
            Check(
                "schema",
                Level.WARN,
                f"version {have}, but an index build of a step was cut off: run "
                "`fulfillment migrate` to settle it",
                tuple(f"leftover {line}" for line in where.leftovers),
            ),
        ]
    ahead = " (ahead: migrated by a newer release, which this code runs on)" if where.ahead else ""
    return [reachable, Check("schema", Level.OK, f"version {have}, this code's is {code}{ahead}")]


def privileges(url: str, role: Role) -> Check:
    """Whether the database role may run what the role's processes run: each table's
    privileges their statements need, and USAGE on the sequences of those they insert into."""
    from db.privileges import missing_privileges

    processes = PROCESSES[role]
    try:
        grants = missing_privileges(url, processes, connect_timeout_s=CONNECT_TIMEOUT_S)
    except FulfillmentError as exc:
        return Check(
            "privileges",
            Level.FAIL,
            f"the database role's privileges could not be read: {_one_line(exc)}",
        )
    if not grants.missing:
        return Check(
            "privileges",
            Level.OK,
            f"the database role {grants.role!r} may run the statements of "
            f"{ROLE_PROCESSES[role]} on the fleet's tables",
        )
    lacks = ", ".join(m.label for m in grants.missing)
    # claim_order reads orders FOR UPDATE and fleet_pauses: without them no order is worked
    claims = any(
        m.table in ("orders", "fleet_pauses") and "worker" in m.processes for m in grants.missing
    )
    return Check(
        "privileges",
        Level.FAIL,
        f"the database role {grants.role!r} lacks {lacks}: the statements of "
        f"{', '.join(dict.fromkeys(p for m in grants.missing for p in m.processes))} that need "
        "them would fail with permission denied"
        f"{' (workers cannot claim orders)' if claims else ''}; grant them as the tables' "
        "owner (the GRANTs below), then run the check again",
        (
            *(
                f"{m.label}: needed by {', '.join(m.processes)} ({'; '.join(m.why)})"
                for m in grants.missing
            ),
            *grants.grant_statements(),
        ),
    )


def _pauses_readable(found: Sequence[Check]) -> bool:
    """Whether `database` found the schema at REQUIRED_VERSION or newer, as it was recorded
    (the pauses' table is there)."""
    return any(c.name == "schema" and c.level in (Level.OK, Level.WARN) for c in found)


# -- Redis and the broker namespace ---------------------------------------------------------


def redis_broker(url: str, namespace: str) -> Check:
    """PING, then what the namespace holds: the fulfillment queue's depths, live consumers."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    shown = url_without_password(url)
    client = redis.Redis.from_url(
        url,
        socket_timeout=CONNECT_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),  # the default retries a refused connection for seconds
    )
    try:
        client.ping()
        key = f"{namespace}:{FULFILLMENT_QUEUE}"
        pipe = client.pipeline(transaction=False)
        pipe.llen(key)
        pipe.hlen(f"{key}.DQ.msgs")
        pipe.zcard(f"{key}.XQ")
        pipe.time()
        ready, delayed, dead, (now_s, _) = pipe.execute()
        alive = client.zcount(f"{namespace}:__heartbeats__", (now_s - HEARTBEAT_S) * 1000, "+inf")
    except (redis.RedisError, OSError) as exc:
        return Check(
            "redis",
            Level.FAIL,
            f"{shown} does not answer ({type(exc).__name__}: {_one_line(exc)}): start it or fix "
            "REDIS_URL; the fleet carries every message through it",
        )
    finally:
        client.close()
    default = (
        " (the default: the purchase service must publish under the same one)"
        if namespace == DEFAULT_REDIS_NAMESPACE
        else " (the purchase service must publish with REDIS_NAMESPACE set to it too)"
    )
    return Check(
        "redis",
        Level.OK,
        f"{shown} answers PING; broker namespace {namespace!r}{default}",
        (
            f"queue {FULFILLMENT_QUEUE}: {ready} ready, {delayed} delayed, {dead} in Dramatiq's "
            "dead-letter queue",
            f"{alive} Dramatiq consumer(s) with a heartbeat in the last {HEARTBEAT_S} s "
            "(all hosts)",
        ),
    )


# -- the vendor ------------------------------------------------------------------------------


def _vendor_missing(settings: Settings) -> list[str]:
    return [
        name
        for name, value in (
            ("AT_ISHARE_API_URL", settings.at_ishare_api_url),
            ("AT_ISHARE_API_KEY", _secret(settings.at_ishare_api_key)),
            ("AT_ISHARE_API_SECRET", _secret(settings.at_ishare_api_secret)),
        )
        if not value
    ]


def _vendor_configured(settings: Settings) -> bool:
    return not _vendor_missing(settings)


def vendor(settings: Settings, *, read_timeout_s: float = VENDOR_READ_TIMEOUT_S) -> Check:
    """One signed GET /account/balance: the URL, the key, the secret and this host's clock."""
    from fulfillment.vendors.atishare import AtIshareClient

    try:
        base, key, secret = settings.vendor_credentials()
    except ConfigurationError as exc:
        return Check("vendor", Level.FAIL, f"{exc}")
    client = AtIshareClient(
        base,
        key,
        secret,
        connect_timeout_s=min(settings.vendor_connect_timeout_s, CONNECT_TIMEOUT_S),
        read_timeout_s=min(settings.vendor_read_timeout_s, read_timeout_s),
        max_connections=1,
    )
    return _balance_call(
        "vendor",
        client,
        url_without_password(base),
        settings.balance_alert_threshold,
        refused="the signed call (401 UNAUTHORIZED): AT_ISHARE_API_KEY or AT_ISHARE_API_SECRET "
        "is wrong (or this host's clock is more than 300 s off); set the pair the vendor issued",
        url_variable="AT_ISHARE_API_URL",
        threshold_variable="BALANCE_ALERT_THRESHOLD",
        what="the signed balance call",
    )


def aggregator(settings: Settings, *, read_timeout_s: float = VENDOR_READ_TIMEOUT_S) -> Check:
    """GET /wallet with the bearer token: the aggregator's URL and token."""
    from fulfillment.vendors.aggregator import AggregatorClient

    try:
        base, token = settings.aggregator_credentials()
    except ConfigurationError as exc:
        return Check("aggregator", Level.FAIL, f"{exc}")
    client = AggregatorClient(
        base,
        token,
        connect_timeout_s=min(settings.aggregator_connect_timeout_s, CONNECT_TIMEOUT_S),
        read_timeout_s=min(settings.aggregator_read_timeout_s, read_timeout_s),
        max_connections=1,
    )
    return _balance_call(
        "aggregator",
        client,
        url_without_password(base),
        settings.aggregator_balance_alert_threshold,
        refused="the token (401): AGGREGATOR_API_TOKEN is wrong; set the one it issued",
        url_variable="AGGREGATOR_API_URL",
        threshold_variable="AGGREGATOR_BALANCE_ALERT_THRESHOLD",
        what="the wallet call",
    )


def _balance_call(
    name: str,
    client: AtIshareClient | AggregatorClient,
    shown: str,
    threshold: float,
    *,
    refused: str,
    url_variable: str,
    threshold_variable: str,
    what: str,
) -> Check:
    """One balance read of a vendor: what its answer says of our settings."""
    started = time.monotonic()
    try:
        balance = client.balance()
    except VendorUnauthorized:
        return Check(name, Level.FAIL, f"{shown} refused {refused}")
    except RateLimited:
        return Check(
            name,
            Level.WARN,
            f"{shown} answered 429 (rate limited): the credentials were not confirmed; run "
            "the check again in a minute",
        )
    except VendorServerError as exc:
        return Check(
            name,
            Level.FAIL,
            f"{shown} is failing (HTTP {exc.http_status}): the credentials were not "
            "confirmed; the fleet would wait with its circuit open; check again later",
        )
    except VendorError as exc:
        return Check(
            name,
            Level.FAIL,
            f"{shown}: {_one_line(exc)}: check {url_variable} (the base URL, with /v1) and "
            "that this host can reach it",
        )
    finally:
        client.close()
    took_ms = (time.monotonic() - started) * 1000
    line = f"{shown}: {what} answered in {took_ms:.0f} ms; balance {balance:.2f}"
    if balance < threshold:
        return Check(
            name,
            Level.WARN,
            f"{line}, below {threshold_variable} ({threshold:g}): top up the account (an empty "
            "one pauses every purchase through it)",
        )
    return Check(name, Level.OK, line)


def _vendor_checks(settings: Settings) -> list[Check]:
    """The check of each vendor a network this host serves routes to."""
    routed = _routed(settings)
    checks = []
    if VENDOR_AT_ISHARE in routed:
        checks.append(
            vendor(settings)
            if _vendor_configured(settings)
            else Check("vendor", Level.SKIP, "not checked: its settings are missing")
        )
    if VENDOR_AGGREGATOR in routed:
        checks.append(aggregator(settings))
    return checks


# -- pauses and the circuit: said, never a failure (but pauses the workers cannot read) --------


def pauses(settings: Settings, database_url: str | None, role: Role = "all") -> list[Check]:
    """FULFILLMENT_ENABLED, and the runtime pauses (fleet_pauses rows) of the database at
    `database_url` (None: not read, the schema is too old or unreadable). Pauses that cannot
    be read fail a role with workers: their every claim reads them (claim_order)."""
    out = []
    if not settings.fulfillment_enabled:
        out.append(
            Check(
                "pause",
                Level.INFO,
                "FULFILLMENT_ENABLED=false on this host: its producers publish nothing and its "
                "workers leave orders pending; set it to true and restart them to resume",
            )
        )
    if database_url is None:
        return out
    try:
        rows = _stored_pauses(database_url)
    except FulfillmentError as exc:
        if role == "web":
            return [*out, Check("pause", Level.SKIP, f"pauses not read: {_one_line(exc)}")]
        return [
            *out,
            Check(
                "pause",
                Level.FAIL,
                f"pauses not read: {_one_line(exc)}: every worker claim reads fleet_pauses and "
                "would fail the same way; give the database role SELECT on fleet_pauses (see "
                "privileges) or fix the cause, then run the check again",
            ),
        ]
    for view in rows:
        out.append(
            Check(
                "pause",
                Level.INFO,
                f"{scope_label(view.scope)} is paused by {mask_phones_in_text(view.paused_by)} "
                f"since {_utc(view.paused_at)} ({duration(view.age_s)}): "
                f"{mask_phones_in_text(view.reason)}; resume it from the dashboard, the API or "
                "the CLI when the cause is fixed",
            )
        )
    if not out:
        out.append(Check("pause", Level.INFO, "not paused: the fleet takes orders"))
    return out


def _stored_pauses(database_url: str) -> list[PauseRow]:
    from db.pause_store import PauseStore
    from db.store import Store, open_pool

    store = Store(open_pool(database_url, min_size=1, max_size=1, timeout_s=2 * CONNECT_TIMEOUT_S))
    try:
        return PauseStore(store).list()
    finally:
        store.close()


def circuits() -> list[Check]:
    """Each routed vendor's circuit, said (never a failure)."""
    from fulfillment.runtime import bootstrap

    checks = []
    for vendor_name, breaker in bootstrap.breakers().items():
        who = VENDOR_NAMES.get(vendor_name, vendor_name)
        state = breaker.state()
        name = str(state.get("state", "unknown"))
        if name == "open":
            until = float(state.get("until", 0) or 0)
            why = " (a vendor pause: 429 or an empty wallet)" if state.get("reason") else ""
            checks.append(
                Check(
                    "circuit",
                    Level.INFO,
                    f"{who}: the circuit is open until {_utc_ts(until)}{why}: the fleet is not "
                    "calling it; its orders wait without spending attempts",
                )
            )
        else:
            checks.append(
                Check("circuit", Level.INFO, f"{who}: the circuit is {name.replace('_', '-')}")
            )
    return checks


# -- helpers ---------------------------------------------------------------------------------


def _not_checked(name: str, variable: str) -> Check:
    return Check(name, Level.SKIP, f"not checked: {variable} is unset (see settings)")


def _secret(value: SecretStr | None) -> str:
    return "" if value is None else value.get_secret_value()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _utc_ts(seconds: float) -> str:
    return _utc(datetime.fromtimestamp(seconds, UTC))


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the settings hold, as they might appear in a line."""
    values = [
        _secret(settings.at_ishare_api_key),
        _secret(settings.at_ishare_api_secret),
        _secret(settings.admin_token),
        _secret(settings.api_token),
    ]
    for url in (settings.database_url, settings.redis_url, settings.admin_webhook_url):
        if url:
            values += passwords_in(url)
    return [v for v in values if len(v) >= _SECRET_MIN_CHARS]


def _secrets_in_environment() -> list[str]:
    """The settings did not parse: the raw variables' secrets, read as the settings would."""
    env = {k.upper(): v for k, v in os.environ.items()}
    values = [
        env.get(name, "")
        for name in ("AT_ISHARE_API_KEY", "AT_ISHARE_API_SECRET", "ADMIN_TOKEN", "API_TOKEN")
    ]
    for name in ("DATABASE_URL", "REDIS_URL", "ADMIN_WEBHOOK_URL"):
        if env.get(name):
            values += passwords_in(env[name])
    return [v for v in values if len(v) >= _SECRET_MIN_CHARS]


def _scrubbed(report: Report, secrets: Sequence[str]) -> Report:
    """The report with every secret value replaced by ***, longest first."""
    ordered = sorted(set(secrets), key=len, reverse=True)

    def scrub(text: str) -> str:
        for value in ordered:
            text = text.replace(value, "***")
        return text

    return replace(
        report,
        checks=tuple(
            replace(c, message=scrub(c.message), details=tuple(scrub(d) for d in c.details))
            for c in report.checks
        ),
    )
