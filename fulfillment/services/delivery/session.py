"""The guarded vendor session of one claimed order: every vendor call goes through here.

The order's network names its vendor connection (FulfilDeps.routes); everything around a
call is that vendor's own. Around each call: a place in the vendor's share of this
process's threads (its bulkhead: never waited for when the vendor is slow), the vendor's
circuit breaker (a permit, or a short pause waited out in place), its fleet-wide
rate-limit slot, the call itself with its outcome reported back to the breaker, and, for a
purchase, the mark that its attempt is in flight. When no call can be made now (bulkhead
full, circuit open, paused, no slot) it raises Deferred and nothing is spent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from db.store import Claim
from fulfillment.domain.decision import vendor_wide
from fulfillment.domain.errors import (
    ConfigurationError,
    InsufficientBalance,
    RateLimited,
    VendorError,
)
from fulfillment.services.ports import FulfilDeps, Permit, VendorConnection
from fulfillment.telemetry import metrics
from fulfillment.telemetry.logs import get_logger
from fulfillment.vendors.answer import VendorAnswer

log = get_logger("fulfillment.worker")

#: Spread of the wake-ups after a pause waited out in place.
PAUSE_JITTER_S = 0.2
#: A purchase whose claim is older than this reads fleet_pauses again before it is sent.
PAUSE_RECHECK_AFTER_S = 1.0


class Deferred(Exception):
    """No vendor call now: nothing is spent. reason: circuit_open (or a vendor pause),
    no_slot (its rate limit), vendor_busy (its share of the threads is in use)."""

    def __init__(self, delay_s: float, reason: str = "circuit_open") -> None:
        self.delay_s = delay_s
        self.reason = reason


class PausedMeanwhile(Exception):
    """The order's scope was paused while its purchase waited: give it back, buy nothing."""

    def __init__(self, scope: str) -> None:
        self.scope = scope


class ClaimLost(Exception):
    """Another worker took the order (our lease ended): stop, write nothing more."""


