"""What a chaos run configures: its database, namespace and credentials, the fleet's short
timings (FLEET_TIMINGS), the simulated vendor's faults (VENDOR_FAULTS), the fleet's environment."""

from __future__ import annotations

import sys
from pathlib import Path

from fulfillment.dev.launcher import base_env
from fulfillment.dev.simulator.faults import VENDOR_REJECTS_SUFFIX

DATABASE = "chaos"
NAMESPACE = "chaos"
KEY, SECRET = "chaos-key", "chaos-secret-not-for-production"
ADMIN_TOKEN, API_TOKEN = "chaos-admin-token", "chaos-api-token"

#: Short on purpose: a run lasts minutes, not hours (production: see README).
FLEET_TIMINGS = {
    "RETRY_DELAYS": "1,2,4",
    "MAX_ATTEMPTS": "3",
    "CLAIM_TTL_S": "5",
    "STATUS_CHECK_DELAY_S": "1",
    "MAX_STATUS_CHECKS": "40",
    "MAX_DEFERRALS": "100",
    "RECONCILE_GRACE_S": "5",
    "RECONCILE_INTERVAL_S": "2",
    "VENDOR_READ_TIMEOUT_S": "1",
    "VENDOR_CONNECT_TIMEOUT_S": "1",
    "DB_POOL_MAX_SIZE": "6",
    # The breaker at a twelfth of production's (60 s window, 30 s open, up to 300 s), so that
    # a brownout of a few seconds opens it and an open circuit costs seconds, not minutes.
    "BREAKER_WINDOW_S": "5",
    "BREAKER_OPEN_S": "2.5",
    "BREAKER_MAX_OPEN_S": "25",
}

#: The simulated vendor: 20 % transient errors (5xx, timeouts, 429), 5 % delivered with the
#: answer lost, 5 % pending then success, 20 ms ± 50 ms latency (spikes: chaos.faults).
VENDOR_FAULTS = {
    "SIM_ERROR_RATE": "0.15",
    "SIM_TIMEOUT_RATE": "0.03",
    "SIM_TIMEOUT_SECONDS": "2",
    "SIM_RATE_LIMIT_RATE": "0.02",
    "SIM_DROP_AFTER_DELIVERY_RATE": "0.05",
    "SIM_PENDING_RATE": "0.05",
    "SIM_PENDING_SECONDS": "1",
    "SIM_LATENCY_MS": "20",
    "SIM_LATENCY_JITTER_MS": "50",
    "SIM_INVALID_PHONE_SUFFIX": VENDOR_REJECTS_SUFFIX,
    # An answer later than the workers wait is an unknown outcome to them (blind re-purchases)
    "SIM_CLIENT_TIMEOUT_SECONDS": FLEET_TIMINGS["VENDOR_READ_TIMEOUT_S"],
}


def fleet_env(database_url: str, redis_url: str, sim_port: int, seed: int) -> dict[str, str]:
    env = base_env()
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "REDIS_NAMESPACE": NAMESPACE,
            "AT_ISHARE_API_URL": f"http://127.0.0.1:{sim_port}/v1",
            "AT_ISHARE_API_KEY": KEY,
            "AT_ISHARE_API_SECRET": SECRET,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "API_TOKEN": API_TOKEN,
            "SIM_PORT": str(sim_port),
            "SIM_SEED": str(seed),
            "LOG_FORMAT": "json",
            "FULFILLMENT_ENABLED": "true",
            **FLEET_TIMINGS,
            **VENDOR_FAULTS,
        }
    )
    return env
