"""A vendor's share of this process's worker threads (a bulkhead).

At most `limit` threads of the process are in calls to one vendor at once. The next one
waits for a place only while this vendor's calls end quickly (its recent calls average at
most MAX_WAIT_S / 2: a place frees within about two of them, never more than MAX_WAIT_S);
otherwise it is refused at once, and its order is handed back, delayed, without a vendor
call and without spending an attempt. So a vendor answering in 10 s holds at most its share
of the threads and no other thread waits for it, while a healthy vendor's short bursts are
absorbed in place instead of being re-enqueued. The delay it suggests follows how long this
vendor's calls take lately: a slow vendor's orders come back when a place is likely to be
free, not in a busy loop.

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
MIN_DELAY_S = 5.0
MAX_DELAY_S = 30.0
#: the longest a thread waits for a place (only for a vendor whose calls end within half)
MAX_WAIT_S = 1.0
#: the wait before any call was measured
FIRST_WAIT_S = 0.5


def thread_limit(share: float, threads: int) -> int:
    """The threads a vendor may hold: its share of the group's, at least one."""
    return max(1, math.floor(share * threads + 1e-9))


@dataclass
class Bulkhead:
    vendor: str
    limit: int
    _in_use: int = 0
    _avg_call_s: float = 0.0
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def enter(self) -> bool:
        """A place, at once or after a short wait (a vendor whose calls end quickly only);
        False when there is none."""
        with self._lock:
            if self._in_use >= self.limit:
                wait_s = self._wait_s()
                if wait_s <= 0 or not self._lock.wait_for(
                    lambda: self._in_use < self.limit, timeout=wait_s
                ):
                    return False
            self._in_use += 1
        metrics.VENDOR_THREADS.labels(vendor=self.vendor).inc()
        return True

    def _wait_s(self) -> float:
        if self._avg_call_s == 0.0:
            return FIRST_WAIT_S
        if self._avg_call_s > MAX_WAIT_S / 2:
            return 0.0  # a slow vendor: no thread waits for it
        return min(2 * self._avg_call_s, MAX_WAIT_S)

    def leave(self, seconds: float) -> None:
        with self._lock:
            self._in_use = max(self._in_use - 1, 0)
            if self._avg_call_s == 0.0:
                self._avg_call_s = seconds
            else:
                self._avg_call_s += _EWMA_ALPHA * (seconds - self._avg_call_s)
            self._lock.notify()
        metrics.VENDOR_THREADS.labels(vendor=self.vendor).dec()

    @property
    def in_use(self) -> int:
        return self._in_use

    def busy_delay_s(self) -> float:
        """When a refused order should come back: about one of this vendor's calls from
        now, spread so that the refused do not all return at once."""
        base = min(max(self._avg_call_s, MIN_DELAY_S), MAX_DELAY_S)
        return base * random.uniform(0.75, 1.5)  # noqa: S311 - jitter
