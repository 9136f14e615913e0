"""The release, as an operator installs it: `python -m build` makes the sdist and, from it, the
wheel; the wheel goes into a fresh virtualenv outside the checkout; from there, with a clean
environment (no PYTHONPATH, only the venv's bin on PATH) and a working directory of its own,
the fleet runs: `fulfillment migrate`, `dramatiq workers.actors` fulfilling an order against
`fulfillment sim`, `fulfillment web` answering /healthz, and `fulfillment demo --no-serve` on
the embedded servers of the dev-servers extra.

Built and installed once per module (15 to 30 s: the build, then pip resolving the
dependencies from the index it is configured with, its cache warm); the module takes about a
minute in all, half of it the demo. Every subprocess has a timeout; long-running ones are
process groups, stopped at teardown, and so are the demo's embedded servers.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from db.catalog import Snapshot, snapshot
from db.databases import create_database
from db.migrate import load_steps
from db.store import Store, open_pool
from fulfillment.dev.embedded import free_port
from fulfillment.dev.launcher import SIM_READY, STOP_TIMEOUT_S, WORKER_READY, stop_all
from fulfillment.messaging.publish import build_broker
from producers.publish import publish_fulfillment
from tests.conftest import IN_CI

from . import conftest as e2e

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = {"db", "fulfillment", "producers", "workers"}
#: the package data the processes read at run time, as the checkout has it
PACKAGE_DATA = sorted(
    [
        "db/queries.sql",
        "db/schema.sql",  # the root schema.sql, a symlink in the checkout
        *(p.relative_to(ROOT).as_posix() for p in (ROOT / "db" / "migrations").glob("*.sql")),
        *(
            p.relative_to(ROOT).as_posix()
            for folder in ("templates", "static")
            for p in (ROOT / "fulfillment" / "web" / folder).iterdir()
            if p.is_file()
        ),
    ]
)
BUILD_TIMEOUT_S = 300.0
INSTALL_TIMEOUT_S = 600.0  # pip may download every dependency on a cold cache
RUN_TIMEOUT_S = 60.0
DEMO_TIMEOUT_S = 180.0
#: what a Debian root shell has on PATH (pgserver, running as root, calls useradd)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEY, SECRET = "wheel-key", "wheel-secret"


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Venv:
    root: Path
    #: a directory of its own, outside the checkout: every process runs there
    workdir: Path

    def bin(self, name: str) -> str:
        return str(self.root / "bin" / name)

    def env(self, **variables: str) -> dict[str, str]:
        """A clean environment: the venv's bin first on PATH, nothing of this process's
        Python setup (PYTHONPATH, VIRTUAL_ENV) and none of its fleet settings."""
        return {
            "PATH": f"{self.root / 'bin'}{os.pathsep}{SYSTEM_PATH}",
            "HOME": os.environ.get("HOME", str(self.workdir)),
            "LANG": "C.UTF-8",
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
            "PYTHONUNBUFFERED": "1",
            **variables,
        }

    def run(
        self, *argv: str, env: dict[str, str], timeout: float = RUN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _check(result: subprocess.CompletedProcess[str], what: str) -> str:
    output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{what}: exit {result.returncode}\n{output}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """`python -m build` of the checkout: the sdist, then the wheel built from that sdist."""
    try:
        import build  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("the test extra's `build` is missing")
        pytest.skip("`build` is not installed (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        cwd=out,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    _check(result, "python -m build")
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dist(sdist, wheel)


@pytest.fixture(scope="module")
def installed_base() -> Iterator[Path]:
    """Where the venv lives and its processes run; removed at the end. Not under pytest's
    basetemp: run as root, pgserver runs PostgreSQL (the venv's binaries, the demo's data) as
    its own user and opens the folders above for it, and every pytest session that starts
    closes /tmp/pytest-of-root again."""
    base = Path(tempfile.mkdtemp(prefix="fulfillment-wheel-"))
    assert not base.resolve().is_relative_to(ROOT)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def venv(dist: Dist, installed_base: Path) -> Venv:
    """A fresh virtualenv with the wheel and its dev-servers extra, resolved by pip."""
    root, workdir = installed_base / "venv", installed_base / "work"
    workdir.mkdir()
    env = Venv(root, workdir)
    # Without pip of its own: the running pip installs into it (--python), seconds faster.
    _check(env.run(sys.executable, "-m", "venv", "--without-pip", str(root), env=env.env()), "venv")
    # pip's configuration (the index, the certificates) comes from HOME and PIP_* variables.
    install_env = env.env(**{k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    result = env.run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(root / "bin" / "python"),
        "install",
        "--quiet",
        f"{dist.wheel}[dev-servers]",
        env=install_env,
        timeout=INSTALL_TIMEOUT_S,
    )
    _check(result, "pip install")
    return env


Spawn = Callable[[str, list[str], dict[str, str]], e2e.Proc]


@pytest.fixture
def spawn(venv: Venv, tmp_path: Path) -> Iterator[Spawn]:
    """Start processes of the venv in its working directory; all stopped at teardown, their
    logs printed (pytest shows them when the test failed)."""
    procs: list[e2e.Proc] = []

    def start(name: str, argv: list[str], env: dict[str, str]) -> e2e.Proc:
        proc = e2e.Proc(name, argv, env=env, log_dir=tmp_path, cwd=venv.workdir)
        proc.start(tmp_path / f"{len(procs):02d}-{name}.log")
        procs.append(proc)
        return proc

    yield start
    stop_all(reversed(procs))
    for proc in procs:
        code = None if proc.popen is None else proc.popen.returncode
        print(f"\n----- {proc.name} ({proc.log_path}), exit {code} -----\n{proc.tail()}")


@pytest.fixture(scope="module")
def empty_database(database_url: str) -> Iterator[str]:
    """A database of its own on the run's server, without a schema; dropped at the end."""
    name = f"{database_url.rsplit('/', 1)[1]}_wheel"
    url = create_database(database_url, name, replace=True)
    yield url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # name: ours, hex


