"""Every Prometheus metric of the fleet, in one place. Low-cardinality labels only: never an
order id or a phone number.

Worker processes run under Dramatiq's multiprocess mode: workers/actors.py points
PROMETHEUS_MULTIPROC_DIR at a directory of its process group before anything imports
prometheus_client, and the group's exposition server (fulfillment/metrics_server.py) merges
the processes' files. Other processes (web, reconciler) use the default registry.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTCOMES = Counter(
    "fulfillment_outcomes_total",
    "Orders that reached a final outcome (success, dead_lettered).",
    ["outcome", "network"],
)
ATTEMPTS = Counter(
    "fulfillment_attempts_total",
    "Vendor purchase attempts by outcome and error code (none when it succeeded).",
    ["outcome", "error_code"],
)
RETRIES = Counter(
    "fulfillment_retries_scheduled_total",
    "Messages re-enqueued with a delay, by why (transient, rate_limited, status_check, "
    "circuit_open).",
    ["reason"],
)
PAUSE_WAITS = Counter(
    "fulfillment_pause_waits_total",
    "Vendor pauses short enough that a worker waited them out holding its order "
    "(BREAKER_WAIT_IN_PLACE_S) instead of re-enqueueing it.",
)
ENABLED = Gauge(
    "fulfillment_enabled",
    "1 when this process was started with FULFILLMENT_ENABLED=true; 0: the boot-time kill "
    "switch holds it and it buys nothing (runtime pauses: fulfillment_paused).",
    multiprocess_mode="livemin",
)
DEAD_LETTERS = Counter(
    "fulfillment_dead_letters_total",
    "Orders or messages dead-lettered, by reason kind.",
    ["reason"],
)
VENDOR_LATENCY = Histogram(
    "fulfillment_vendor_request_duration_seconds",
    "AT-iShare API request latency by endpoint and status class.",
    ["endpoint", "status_class"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TIME_TO_SUCCESS = Histogram(
    "fulfillment_time_to_success_seconds",
    "Time from order creation to confirmed delivery (the SLA figure).",
    buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600),
)


def observe_vendor(endpoint: str, status: int | None, seconds: float) -> None:
    """status None: no HTTP answer (timeout, connection dropped)."""
    status_class = "error" if status is None else f"{status // 100}xx"
    VENDOR_LATENCY.labels(endpoint=endpoint, status_class=status_class).observe(seconds)


def dead_letter_kind(reason: str | None, error_code: str | None = None) -> str:
    """A low-cardinality label from a free-text dead-letter reason (error codes are a closed
    set, so they may stand in when the reason is not one of the known kinds)."""
    text = (reason or "").lower()
    for needle, kind in (
        ("attempts used up", "attempts_exhausted"),
        ("vendor rejected", "vendor_rejected"),
        ("invalid order", "invalid_order"),
        ("status checks", "status_unknown"),
        ("rate-limited", "deferrals_exhausted"),
        ("deferred", "deferrals_exhausted"),
        ("gave up", "worker_gave_up"),
    ):
        if needle in text:
            return kind
    return error_code.lower() if error_code else "other"