class VendorSession:
    """One claimed order's calls to the vendor, behind the fleet's breaker and rate limit."""

    def __init__(self, deps: FulfilDeps, claim: Claim, token: str) -> None:
        order = claim.order
        self.deps = deps
        self.order_id = order.id
        self.network = order.network or ""
        line = deps.routes.get(self.network)
        if line is None:  # the claim takes only orders of the networks routed here
            raise ConfigurationError(f"network {self.network!r} is not served by this process")
        #: the order's vendor: its client, breaker, rate limit and thread share
        self.line: VendorConnection = line
        self.token = token
        #: the claim marked attempt 1 in flight and nothing was sent yet: an exit without a
        #: purchase (deferred, invalid) clears the mark
        self.begun_unsent = claim.purchase_begun
        #: the last failed call was vendor-wide while the circuit was open (or its probe)
        self.vendor_down = False
        #: Waits that hold the claim (a pause waited out, a rate-limit slot) end within half
        #: its lease, all together; a purchase after more than a quarter of it renews the lease.
        self.leased_at = time.monotonic()
        self.probe_taken = False
        self.probe_reported = False
        self.log = log.bind(
            order_id=order.id,
            network=order.network,
            vendor=line.name,
            attempt=order.attempts,
            phone=order.phone_number,
        )

    def guarded(self, call: Callable[[], VendorAnswer]) -> VendorAnswer:
        """One vendor call (a status lookup) behind the bulkhead, the breaker and a
        rate-limit slot."""
        with self.bulkhead():
            permit = self.permit()
            with self.slot():
                return self.send(call, permit)

    @contextmanager
    def bulkhead(self) -> Iterator[None]:
        """A place in the vendor's share of this process's threads, or Deferred: a slow
        vendor holds at most its share, and a thread never queues behind it (a short wait
        for a vendor whose calls end quickly, fulfillment/fleet/bulkhead.py)."""
        bulkhead = self.line.bulkhead
        if not bulkhead.enter():
            metrics.VENDOR_BUSY.labels(vendor=self.line.name).inc()
            raise Deferred(bulkhead.busy_delay_s(), "vendor_busy")
        started = time.monotonic()
        try:
            yield
        finally:
            bulkhead.leave(time.monotonic() - started)

    @contextmanager
    def purchase_slot(self, attempt: int) -> Iterator[Permit]:
        """The permit and the slot for a purchase, its attempt marked in flight inside them.

        The rate-limit slot comes before a purchase is sent; an order that cannot get one
        waits without an attempt to account for (a fresh order's mark, set by its claim, is
        cleared again when the order is deferred)."""
        with self.bulkhead():
            permit = self.permit()
            with self.slot():
                self.check_not_paused()
                self.mark_in_flight(attempt)
                yield permit

    def check_not_paused(self) -> None:
        """The claim refused nothing of a paused scope when it was taken; a purchase that
        waited since (a vendor pause waited out, a rate-limit slot: up to half the lease)
        asks again, so that a pause set meanwhile stops it too.
        PausedMeanwhile: the order is given back as it was, nothing spent, and waits for the
        resume like any other order of its scope."""
        if self.lease_age() < PAUSE_RECHECK_AFTER_S:
            return
        scope = self.deps.store.paused_scope(self.network)
        if scope is not None:
            self.log.info("worker.paused_before_purchase", scope=scope)
            raise PausedMeanwhile(scope)

    def mark_in_flight(self, attempt: int) -> None:
        """From here a purchase may be sent: the mark stays."""
        # Marked by the claim (a fresh order) and the lease still young: straight to the
        # POST. Otherwise begin_purchase marks the attempt and renews the lease.
        if not self.begun_unsent or self.lease_age() > self.deps.claim_ttl_s / 4:
            if not self.deps.store.begin_purchase(
                self.order_id, self.token, attempt, ttl_s=self.deps.claim_ttl_s
            ):
                self.log.warning("worker.claim_lost", stage="begin_purchase")
                raise ClaimLost
            self.leased_at = time.monotonic()
        self.begun_unsent = False

    def permit(self) -> Permit:
        permit = self.line.breaker.allow()
        if not permit.allowed and permit.retry_in_s + PAUSE_JITTER_S <= min(
            self.deps.wait_in_place_s, self.wait_budget()
        ):
            # A short pause (a 429's Retry-After): waiting here costs less than handing the
            # order back and taking it again, and keeps its place in the line.
            time.sleep(permit.retry_in_s + random.uniform(0.0, PAUSE_JITTER_S))  # noqa: S311
            metrics.PAUSE_WAITS.inc()
            permit = self.line.breaker.allow()
        if not permit.allowed:
            raise Deferred(permit.retry_in_s)
        self.probe_taken = self.probe_taken or permit.probe
        return permit

    @contextmanager
    def slot(self) -> Iterator[None]:
        """A fleet-wide rate-limit slot held for one vendor call, or Deferred."""
        with self.line.gate.slot(max_wait_s=self.wait_budget()) as admitted:
            if not admitted:
                raise Deferred(random.uniform(0.5, 2.0), "no_slot")  # noqa: S311 - jitter
            yield

    def send(self, call: Callable[[], VendorAnswer], permit: Permit) -> VendorAnswer:
        """Make the call and tell the breaker how it went (a 402 or a 429 pauses the fleet)."""
        try:
            answer = call()
        except VendorError as exc:
            wide = vendor_wide(exc)
            self._report(success=not wide, probe=permit.probe)
            if isinstance(exc, InsufficientBalance):
                self.line.breaker.trip(self.line.balance_pause_s, "insufficient_balance")
            if isinstance(exc, RateLimited) and exc.retry_after_s:
                # The vendor asked everyone to wait: the whole fleet pauses, not one order.
                self.line.breaker.trip(exc.retry_after_s, "rate_limited", alert=False)
            self.vendor_down = wide and (permit.probe or self.line.breaker.is_open())
            raise
        self._report(success=True, probe=permit.probe)
        return answer

    def release_unused_probe(self) -> None:
        if self.probe_taken and not self.probe_reported:
            # We held the half-open probe but made no call (claim lost, database error):
            # hand it on now rather than make the fleet wait for its expiry.
            self.line.breaker.release_probe()

    def lease_age(self) -> float:
        return time.monotonic() - self.leased_at

    def wait_budget(self) -> float:
        """How much longer this message may wait before a vendor call: waits end within half
        the lease (the other half covers the call and recording its answer)."""
        return self.deps.claim_ttl_s / 2 - self.lease_age()

    def _report(self, *, success: bool, probe: bool) -> None:
        self.line.breaker.record(success=success, probe=probe)
        self.probe_reported = self.probe_reported or probe