@pytest.fixture(scope="module")
def migrated(venv: Venv, empty_database: str) -> subprocess.CompletedProcess[str]:
    """`fulfillment migrate` of the venv against the empty database, with DATABASE_URL only:
    migrating needs no Redis, so none may be started (embedded) for it."""
    env = venv.env(DATABASE_URL=empty_database)
    return venv.run(venv.bin("fulfillment"), "migrate", env=env)


def _catalog(url: str) -> Snapshot:
    with psycopg.connect(url) as conn:
        return snapshot(conn)


def _successes(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "fulfillment_outcomes_total" and sample.labels["outcome"] == "success"
    )


def _stop_embedded(venv: Venv, state: Path) -> None:
    """Stop the embedded servers the demo leaves running for the next one; should that fail,
    end the PostgreSQL it started by the pid in its data directory (fast shutdown)."""
    stop = "import sys, pathlib; from fulfillment.dev.embedded import stop_embedded; "
    stop += "stop_embedded(pathlib.Path(sys.argv[1]))"
    result = venv.run(venv.bin("python"), "-c", stop, str(state), env=venv.env())
    pidfile = state / "pg" / "postmaster.pid"
    if pidfile.exists():
        print(f"stop_embedded left PostgreSQL running:\n{result.stderr[-2000:]}")
        pid = int(pidfile.read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)


# -- the artefacts -------------------------------------------------------------------------


