"""The fleet-wide gate in front of the vendor: at most N requests per second and M at once,
across every worker on every host (Dramatiq's Redis-backed rate limiters).

A worker that cannot get a slot within a short wait gives the order back, delayed, without a
vendor call and without spending an attempt (like an open circuit). The vendor's own
Retry-After is honoured on top of this: a 429 pauses the whole fleet for that long (the
breaker's trip), not just the order that got it.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from typing import Any

from dramatiq.rate_limits import ConcurrentRateLimiter, WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend
from redis.exceptions import RedisError

from fulfillment.logs import get_logger

log = get_logger("fulfillment.ratelimit")


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
    ) -> None:
        backend = RedisBackend(client=client)
        self.max_wait_s = max_wait_s
        self.window = (
            WindowRateLimiter(  # type: ignore[no-untyped-call]
                backend, f"{namespace}:fulfillment:vendor-rate", limit=per_second, window=1
            )
            if per_second > 0
            else None
        )
        self.concurrency = (
            ConcurrentRateLimiter(  # type: ignore[no-untyped-call]
                backend,
                f"{namespace}:fulfillment:vendor-concurrency",
                limit=concurrent,
                ttl=int(call_ttl_s * 1000),
            )
            if concurrent > 0
            else None
        )

    @contextlib.contextmanager
    def slot(self, max_wait_s: float | None = None) -> Iterator[bool]:
        """Yields True with a slot held for the call, or False when none came within the wait
        (max_wait_s, when shorter than the gate's own: the caller's lease allows no more)."""
        wait = self.max_wait_s if max_wait_s is None else min(self.max_wait_s, max_wait_s)
        deadline = time.monotonic() + max(wait, 0.0)
        with contextlib.ExitStack() as stack:
            try:
                if self.concurrency is not None and not self._wait(
                    stack, self.concurrency, deadline
                ):
                    yield False
                    return
                if self.window is not None and not self._wait(stack, self.window, deadline):
                    yield False
                    return
            except RedisError as exc:  # the gate protects the vendor; it must not stop us
                log.warning("ratelimit.redis_unavailable", error=type(exc).__name__)
            yield True

    @staticmethod
    def _wait(stack: contextlib.ExitStack, limiter: Any, deadline: float) -> bool:
        while True:
            acquired = stack.enter_context(limiter.acquire(raise_on_failure=False))
            if acquired:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(random.uniform(0.01, 0.05))  # noqa: S311 - jitter, not crypto
