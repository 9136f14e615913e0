"""Every Prometheus metric of the fleet, in one place. Low-cardinality labels only: never an
order id or a phone number.

Worker processes run under Dramatiq's multiprocess mode: workers/actors.py points
PROMETHEUS_MULTIPROC_DIR at a directory of its process group before anything imports
prometheus_client, and the group's exposition server (fulfillment/metrics_server.py) merges
the processes' files. Other processes (web, reconciler) use the default registry.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

OUTCOMES = Counter(
    "fulfillment_outcomes_total",
    "Orders that reached a final outcome (success, dead_lettered).",
    ["outcome", "network"],
)
ATTEMPTS = Counter(
    "fulfillment_attempts_total",
    "Vendor purchase attempts by vendor, outcome and error code (none when it succeeded).",
    ["vendor", "outcome", "error_code"],
)
RETRIES = Counter(
    "fulfillment_retries_scheduled_total",
    "Messages re-enqueued with a delay, by why (transient, rate_limited, status_check, "
    "circuit_open, no_slot, vendor_busy).",
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
    "Vendor API request latency by vendor (at-ishare, aggregator), endpoint and status class.",
    ["vendor", "endpoint", "status_class"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
VENDOR_BUSY = Counter(
    "fulfillment_vendor_busy_total",
    "Orders handed back without a call because their vendor's share of the worker threads "
    "was in use (a slow vendor: VENDOR_THREAD_SHARE).",
    ["vendor"],
)
VENDOR_THREADS = Gauge(
    "fulfillment_vendor_threads_busy",
    "Worker threads of this process in a call to the vendor (at most its thread share).",
    ["vendor"],
    multiprocess_mode="livesum",
)
MESSAGES_ELSEWHERE = Counter(
    "fulfillment_messages_left_for_other_hosts_total",
    "fulfill_order messages for a network another host serves, sent again for it (a rolling "
    "change of NETWORKS_ENABLED).",
    ["network"],
)
TIME_TO_SUCCESS = Histogram(
    "fulfillment_time_to_success_seconds",
    "Time from order creation to confirmed delivery (the SLA figure).",
    buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600),
)


def vendor_observer(vendor: str) -> Callable[[str, int | None, float], None]:
    """The client's per-request hook for one vendor: (endpoint, HTTP status or None: no
    answer, timeout or connection dropped, seconds)."""

    def observe(endpoint: str, status: int | None, seconds: float) -> None:
        status_class = "error" if status is None else f"{status // 100}xx"
        VENDOR_LATENCY.labels(vendor=vendor, endpoint=endpoint, status_class=status_class).observe(
            seconds
        )

    return observe


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


SMS_SENT = Counter(
    "fulfillment_sms_sent_total",
    "Customer SMS the provider took, by kind (delivered, failed: the outcome it tells).",
    ["kind"],
)
SMS_RESULTS = Counter(
    "fulfillment_sms_results_total",
    "Customer SMS that reached their last status (delivered, failed, undeliverable, skipped, "
    "sent: no report came), by kind.",
    ["kind", "status"],
)
SMS_PROVIDER_ERRORS = Counter(
    "fulfillment_sms_provider_errors_total",
    "SMS provider calls that did not succeed, by what they meant (retry_later, unknown, rejected).",
    ["error"],
)
EVENTS_DELIVERED = Counter(
    "fulfillment_platform_events_delivered_total",
    "Outcome events the platform acknowledged (a 2xx), by type.",
    ["type"],
)
EVENT_FAILURES = Counter(
    "fulfillment_platform_event_failures_total",
    "Outcome event POSTs the platform did not acknowledge, by result (retry, gave_up).",
    ["result"],
)
