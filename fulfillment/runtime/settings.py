"""Configuration from the environment (DESIGN.md table), read once per process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fulfillment.domain.constants import DEFAULT_REDIS_NAMESPACE
from fulfillment.domain.errors import ConfigurationError
from fulfillment.domain.networks import (
    VENDOR_AGGREGATOR,
    VENDOR_AT_ISHARE,
    parse_networks,
    parse_routes,
)


@dataclass(frozen=True, slots=True)
class VendorProfile:
    """One vendor connection's own settings: limits, breaker, balance, HTTP."""

    name: str
    connect_timeout_s: float
    read_timeout_s: float
    max_connections: int
    #: fleet-wide requests per second and at once (0: none)
    rate_limit_per_s: int
    max_concurrency: int
    #: the share of a worker process's threads its calls may hold at once
    thread_share: float
    balance_alert_threshold: float
    #: its circuit breaker's first open period and failure ratio
    breaker_open_s: float
    breaker_failure_ratio: float


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, frozen=True)

    database_url: str | None = None
    redis_url: str | None = None
    #: Prefix of every Redis key this fleet writes; lets test runs share one Redis.
    redis_namespace: str = DEFAULT_REDIS_NAMESPACE

    at_ishare_api_url: str | None = None
    at_ishare_api_key: SecretStr | None = None
    at_ishare_api_secret: SecretStr | None = None
    vendor_connect_timeout_s: float = 3.0
    vendor_read_timeout_s: float = 10.0
    #: HTTP connections to the vendor per process; keep it at least WORKER_THREADS, or threads
    #: wait for a connection (measured: 2 x 32 threads at 200 ms, 20 -> 32: 192 -> 275/s)
    vendor_max_connections: int = Field(default=20, ge=1)

    #: the networks this process fulfils (comma-separated), and which vendor serves each
    #: (network=vendor pairs over the defaults: at-ishare=at-ishare, the others=aggregator)
    networks_enabled: str = "at-ishare"
    network_vendors: str = ""
    #: what each network sells (TOML: [network] brand = "MTN", sizes = ["1GB", ...]);
    #: unset: the shipped catalogue (fulfillment/domain/package.py DEFAULT_CATALOGUE)
    package_catalogue_file: Path | None = None
    #: the share of a worker process's threads AT-iShare's calls may hold at once, when this
    #: process serves more than one vendor (its other settings are the VENDOR_* above)
    at_ishare_thread_share: float = Field(default=0.75, gt=0, le=1)

    #: the data aggregator (DESIGN.md "Other networks"), its own limits, breaker and balance
    aggregator_api_url: str | None = None
    aggregator_api_token: SecretStr | None = None
    aggregator_webhook_secret: SecretStr | None = None
    aggregator_connect_timeout_s: float = 3.0
    aggregator_read_timeout_s: float = 10.0
    aggregator_max_connections: int = Field(default=20, ge=1)
    aggregator_rate_limit_per_s: int = Field(default=0, ge=0)
    aggregator_max_concurrency: int = Field(default=0, ge=0)
    aggregator_thread_share: float = Field(default=0.25, gt=0, le=1)
    aggregator_balance_alert_threshold: float = Field(default=100.0, ge=0)
    #: unset: BREAKER_OPEN_S, BREAKER_FAILURE_RATIO
    aggregator_breaker_open_s: float | None = Field(default=None, gt=0)
    aggregator_breaker_failure_ratio: float | None = Field(default=None, gt=0, le=1)
    #: worker threads per process (the Procfile's --threads); sizes the thread shares when
    #: the process cannot tell (outside a Dramatiq worker)
    worker_threads: int = Field(default=8, ge=1)

    retry_delays: Annotated[tuple[float, ...], NoDecode] = (300.0, 900.0, 3600.0)
    max_attempts: int = Field(default=3, ge=1)
    fulfillment_enabled: bool = True

    #: How long a worker owns an order it claimed; a killed worker's claim expires after it.
    claim_ttl_s: float = Field(default=120.0, gt=0)
    #: Wait between status checks of a purchase the vendor answered "pending".
    status_check_delay_s: float = Field(default=60.0, gt=0)
    #: Status checks (pending or unknown outcome) before a human must look.
    max_status_checks: int = Field(default=30, ge=1)
    #: Retries that keep the attempt (rate limits) before a human must look.
    max_deferrals: int = Field(default=50, ge=1)

    #: How long an order may sit overdue before the reconciler re-enqueues it.
    reconcile_grace_s: float = Field(default=300.0, ge=0)
    reconcile_interval_s: float = Field(default=30.0, gt=0)

    #: the vendor circuit breaker (fleet-wide, in Redis): see fulfillment/fleet/breaker.py
    breaker_window_s: int = Field(default=60, ge=1)
    breaker_min_calls: int = Field(default=20, ge=1)
    breaker_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    #: also open, at any volume, on this many vendor-wide failures when no call in the
    #: window succeeded
    breaker_quiet_failures: int = Field(default=2, ge=1)
    breaker_open_s: float = Field(default=30.0, gt=0)
    breaker_max_open_s: float = Field(default=300.0, gt=0)
    #: how long an INSUFFICIENT_BALANCE answer pauses purchases fleet-wide
    balance_pause_s: float = Field(default=60.0, gt=0)
    #: a pause this short (a 429's Retry-After) is waited out by the worker holding the order
    #: instead of handing the order back (0: always hand it back)
    breaker_wait_in_place_s: float = Field(default=2.0, ge=0, le=10)

    #: fleet-wide vendor limits (0: none): requests per second, and requests at once
    vendor_rate_limit_per_s: int = Field(default=0, ge=0)
    vendor_max_concurrency: int = Field(default=0, ge=0)

    #: vendor balance watch (reconciler): how often, and below what an admin is told
    balance_check_interval_s: float = Field(default=300.0, gt=0)
    balance_alert_threshold: float = Field(default=100.0, ge=0)

    admin_token: SecretStr | None = None
    api_token: SecretStr | None = None
    admin_webhook_url: str | None = None
    webhook_timeout_s: float = 5.0
    webhook_attempts: int = Field(default=3, ge=1)

    #: the customer's SMS (DESIGN.md "Customer SMS"): unset URL: every SMS stored as skipped
    sms_api_url: str | None = None
    sms_client_id: SecretStr | None = None
    sms_client_secret: SecretStr | None = None
    sms_sender_id: str | None = None
    sms_enabled: bool = True
    #: the SMS texts (TOML: [default] delivered, failed_refund, failed_support; a table per
    #: network overrides them); unset: the shipped fulfillment/domain/sms_templates.toml
    sms_templates_file: Path | None = None
    sms_timeout_s: float = Field(default=10.0, gt=0)
    #: sends of one SMS before it is failed (an admin may retry it)
    sms_max_sends: int = Field(default=6, ge=1)
    #: the platform's outcome events (DESIGN.md "What the platform is told"): unset URL:
    #: events are only stored
    platform_webhook_url: str | None = None
    platform_webhook_secret: SecretStr | None = None
    platform_webhook_timeout_s: float = Field(default=10.0, gt=0)
    #: POSTs of one event before it is failed (an admin may resend it)
    platform_event_max_attempts: int = Field(default=12, ge=1)
    #: waits between tries of one SMS or event (seconds; the last repeats), and between reads
    #: of a sent SMS's delivery report
    notify_retry_delays: Annotated[tuple[float, ...], NoDecode] = (
        10.0,
        30.0,
        120.0,
        600.0,
        1800.0,
        3600.0,
    )
    sms_report_delays: Annotated[tuple[float, ...], NoDecode] = (10.0, 30.0, 120.0, 600.0)
    #: how long an outbox row may sit overdue before the reconciler re-enqueues it
    outbox_grace_s: float = Field(default=60.0, ge=0)

    log_format: Literal["json", "console"] = "json"
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    #: Where embedded development servers keep their state.
    fulfillment_dev_dir: Path = Path(".fulfillment-dev")

    @field_validator("retry_delays", "notify_retry_delays", "sms_report_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if not parts:
                raise ValueError("a list of delays needs at least one number of seconds")
            return tuple(float(p) for p in parts)
        return value

    @field_validator("retry_delays", "notify_retry_delays", "sms_report_delays")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(v < 0 for v in value):
            raise ValueError("RETRY_DELAYS must not be negative")
        return value

    @model_validator(mode="after")
    def _pool_sizes(self) -> Settings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE")
        return self

    @model_validator(mode="after")
    def _networks(self) -> Settings:
        try:
            networks = self.networks()
            self.routes()
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc
        if not networks:
            raise ValueError("NETWORKS_ENABLED names no network")
        return self

    @model_validator(mode="after")
    def _notifications(self) -> Settings:
        if self.sms_sender_id is not None and not 1 <= len(self.sms_sender_id) <= 11:
            raise ValueError(
                f"SMS_SENDER_ID must be 1 to 11 characters (got {len(self.sms_sender_id)})"
            )
        return self

    def sms_credentials(self) -> tuple[str, str, str, str] | None:
        """(url, client id, secret, sender id), None when SMS_API_URL is unset; a clear error
        when the URL is set without the rest."""
        if not self.sms_api_url:
            return None
        missing = [
            name
            for name, value in (
                ("SMS_CLIENT_ID", self.sms_client_id),
                ("SMS_CLIENT_SECRET", self.sms_client_secret),
                ("SMS_SENDER_ID", self.sms_sender_id),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError(
                f"SMS provider not configured: SMS_API_URL is set, set {', '.join(missing)}"
            )
        assert self.sms_client_id
        assert self.sms_client_secret
        assert self.sms_sender_id
        return (
            self.sms_api_url.rstrip("/"),
            self.sms_client_id.get_secret_value(),
            self.sms_client_secret.get_secret_value(),
            self.sms_sender_id,
        )

    def platform_webhook(self) -> tuple[str, str] | None:
        """(url, secret), None when PLATFORM_WEBHOOK_URL is unset; a clear error when the URL
        is set without its secret."""
        if not self.platform_webhook_url:
            return None
        if not self.platform_webhook_secret:
            raise ConfigurationError(
                "platform webhook not configured: PLATFORM_WEBHOOK_URL is set, "
                "set PLATFORM_WEBHOOK_SECRET"
            )
        return self.platform_webhook_url, self.platform_webhook_secret.get_secret_value()

    def networks(self) -> frozenset[str]:
        """NETWORKS_ENABLED: the networks this process fulfils."""
        return parse_networks(self.networks_enabled)

    def routes(self) -> dict[str, str]:
        """Network -> vendor connection name, for every network this process fulfils."""
        return parse_routes(self.network_vendors, self.networks())

    def vendor_profile(self, vendor: str) -> VendorProfile:
        """A vendor connection's own settings. AT-iShare's keep the names they had
        (VENDOR_*, BREAKER_*, BALANCE_ALERT_THRESHOLD); the aggregator's are AGGREGATOR_*."""
        if vendor == VENDOR_AGGREGATOR:
            return VendorProfile(
                name=vendor,
                connect_timeout_s=self.aggregator_connect_timeout_s,
                read_timeout_s=self.aggregator_read_timeout_s,
                max_connections=self.aggregator_max_connections,
                rate_limit_per_s=self.aggregator_rate_limit_per_s,
                max_concurrency=self.aggregator_max_concurrency,
                thread_share=self.aggregator_thread_share,
                balance_alert_threshold=self.aggregator_balance_alert_threshold,
                breaker_open_s=self.aggregator_breaker_open_s or self.breaker_open_s,
                breaker_failure_ratio=(
                    self.aggregator_breaker_failure_ratio or self.breaker_failure_ratio
                ),
            )
        if vendor != VENDOR_AT_ISHARE:
            raise ConfigurationError(f"no settings for vendor {vendor!r}")
        return VendorProfile(
            name=vendor,
            connect_timeout_s=self.vendor_connect_timeout_s,
            read_timeout_s=self.vendor_read_timeout_s,
            max_connections=self.vendor_max_connections,
            rate_limit_per_s=self.vendor_rate_limit_per_s,
            max_concurrency=self.vendor_max_concurrency,
            thread_share=self.at_ishare_thread_share,
            balance_alert_threshold=self.balance_alert_threshold,
            breaker_open_s=self.breaker_open_s,
            breaker_failure_ratio=self.breaker_failure_ratio,
        )

    def aggregator_credentials(self) -> tuple[str, str]:
        """(url, token); a clear error when a network routes to the aggregator without it."""
        missing = [
            name
            for name, value in (
                ("AGGREGATOR_API_URL", self.aggregator_api_url),
                ("AGGREGATOR_API_TOKEN", self.aggregator_api_token),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError(f"aggregator not configured: set {', '.join(missing)}")
        assert self.aggregator_api_url
        assert self.aggregator_api_token
        return self.aggregator_api_url.rstrip("/"), self.aggregator_api_token.get_secret_value()

    def vendor_credentials(self) -> tuple[str, str, str]:
        """(url, key, secret); a clear error when the vendor is not configured."""
        missing = [
            name
            for name, value in (
                ("AT_ISHARE_API_URL", self.at_ishare_api_url),
                ("AT_ISHARE_API_KEY", self.at_ishare_api_key),
                ("AT_ISHARE_API_SECRET", self.at_ishare_api_secret),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError(f"vendor not configured: set {', '.join(missing)}")
        assert self.at_ishare_api_url
        assert self.at_ishare_api_key
        assert self.at_ishare_api_secret
        return (
            self.at_ishare_api_url.rstrip("/"),
            self.at_ishare_api_key.get_secret_value(),
            self.at_ishare_api_secret.get_secret_value(),
        )