def test_wheel_holds_exactly_the_four_packages_and_their_data(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as whl:
        names = set(whl.namelist())
        (info,) = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
        record = [row[0] for row in csv.reader(io.StringIO(whl.read(f"{info}/RECORD").decode()))]
        top_level = set(whl.read(f"{info}/top_level.txt").decode().split())
        schema = whl.getinfo("db/schema.sql")
        schema_bytes = whl.read(schema)

    assert {path.split("/", 1)[0] for path in record} - {info} == TOP_LEVEL
    assert top_level == TOP_LEVEL
    assert [p for p in PACKAGE_DATA if p not in names] == []
    # the symlink resolved: a regular file holding the root schema.sql
    assert not stat.S_ISLNK(schema.external_attr >> 16)
    assert schema_bytes == (ROOT / "schema.sql").read_bytes()


def test_sdist_ships_the_schema_as_a_file(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as sdist:
        base = sdist.getnames()[0].split("/", 1)[0]
        member = sdist.getmember(f"{base}/db/schema.sql")
        extracted = sdist.extractfile(member)
        assert extracted is not None
        content = extracted.read()

    assert member.isfile()
    assert content == (ROOT / "schema.sql").read_bytes()


def test_the_venv_imports_the_wheel_and_nothing_of_the_checkout(venv: Venv) -> None:
    code = (
        "import importlib.util, json, sys\n"
        "import db, fulfillment, producers, workers\n"
        "from importlib.resources import files\n"
        "print(json.dumps({\n"
        "    'path': sys.path,\n"
        "    'files': [m.__file__ for m in (db, fulfillment, producers, workers)],\n"
        "    'tools': [n for n in ('bench', 'chaos') if importlib.util.find_spec(n)],\n"
        "    'schema': files('db').joinpath('schema.sql').is_file(),\n"
        "}))\n"
    )
    seen = json.loads(_check(venv.run(venv.bin("python"), "-c", code, env=venv.env()), "python"))

    site = (venv.root / "lib").resolve()
    assert all(Path(f).resolve().is_relative_to(site) for f in seen["files"]), seen["files"]
    assert [p for p in seen["path"] if p and Path(p).resolve().is_relative_to(ROOT)] == []
    assert seen["tools"] == []
    assert seen["schema"] is True


# -- the commands ----------------------------------------------------------------------------


def test_migrate_applies_the_shipped_schema(
    venv: Venv,
    migrated: subprocess.CompletedProcess[str],
    empty_database: str,
    database_url: str,
) -> None:
    version = f"{len(load_steps()):04d}"
    assert f"database at version {version}" in _check(migrated, "fulfillment migrate")
    # the same catalog as the checkout's migrate gives the run's database
    assert _catalog(empty_database) == _catalog(database_url)
    again = venv.run(
        venv.bin("fulfillment"),
        "migrate",
        env=venv.env(DATABASE_URL=empty_database),
    )
    assert "nothing to do" in _check(again, "fulfillment migrate, again")
    # the steps and their reverses are in the wheel: back one step and forward again
    for argv, said in ((("--to", "1"), "database at version 0001"), ((), version)):
        moved = venv.run(
            venv.bin("fulfillment"), "migrate", *argv, env=venv.env(DATABASE_URL=empty_database)
        )
        assert said in _check(moved, f"fulfillment migrate {' '.join(argv)}")
    listed = venv.run(
        venv.bin("fulfillment"), "migrate", "--status", env=venv.env(DATABASE_URL=empty_database)
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert [line.split()[1] for line in listed.stdout.splitlines()[1:]] == [
        f"{n:04d}" for n in range(1, len(load_steps()) + 1)
    ]
    assert not (venv.workdir / ".fulfillment-dev").exists()  # no embedded server started


def _service_env(
    venv: Venv, database_url: str, redis_url: str, namespace: str, **extra: str
) -> dict[str, str]:
    """The venv's clean environment with the run's PostgreSQL and Redis, JSON logs, and `extra`."""
    return venv.env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        REDIS_NAMESPACE=namespace,
        LOG_FORMAT="json",
        **extra,
    )


def test_worker_from_the_wheel_fulfils_an_order(
    venv: Venv,
    migrated: subprocess.CompletedProcess[str],
    empty_database: str,
    redis_url: str,
    redis_namespace: str,
    spawn: Spawn,
) -> None:
    _check(migrated, "fulfillment migrate")
    metrics_port = free_port()
    env = _service_env(
        venv,
        empty_database,
        redis_url,
        redis_namespace,
        AT_ISHARE_API_KEY=KEY,
        AT_ISHARE_API_SECRET=SECRET,
        RETRY_DELAYS="1,2,3",
        METRICS_PORT=str(metrics_port),
    )
    for _ in range(3):  # the free port may be taken between the probe and the bind
        sim = spawn("sim", [venv.bin("fulfillment"), "sim", "--port", str(free_port())], env)
        line = sim.await_output(SIM_READY, e2e.START_TIMEOUT_S)
        if line is not None:
            break
    else:
        pytest.fail(f"the simulator did not start:\n{sim.tail()}")
    env["AT_ISHARE_API_URL"] = line.split(SIM_READY, 1)[1].strip()
    argv = ["workers.actors", "--queues", "fulfillment", "--processes", "1", "--threads", "2"]
    worker = spawn("worker", [venv.bin("dramatiq"), *argv], env)
    worker.wait_for_output(WORKER_READY)

    store = Store(open_pool(empty_database, min_size=1, max_size=2))
    broker = build_broker(redis_url, redis_namespace)
    try:
        order_id = str(uuid.uuid4())
        store.insert_order(
            order_id, phone_number=e2e.PHONE, network="at-ishare", size_gb=2, package_name=None
        )
        published = publish_fulfillment(
            order_id,
            phone_number=e2e.PHONE,
            network="at-ishare",
            size_gb=2,
            broker=broker,
            enabled=True,
        )
        assert published.published, published.reason
        deadline = time.monotonic() + 30
        while (row := store.order_row(order_id)) is None or row["fulfillment_status"] != "success":
            if not worker.alive or time.monotonic() > deadline:
                pytest.fail(f"order {order_id} not fulfilled: {row}\n{worker.tail()}")
            time.sleep(e2e.POLL_S)
    finally:
        broker.close()
        store.close()

    assert '"fulfillment.succeeded"' in worker.text()
    # the group's metrics server counts it (the counter moves just after the row)
    deadline = time.monotonic() + 10
    while (successes := _successes(metrics_port)) < 1 and time.monotonic() < deadline:
        time.sleep(e2e.POLL_S)
    assert successes == 1


def test_web_from_the_wheel_serves_health_and_the_dashboard(
    venv: Venv,
    migrated: subprocess.CompletedProcess[str],
    empty_database: str,
    redis_url: str,
    redis_namespace: str,
    spawn: Spawn,
) -> None:
    _check(migrated, "fulfillment migrate")
    port = free_port()
    env = _service_env(
        venv,
        empty_database,
        redis_url,
        redis_namespace,
        ADMIN_TOKEN="wheel-admin-token",
        API_TOKEN="wheel-api-token",
    )
    web = spawn("web", [venv.bin("fulfillment"), "web", "--port", str(port)], env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + e2e.START_TIMEOUT_S
    with httpx.Client(base_url=base, timeout=5) as http:
        while True:
            try:
                health = http.get("/healthz")
                break
            except httpx.TransportError:
                if not web.alive or time.monotonic() > deadline:
                    pytest.fail(f"fulfillment web did not answer on {base}:\n{web.tail()}")
                time.sleep(e2e.POLL_S)
        ready = http.get("/readyz")
        login = http.get("/dashboard/admin/fulfillment/login")  # a template of the wheel
        css = http.get("/dashboard/static/dashboard.css")  # a static file of the wheel

    assert (health.status_code, health.json()) == (200, {"ok": True})
    assert (ready.status_code, ready.json()["ready"]) == (200, True), ready.text
    assert login.status_code == 200
    assert "text/html" in login.headers["content-type"]
    assert css.status_code == 200
    assert css.text == (ROOT / "fulfillment/web/static/dashboard.css").read_text(encoding="utf-8")


@pytest.mark.timeout(DEMO_TIMEOUT_S + 60)
def test_demo_from_the_wheel_on_embedded_servers(venv: Venv, spawn: Spawn) -> None:
    """No DATABASE_URL / REDIS_URL: the dev-servers extra's PostgreSQL and Redis, started in
    a state directory of the test and stopped after it."""
    state = venv.workdir / "dev-state"
    env = venv.env(FULFILLMENT_DEV_DIR=str(state))
    argv = ["demo", "--no-serve", "--orders", "20", "--processes", "1", "--threads", "4"]
    try:
        demo = spawn("demo", [venv.bin("fulfillment"), *argv, "--timeout", "90"], env)
        assert demo.popen is not None
        try:
            code = demo.popen.wait(timeout=DEMO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not end within {DEMO_TIMEOUT_S} s:\n{demo.tail()}")
    finally:
        _stop_embedded(venv, state)

    assert code == 0, demo.tail()
    assert "RESULT: OK" in demo.text()
    # the notify: process sent every outcome's SMS and event; none twice, none out of order
    assert "RESULT (SMS and events): OK" in demo.text()
    assert "duplicate sends 0, blind resends 0, conflicting bodies 0" in demo.text()
