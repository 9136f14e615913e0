"""What a chaos run configures: its database, namespace and credentials, the fleet's short
timings (FLEET_TIMINGS), the simulated vendors' faults (VENDOR_FAULTS for AT-iShare,
AGGREGATOR_FAULTS for the data aggregator, NOTIFY_FAULTS for the SMS provider and the
platform's event receiver the notify: process speaks to), the fleet's environment (every
network enabled, the customers' SMS and the platform's events sent to the simulator)."""

from __future__ import annotations

import sys
from pathlib import Path

from chaos.vendors import AGGREGATOR, NETWORKS, WEBHOOK_PATHS
from fulfillment.dev.launcher import base_env
from fulfillment.dev.simulator import platform as sim_platform
from fulfillment.dev.simulator import sms as sim_sms
from fulfillment.dev.simulator.aggregator import MOUNT as AGGREGATOR_MOUNT
from fulfillment.dev.simulator.faults import VENDOR_REJECTS_SUFFIX
from fulfillment.dev.simulator.server import DEFAULT_AGGREGATOR_TOKEN

DATABASE = "chaos"
NAMESPACE = "chaos"
KEY, SECRET = "chaos-key", "chaos-secret-not-for-production"
ADMIN_TOKEN, API_TOKEN = "chaos-admin-token", "chaos-api-token"
AGGREGATOR_TOKEN = DEFAULT_AGGREGATOR_TOKEN
AGGREGATOR_SECRET = "chaos-aggregator-secret-not-for-production"  # noqa: S105 -- a test's
SMS_CLIENT_ID = "chaos-sms-id"
SMS_CLIENT_SECRET = "chaos-sms-secret-not-for-production"  # noqa: S105 -- a test's
SMS_SENDER_ID = "DataShop"
PLATFORM_SECRET = "chaos-platform-secret-not-for-production"  # noqa: S105 -- a test's

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
    # the aggregator's connection waits as long as AT-iShare's (production: 10 s and 3 s)
    "AGGREGATOR_READ_TIMEOUT_S": "1",
    "AGGREGATOR_CONNECT_TIMEOUT_S": "1",
    "DB_POOL_MAX_SIZE": "6",
    # The breaker at a twelfth of production's (60 s window, 30 s open, up to 300 s), so that
    # a brownout of a few seconds opens it and an open circuit costs seconds, not minutes.
    "BREAKER_WINDOW_S": "5",
    "BREAKER_OPEN_S": "2.5",
    "BREAKER_MAX_OPEN_S": "25",
    # the notify: process: tries of one SMS or event a second or so apart, delivery reports
    # read soon, overdue rows re-enqueued by the reconciler after a few seconds (production:
    # 10,30,120,... and 60 s)
    "SMS_TIMEOUT_S": "1",
    "PLATFORM_WEBHOOK_TIMEOUT_S": "1",
    "NOTIFY_RETRY_DELAYS": "0.5,1,2",
    "SMS_REPORT_DELAYS": "0.5,1,2",
    "OUTBOX_GRACE_S": "3",
    "NOTIFY_THREADS": "4",
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


#: The simulated aggregator: AT-iShare's dice, plus orders it accepts, keeps pending, then
#: fails (4 %) or refunds (3 %): nothing delivered, a new attempt buys again; slower answers.
AGGREGATOR_FAULTS = {
    "SIM_AGGREGATOR_ERROR_RATE": "0.15",
    "SIM_AGGREGATOR_TIMEOUT_RATE": "0.03",
    "SIM_AGGREGATOR_TIMEOUT_SECONDS": "2",
    "SIM_AGGREGATOR_RATE_LIMIT_RATE": "0.02",
    "SIM_AGGREGATOR_DROP_AFTER_DELIVERY_RATE": "0.05",
    "SIM_AGGREGATOR_PENDING_RATE": "0.05",
    "SIM_AGGREGATOR_PENDING_FAILED_RATE": "0.04",
    "SIM_AGGREGATOR_PENDING_REFUNDED_RATE": "0.03",
    "SIM_AGGREGATOR_PENDING_SECONDS": "1",
    "SIM_AGGREGATOR_LATENCY_MS": "30",
    "SIM_AGGREGATOR_LATENCY_JITTER_MS": "50",
    "SIM_AGGREGATOR_INVALID_PHONE_SUFFIX": VENDOR_REJECTS_SUFFIX,
    "SIM_AGGREGATOR_CLIENT_TIMEOUT_SECONDS": FLEET_TIMINGS["AGGREGATOR_READ_TIMEOUT_S"],
}


#: The SMS provider and the platform's receiver: 5xx, answers lost after the SMS went out (or
#: the event was recorded), answers later than the notifier waits, 429s. Each unknown outcome
#: of a send must be looked up before the next send; an event resent with the same body.
NOTIFY_FAULTS = {
    "SIM_SMS_ERROR_RATE": "0.1",
    "SIM_SMS_LOST_RATE": "0.05",
    "SIM_SMS_TIMEOUT_RATE": "0.05",
    "SIM_SMS_TIMEOUT_SECONDS": "2",
    "SIM_SMS_RATE_LIMIT_RATE": "0.03",
    "SIM_SMS_GARBAGE_RATE": "0.02",
    "SIM_SMS_DELIVERY_SECONDS": "0.5",
    "SIM_PLATFORM_ERROR_RATE": "0.1",
    "SIM_PLATFORM_LOST_RATE": "0.05",
    "SIM_PLATFORM_TIMEOUT_RATE": "0.05",
    "SIM_PLATFORM_TIMEOUT_SECONDS": "2",
}


def fleet_env(
    database_url: str, redis_url: str, sim_port: int, web_port: int, seed: int
) -> dict[str, str]:
    """Every process's environment: all four networks, both vendors in the simulator on
    `sim_port`, the aggregator calling back the web process on `web_port`."""
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
            "NETWORKS_ENABLED": ",".join(NETWORKS),
            "AGGREGATOR_API_URL": f"http://127.0.0.1:{sim_port}{AGGREGATOR_MOUNT}/v1",
            "AGGREGATOR_API_TOKEN": AGGREGATOR_TOKEN,
            "AGGREGATOR_WEBHOOK_SECRET": AGGREGATOR_SECRET,
            # the simulated aggregator's own signed callbacks (chaos.callbacks replays more)
            "SIM_AGGREGATOR_WEBHOOK_URL": f"http://127.0.0.1:{web_port}{WEBHOOK_PATHS[AGGREGATOR]}",
            # the notify: process's parties, in the simulator too (it reads the same variables)
            "SMS_API_URL": f"http://127.0.0.1:{sim_port}{sim_sms.MOUNT}/v1",
            "SMS_CLIENT_ID": SMS_CLIENT_ID,
            "SMS_CLIENT_SECRET": SMS_CLIENT_SECRET,
            "SMS_SENDER_ID": SMS_SENDER_ID,
            "SMS_ENABLED": "true",
            "PLATFORM_WEBHOOK_URL": f"http://127.0.0.1:{sim_port}{sim_platform.EVENTS_PATH}",
            "PLATFORM_WEBHOOK_SECRET": PLATFORM_SECRET,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "API_TOKEN": API_TOKEN,
            "SIM_PORT": str(sim_port),
            "WEB_PORT": str(web_port),
            "SIM_SEED": str(seed),
            "LOG_FORMAT": "json",
            "FULFILLMENT_ENABLED": "true",
            **FLEET_TIMINGS,
            **VENDOR_FAULTS,
            **AGGREGATOR_FAULTS,
            **NOTIFY_FAULTS,
        }
    )
    return env
