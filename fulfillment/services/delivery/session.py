"""The guarded vendor session of one claimed order: every vendor call goes through here.

Around each call: the fleet's circuit breaker (a permit, or a short pause waited out in
place), a fleet-wide rate-limit slot, the call itself with its outcome reported back to the
breaker, and, for a purchase, the mark that its attempt is in flight. When no call can be
made now (circuit open, paused, no slot) it raises Deferred and nothing is spent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from db.store import Claim
from fulfillment.domain.constants import NETWORK_AT_ISHARE
from fulfillment.domain.decision import vendor_wide
from fulfillment.domain.errors import InsufficientBalance, RateLimited, VendorError
from fulfillment.services.ports import FulfilDeps, Permit
from fulfillment.telemetry import metrics
from fulfillment.telemetry.logs import get_logger
from fulfillment.vendors.answer import VendorAnswer

log = get_logger("fulfillment.worker")

#: Spread of the wake-ups after a pause waited out in place.
PAUSE_JITTER_S = 0.2
#: A purchase whose claim is older than this reads fleet_pauses again before it is sent.
PAUSE_RECHECK_AFTER_S = 1.0


class Deferred(Exception):
    """No vendor call now (circuit open, paused, no rate-limit slot): nothing is spent."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s


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
        self.network = order.network or NETWORK_AT_ISHARE
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
            attempt=order.attempts,
            phone=order.phone_number,
        )

    def guarded(self, call: Callable[[], VendorAnswer]) -> VendorAnswer:
        """One vendor call (a status lookup) behind the breaker and a rate-limit slot."""
        permit = self.permit()
        with self.slot():
            return self.send(call, permit)

    @contextmanager
    def purchase_slot(self, attempt: int) -> Iterator[Permit]:
        """The permit and the slot for a purchase, its attempt marked in flight inside them.

        The rate-limit slot comes before a purchase is sent; an order that cannot get one
        waits without an attempt to account for (a fresh order's mark, set by its claim, is
        cleared again when the order is deferred)."""
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
        permit = self.deps.breaker.allow()
        if not permit.allowed and permit.retry_in_s + PAUSE_JITTER_S <= min(
            self.deps.wait_in_place_s, self.wait_budget()
        ):
            # A short pause (a 429's Retry-After): waiting here costs less than handing the
            # order back and taking it again, and keeps its place in the line.
            time.sleep(permit.retry_in_s + random.uniform(0.0, PAUSE_JITTER_S))  # noqa: S311
            metrics.PAUSE_WAITS.inc()
            permit = self.deps.breaker.allow()
        if not permit.allowed:
            raise Deferred(permit.retry_in_s)
        self.probe_taken = self.probe_taken or permit.probe
        return permit

    @contextmanager
    def slot(self) -> Iterator[None]:
        """A fleet-wide rate-limit slot held for one vendor call, or Deferred."""
        with self.deps.gate.slot(max_wait_s=self.wait_budget()) as admitted:
            if not admitted:
                raise Deferred(random.uniform(0.5, 2.0))  # noqa: S311 - jitter
            yield

    def send(self, call: Callable[[], VendorAnswer], permit: Permit) -> VendorAnswer:
        """Make the call and tell the breaker how it went (a 402 or a 429 pauses the fleet)."""
        try:
            answer = call()
        except VendorError as exc:
            wide = vendor_wide(exc)
            self._report(success=not wide, probe=permit.probe)
            if isinstance(exc, InsufficientBalance):
                self.deps.breaker.trip(self.deps.balance_pause_s, "insufficient_balance")
            if isinstance(exc, RateLimited) and exc.retry_after_s:
                # The vendor asked everyone to wait: the whole fleet pauses, not one order.
                self.deps.breaker.trip(exc.retry_after_s, "rate_limited", alert=False)
            self.vendor_down = wide and (permit.probe or self.deps.breaker.is_open())
            raise
        self._report(success=True, probe=permit.probe)
        return answer

    def release_unused_probe(self) -> None:
        if self.probe_taken and not self.probe_reported:
            # We held the half-open probe but made no call (claim lost, database error):
            # hand it on now rather than make the fleet wait for its expiry.
            self.deps.breaker.release_probe()

    def lease_age(self) -> float:
        return time.monotonic() - self.leased_at

    def wait_budget(self) -> float:
        """How much longer this message may wait before a vendor call: waits end within half
        the lease (the other half covers the call and recording its answer)."""
        return self.deps.claim_ttl_s / 2 - self.lease_age()

    def _report(self, *, success: bool, probe: bool) -> None:
        self.deps.breaker.record(success=success, probe=probe)
        self.probe_reported = self.probe_reported or probe
