"""`honcho start`: the whole Procfile as a platform runs it, the dashboard on $PORT.

honcho numbers PORT from the base in Procfile order (web first, 100 apart); each Dramatiq group
and the reconciler serve metrics on their PORT + 4000 (fulfillment/dev/launcher.py). One order
goes through the fleet; SIGTERM to honcho stops every process, each cleanly.
"""

from __future__ import annotations

import random
import socket

import httpx
import pytest

from fulfillment.dev.embedded import free_port

from .conftest import BIN, ROOT, Fleet

pytestmark = [pytest.mark.e2e]


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _base_port(offsets: tuple[int, ...]) -> int:
    """A honcho base PORT whose ports (base + offset) are all free; below the ephemeral range,
    where free_port's picks come from."""
    for _ in range(50):
        base = random.randrange(20000, 28000, 100)
        if all(_bindable(base + offset) for offset in offsets):
            return base
    pytest.fail("no free block of ports for honcho")


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def test_honcho_start_serves_the_dashboard_on_port(idle_fleet: Fleet) -> None:
    fleet = idle_fleet
    # web: PORT; worker, deadletter, reconciler, notify: their PORT (100 apart) + 4000
    metrics = {"worker": 4100, "deadletter": 4200, "reconciler": 4300, "notify": 4400}
    base = _base_port((0, *metrics.values()))
    sim_port = free_port()
    fleet.env.update(
        {
            "PORT": str(base),
            "PATH": f"{BIN}:{fleet.env.get('PATH', '')}",
            "SIM_PORT": str(sim_port),
            "AT_ISHARE_API_URL": f"http://127.0.0.1:{sim_port}/v1",
            "ADMIN_TOKEN": "e2e-admin",
            "API_TOKEN": "e2e-api",
            "WORKER_PROCESSES": "1",
            "WORKER_THREADS": "2",
        }
    )
    fleet.env.pop("WORKER_METRICS_PORT", None)
    fleet.env.pop("WEB_PORT", None)
    fleet.sim_url = fleet.env["AT_ISHARE_API_URL"]
    honcho = fleet.spawn("honcho", [str(BIN / "honcho"), "-f", str(ROOT / "Procfile"), "start"])
    web = f"http://127.0.0.1:{base}"
    fleet.wait_until(
        lambda: _status(f"{web}/healthz") == 200 or not honcho.alive,
        45,
        what=f"the dashboard to answer on PORT {base}",
    )
    assert honcho.alive, honcho.tail()
    assert httpx.get(f"{web}/healthz", timeout=5).json()
    fleet.wait_until(
        lambda: (
            honcho.text().count("Worker process is ready for action") >= 3
            and '"reconciler.started"' in honcho.text()
        ),
        45,
        what="the three Dramatiq groups and the reconciler to be ready",
    )
    ready = httpx.get(f"{web}/readyz", timeout=10).json()
    assert ready == {
        "ready": True,
        "checks": {"postgresql": "ok", "redis": "ok", "vendor": "ok"},
    }, ready
    for name, offset in metrics.items():
        assert _status(f"http://127.0.0.1:{base + offset}/metrics") == 200, name

    (order,) = fleet.publish_new_orders(1)
    fleet.wait_for_status(order, "success")
    assert fleet.deliveries(order) == 1

    honcho.stop()  # SIGTERM to honcho, as a platform stops it; honcho stops every process
    assert honcho.popen is not None
    log = honcho.text()
    assert honcho.popen.returncode == 143, log  # honcho's status after a SIGTERM: 128 + 15
    assert "Traceback" not in log, log
    for name in ("web", "worker", "deadletter", "reconciler", "notify", "sim"):
        assert f"{name}.1 stopped" in log, name
    for port in (base, *(base + offset for offset in metrics.values()), sim_port):
        assert _status(f"http://127.0.0.1:{port}/") is None, port
