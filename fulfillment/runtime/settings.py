"""Configuration from the environment (DESIGN.md table), read once per process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fulfillment.domain.constants import DEFAULT_REDIS_NAMESPACE
from fulfillment.domain.errors import ConfigurationError


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

    log_format: Literal["json", "console"] = "json"
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    #: Where embedded development servers keep their state.
    fulfillment_dev_dir: Path = Path(".fulfillment-dev")

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if not parts:
                raise ValueError("RETRY_DELAYS needs at least one number of seconds")
            return tuple(float(p) for p in parts)
        return value

    @field_validator("retry_delays")
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
