"""The Procfile is rendered from the process types of fulfillment/dev/launcher.py, and the
shell reads each line as the launcher does: same arguments, the ports of the table in the
launcher's docstring under honcho."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from honcho.environ import expand_processes, parse_procfile

from fulfillment.dev import launcher
from fulfillment.dev.launcher import PROCESS_TYPES, render_procfile

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "fulfillment dev procfile > Procfile"

#: type -> (PORT honcho gives it from its default base 5000, the port it listens on)
HONCHO_PORTS = {
    "web": (5000, 5000),
    "worker": (5100, 9100),
    "deadletter": (5200, 9200),
    "reconciler": (5300, 9300),
    "notify": (5400, 9400),
    "sim": (5500, 8099),
}


def test_the_procfile_is_the_rendered_one() -> None:
    current = (ROOT / "Procfile").read_text(encoding="utf-8")
    assert current == render_procfile(), (
        f"the Procfile differs from the process types in fulfillment/dev/launcher.py; "
        f"regenerate it: {REGENERATE}"
    )


def test_web_comes_first_on_honchos_base_port() -> None:
    processes = parse_procfile(render_procfile()).processes
    assert list(processes) == ["web", "worker", "deadletter", "reconciler", "notify", "sim"]
    assert processes["web"].startswith("fulfillment web --port ${PORT:-")


def test_dev_procfile_prints_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert launcher.main(["procfile"]) == 0
    assert capsys.readouterr().out == render_procfile()
    procfile = tmp_path / "Procfile"
    procfile.write_text(render_procfile())
    assert launcher.main(["procfile", "--check", "-f", str(procfile)]) == 0
    procfile.write_text(render_procfile().replace("--threads 2", "--threads 3"))
    assert launcher.main(["procfile", "--check", "-f", str(procfile)]) == 1
    assert REGENERATE.replace("Procfile", str(procfile)) in capsys.readouterr().err
    assert launcher.main(["procfile", "--check", "-f", str(tmp_path / "missing")]) == 1


def _fake_programs(bin_dir: Path) -> None:
    """`dramatiq` and `fulfillment` that print METRICS_PORT and their arguments as JSON."""
    bin_dir.mkdir()
    for name in ("dramatiq", "fulfillment"):
        script = bin_dir / name
        script.write_text(
            f"#!{sys.executable}\nimport json, os, sys\n"
            "print(json.dumps([os.environ.get('METRICS_PORT'), *sys.argv[1:]]))\n"
        )
        script.chmod(0o755)


def _run_line(bin_dir: Path, command: str, env: dict[str, str]) -> list[str]:
    """A Procfile command run by /bin/sh with the fake programs: [METRICS_PORT, *arguments]."""
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    out: list[str] = json.loads(result.stdout)
    return out


def _run_under_honcho(bin_dir: Path, env: dict[str, str]) -> dict[str, tuple[int, list[str]]]:
    """Each Procfile line with the PORT honcho gives it: type -> (PORT, [METRICS_PORT, *args])."""
    processes = parse_procfile(render_procfile()).processes
    return {
        params.name.split(".")[0]: (
            int(params.env["PORT"]),
            _run_line(bin_dir, params.cmd, params.env),
        )
        for params in expand_processes(processes, env=env, port=5000)
    }


def _listens(metrics_port: str | None, args: list[str]) -> int:
    return int(metrics_port) if metrics_port else int(args[args.index("--port") + 1])


def test_honcho_ports_are_the_documented_ones_and_distinct(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake_programs(bin_dir)
    listens = {}
    for name, (port, (metrics_port, *args)) in _run_under_honcho(bin_dir, {}).items():
        listens[name] = _listens(metrics_port, args)
        assert (port, listens[name]) == HONCHO_PORTS[name], name
    assert len(set(listens.values())) == len(listens)


@pytest.mark.parametrize("ptype", PROCESS_TYPES, ids=lambda t: t.name)
def test_the_launcher_runs_what_the_procfile_runs(
    tmp_path: Path, ptype: launcher.ProcessType
) -> None:
    bin_dir = tmp_path / "bin"
    _fake_programs(bin_dir)
    env = {"WORKER_PROCESSES": "3", "WORKER_THREADS": "5", "SIM_PORT": "7001", "WEB_PORT": "7002"}
    _, (_, *args) = _run_under_honcho(bin_dir, env)[ptype.name]
    direct = ptype.argv({**env, "PORT": "5000" if ptype is launcher.WEB else ""})
    assert direct[-len(args) :] == args
    assert Path(direct[0]).name in (ptype.program.script, Path(sys.executable).name)


def test_without_honcho_the_defaults_apply(tmp_path: Path) -> None:
    """PORT unset: web on WEB_PORT (8000), the groups' metrics on 9191..9193, sim on 8099."""
    bin_dir = tmp_path / "bin"
    _fake_programs(bin_dir)
    processes = parse_procfile(render_procfile()).processes
    listens = {
        name: _listens(metrics_port, args)
        for name, command in processes.items()
        for metrics_port, *args in [_run_line(bin_dir, command, {})]
    }
    assert listens == {
        "web": 8000,
        "worker": 9191,
        "deadletter": 9192,
        "reconciler": 9193,
        "notify": 9194,
        "sim": 8099,
    }
    assert _listens(None, _run_line(bin_dir, processes["web"], {"WEB_PORT": "7002"})[1:]) == 7002
