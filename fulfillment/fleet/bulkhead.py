"""A vendor's share of this process's worker threads (a bulkhead).

At most `limit` threads of the process are in calls to one vendor at once; the next one is
refused at once (never queued), and its order is handed back, delayed, without a vendor call
and without spending an attempt. So a vendor answering in 10 s holds at most its share of
the threads, and the others go on delivering the other vendors' networks. The delay it
suggests follows how long this vendor's calls take lately: a slow vendor's orders come back
when a place is likely to be free, not in a busy loop.

Per process, not fleet-wide: the threads it protects are this process's (a fleet-wide limit
on the vendor itself is fulfillment/fleet/ratelimit.py).
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, field

from fulfillment.telemetry import metrics

#: the weight of the newest call in the running average of call durations
_EWMA_ALPHA = 0.2
MIN_DELAY_S = 1.0
MAX_DELAY_S = 30.0


def thread_limit(share: float, threads: int) -> int:
    """The threads a vendor may hold: its share of the group's, at least one."""
    return max(1, math.floor(share * threads + 1e-9))


@dataclass
class Bulkhead:
    vendor: str
    limit: int
    _in_use: int = 0
    _avg_call_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> bool:
        with self._lock:
            if self._in_use >= self.limit:
                return False
            self._in_use += 1
        metrics.VENDOR_THREADS.labels(vendor=self.vendor).inc()
        return True

    def leave(self, seconds: float) -> None:
        with self._lock:
            self._in_use = max(self._in_use - 1, 0)
            if self._avg_call_s == 0.0:
                self._avg_call_s = seconds
            else:
                self._avg_call_s += _EWMA_ALPHA * (seconds - self._avg_call_s)
        metrics.VENDOR_THREADS.labels(vendor=self.vendor).dec()

    @property
    def in_use(self) -> int:
        return self._in_use

    def busy_delay_s(self) -> float:
        """When a refused order should come back: about one of this vendor's calls from
        now, spread so that the refused do not all return at once."""
        base = min(max(self._avg_call_s, MIN_DELAY_S), MAX_DELAY_S)
        return base * random.uniform(0.75, 1.5)  # noqa: S311 - jitter
