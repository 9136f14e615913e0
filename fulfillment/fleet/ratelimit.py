"""The fleet-wide gate in front of the vendor: at most N requests per second and M at once,
across every worker on every host.

Requests per second: Dramatiq's WindowRateLimiter (per-second counters that expire with their
second, so nothing a dead worker took outlives it). Requests at once: our own slots, a Redis
sorted set of holders scored by when their lease ends on Redis's clock. Taking a slot drops
expired holders first, so a worker killed during a call gives its slot back when its lease
ends, however busy the rest of the fleet is (Dramatiq's ConcurrentRateLimiter kept one
counter whose TTL every acquire and release renewed: a killed worker's slot was lost until
the whole fleet idled for the TTL).

A worker that cannot get a slot within a short wait gives the order back, delayed, without a
vendor call and without spending an attempt (like an open circuit). The vendor's own
Retry-After is honoured on top of this: a 429 pauses the whole fleet for that long (the
breaker's trip), not just the order that got it. Redis errors let calls through: the gate
protects the vendor, it must not stop the fleet.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend
from redis.exceptions import RedisError

from fulfillment.domain.constants import vendor_keys
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.ratelimit")

# KEYS: the slots' sorted set. ARGV: holder, limit, lease (s). Returns 1 when taken.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], string.format('%.6f', now + lease), ARGV[1])
-- an idle fleet leaves no key behind; holders expire by their score, not by this
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 1000)
return 1
"""


class ConcurrencySlots:
    """At most `limit` holders at once, fleet-wide; a holder's slot is freed when it
    releases it or when its lease (`lease_s`, on Redis's clock) ends, whichever is first."""

    def __init__(self, client: Any, key: str, *, limit: int, lease_s: float) -> None:
        self.client = client
        self.key = key
        self.limit = limit
        self.lease_s = lease_s
        self._take = client.register_script(_TAKE_SLOT)

    @contextlib.contextmanager
    def acquire(self) -> Iterator[bool]:
        """Yields whether a slot was taken; a slot taken is released on exit."""
        holder = uuid.uuid4().hex
        taken = bool(self._take(keys=[self.key], args=[holder, self.limit, self.lease_s]))
        try:
            yield taken
        finally:
            if taken:
                self._release(holder)

    def _release(self, holder: str) -> None:
        try:
            self.client.zrem(self.key, holder)
        except RedisError as exc:  # the lease frees it
            log.warning("ratelimit.redis_unavailable", error=type(exc).__name__)


class VendorGate:
    def __init__(
        self,
        client: Any,
        namespace: str,
        *,
        per_second: int,
        concurrent: int,
        max_wait_s: float = 2.0,
        call_ttl_s: float = 60.0,
        vendor: str = "at-ishare",
    ) -> None:
        """`call_ttl_s`: the lease of a concurrency slot; a killed worker's slot is free again
        after it. Keep it longer than any vendor call (bootstrap passes CLAIM_TTL_S)."""
        self.max_wait_s = max_wait_s
        #: what a call must get, in this order; each one acquire, as a context manager
        self._limits: list[Callable[[], AbstractContextManager[bool]]] = []
        if concurrent > 0:
            slots = ConcurrencySlots(
                client,
                f"{vendor_keys(namespace, vendor)}:vendor-slots",
                limit=concurrent,
                lease_s=call_ttl_s,
            )
            self._limits.append(slots.acquire)
        if per_second > 0:
            window = WindowRateLimiter(  # type: ignore[no-untyped-call]
                RedisBackend(client=client),
                f"{vendor_keys(namespace, vendor)}:vendor-rate",
                limit=per_second,
                window=1,
            )
            self._limits.append(lambda: window.acquire(raise_on_failure=False))

    @contextlib.contextmanager
    def slot(self, max_wait_s: float | None = None) -> Iterator[bool]:
        """Yields True with a slot held for the call, or False when none came within the wait
        (max_wait_s, when shorter than the gate's own: the caller's lease allows no more)."""
        wait = self.max_wait_s if max_wait_s is None else min(self.max_wait_s, max_wait_s)
        deadline = time.monotonic() + max(wait, 0.0)
        with contextlib.ExitStack() as stack:
            try:
                admitted = all(self._wait(stack, limit, deadline) for limit in self._limits)
            except RedisError as exc:  # the gate protects the vendor; it must not stop us
                log.warning("ratelimit.redis_unavailable", error=type(exc).__name__)
                admitted = True
            yield admitted

    @staticmethod
    def _wait(
        stack: contextlib.ExitStack,
        acquire: Callable[[], AbstractContextManager[bool]],
        deadline: float,
    ) -> bool:
        while True:
            if stack.enter_context(acquire()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(random.uniform(0.01, 0.05))  # noqa: S311 - jitter, not crypto
