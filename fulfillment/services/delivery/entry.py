"""The entry points: claim the order for one message, then run one Attempt on it.

fulfil: the `fulfill_order` actor and the reconciler's recovery; confirm_delivery: the
vendor's callback (the web process); settle_for_dead_letter: the dead-letter consumer's last
look before an order goes to a human.
"""

from __future__ import annotations

import random
import uuid

from fulfillment.domain.decision import Asker
from fulfillment.domain.errors import OrderNotFound
from fulfillment.services.delivery.attempt import Attempt
from fulfillment.services.ports import DeadLetterNotice, FulfilDeps, Outcome
from fulfillment.telemetry import metrics
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.worker")

#: A delayed message may be delivered this early (clock skew between hosts) and still count.
EARLY_TOLERANCE_S = 2.0
#: An early message (clock skew) due within this is sent again for when it is due.
MAX_EARLY_REPUBLISH_S = 120.0
#: A callback or a dead letter takes its order whatever its schedule says.
ANY_TIME_S = 10 * 365 * 86400.0


def fulfil(order_id: str, deps: FulfilDeps, *, allow_purchase: bool = True) -> Outcome:
    """Handle one fulfill_order message. allow_purchase=False: recover only (the reconciler).

    FULFILLMENT_ENABLED=false (read at start): DISABLED. A runtime pause of the order's network
    or of the whole fleet (fleet_pauses, read by the claim itself): PAUSED, the order untouched.
    The recovery never buys, so it goes on while paused."""
    if not deps.enabled:
        log.info("worker.fulfillment_disabled", order_id=order_id)
        return Outcome.DISABLED
    token = str(uuid.uuid4())
    # A fresh order's attempt 1 is marked by the claim itself (one round trip less).
    claim = deps.store.claim(
        order_id,
        token,
        ttl_s=deps.claim_ttl_s,
        early_s=EARLY_TOLERANCE_S,
        networks=deps.networks,
        begin=allow_purchase,
    )
    if claim is None:
        return _not_claimed(order_id, deps)
    asker = Asker.WORKER if allow_purchase else Asker.RECONCILER
    return _announced(order_id, Attempt(claim, token, deps, asker).run(), deps)


def confirm_delivery(order_id: str, deps: FulfilDeps) -> Outcome:
    """The vendor says (webhook) it delivered: confirm with its status endpoint and complete
    the order now instead of at its next scheduled check. Nothing is ever bought here, and
    anything but a confirmed delivery leaves the order exactly as it was (its schedule, its
    status checks): a callback can hurry a delivery, never give an order up."""
    return _take_anytime(order_id, deps, Asker.CALLBACK)


def settle_for_dead_letter(order_id: str, deps: FulfilDeps) -> Outcome:
    """Dramatiq gave up on an order that may have been bought: ask the vendor before anyone
    flags it, so that it goes to a human as delivered, failed (confirmed) or outcome unknown."""
    return _take_anytime(order_id, deps, Asker.DEAD_LETTER)


def _take_anytime(order_id: str, deps: FulfilDeps, asker: Asker) -> Outcome:
    token = str(uuid.uuid4())
    claim = deps.store.claim(
        order_id,
        token,
        ttl_s=deps.claim_ttl_s,
        early_s=ANY_TIME_S,
        networks=deps.networks,
        in_review=True,
    )
    if claim is None:
        if deps.store.get_order(order_id) is None:
            raise OrderNotFound(order_id)
        return Outcome.NOT_DUE
    return _announced(order_id, Attempt(claim, token, deps, asker).run(), deps)


def _announced(order_id: str, outcome: Outcome, deps: FulfilDeps) -> Outcome:
    """A delivery is a final outcome: its SMS and event (written with it) are sent now."""
    if outcome is Outcome.SUCCESS:
        deps.announce(order_id)
    return outcome


def _not_claimed(order_id: str, deps: FulfilDeps) -> Outcome:
    order = deps.store.get_order(order_id)
    if order is None:
        raise OrderNotFound(order_id)
    if order.network not in deps.routes:
        return _not_served_here(order_id, order.network, deps)
    wait = deps.store.seconds_until_due(order_id)
    if wait is not None and 0 < wait <= MAX_EARLY_REPUBLISH_S:
        # Early (clock skew between hosts): come back when the database says it is due.
        deps.publish_retry(order_id, wait)
    elif order.open and (scope := deps.store.paused_scope(order.network or "")):
        # Its scope is paused (when the claim would have taken it otherwise is the claim's
        # rule, not repeated here): the order waits as it is, no attempt spent, nothing sent
        # again; the resume re-enqueues it, or the reconciler after its grace period.
        log.info("worker.paused", order_id=order_id, network=order.network, scope=scope)
        return Outcome.PAUSED
    log.info(
        "worker.not_due",
        order_id=order_id,
        network=order.network,
        status=order.status.value,
        attempt=order.attempts,
    )
    return Outcome.NOT_DUE


def _not_served_here(order_id: str, network: str | None, deps: FulfilDeps) -> Outcome:
    """An order of a network this process does not serve. Another host serves it (a rolling
    change of NETWORKS_ENABLED): the message goes back, delayed, for one of them. Nobody does:
    dead-lettered as misrouted, the order left as it is."""
    if network is not None and deps.store.network_served(network):
        delay = deps.elsewhere_delay_s * random.uniform(0.5, 1.5)  # noqa: S311 - jitter
        log.info("worker.left_for_another_host", order_id=order_id, network=network)
        deps.publish_retry(order_id, delay)
        metrics.MESSAGES_ELSEWHERE.labels(network=network).inc()
        return Outcome.ELSEWHERE
    log.warning("worker.misrouted_message", order_id=order_id, network=network)
    deps.publish_dead_letter(
        DeadLetterNotice(
            kind="misrouted_message",
            order_id=None,
            error_code="UNSUPPORTED_NETWORK",
            reason=f"fulfill_order received for a {network} order; no host of the fleet "
            "serves that network: left as is",
            excerpt=order_id,
        )
    )
    return Outcome.NOT_DUE
