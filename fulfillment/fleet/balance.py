"""The vendor balance watch: read it periodically, publish it for metrics, and tell admins
once each time it drops below the threshold (and again only after it recovered)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from fulfillment.domain.constants import vendor_keys
from fulfillment.domain.errors import VendorError
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.balance")


def balance_key(namespace: str, vendor: str) -> str:
    return f"{vendor_keys(namespace, vendor)}:vendor_balance"


@dataclass
class BalanceWatch:
    read_balance: Callable[[], float]
    redis: Any
    namespace: str
    threshold: float
    interval_s: float
    #: (kind, message, dedupe key, details) -> store and send a notification once
    notify: Callable[[str, str, str, dict[str, Any]], None]
    clock: Callable[[], float] = time.time
    #: whose balance: its keys (constants.vendor_keys), and how alerts name it
    vendor: str = "at-ishare"
    display_name: str = "AT-iShare"

    @property
    def key(self) -> str:
        """Where the last reading is kept (the metrics read it)."""
        return balance_key(self.namespace, self.vendor)

    @property
    def _key(self) -> str:
        return self.key

    @property
    def _low_key(self) -> str:
        return f"{self.key}_low_since"

    def check_if_due(self) -> float | None:
        """Read the balance unless another process did within the interval (fleet-wide)."""
        try:
            if not self.redis.set(
                f"{self._key}:lock", "1", nx=True, px=int(self.interval_s * 1000)
            ):
                return None
        except RedisError as exc:
            log.warning("balance.redis_unavailable", error=type(exc).__name__)
            return None
        return self.check()

    def check(self) -> float | None:
        try:
            balance = self.read_balance()
        except VendorError as exc:
            log.warning("balance.read_failed", error_code=exc.code)
            return None
        try:
            self.redis.set(self._key, balance)
            if balance < self.threshold:
                crossed_at = int(self.clock())
                if self.redis.set(self._low_key, crossed_at, nx=True):
                    log.error(
                        "balance.low", vendor=self.vendor, balance=balance, threshold=self.threshold
                    )
                    self.notify(
                        "vendor_balance_low",
                        f"{self.display_name} balance {balance:.2f} GHS is below "
                        f"{self.threshold:.2f} GHS",
                        f"vendor_balance_low:{self.vendor}:{crossed_at}",
                        {"balance": balance, "threshold": self.threshold, "vendor": self.vendor},
                    )
            elif self.redis.delete(self._low_key):
                log.warning("balance.recovered", balance=balance, threshold=self.threshold)
        except RedisError as exc:
            log.warning("balance.redis_unavailable", error=type(exc).__name__)
        log.info("balance.read", vendor=self.vendor, balance=balance)
        return balance
