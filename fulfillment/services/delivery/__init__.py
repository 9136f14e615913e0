"""Delivery: fulfil one order (claim, verify what the vendor already knows, buy at most once,
record).

The service behind the `fulfill_order` actor, the reconciler's recovery, the vendor callback
and the dead-letter consumer's last look. What to do next is never decided here: each vendor
answer goes to fulfillment.domain.decision, and this package carries the step out. No SQL and
no HTTP here: the store and the vendor client are passed in (see ports.FulfilDeps).

    entry     fulfil, confirm_delivery, settle_for_dead_letter: claim, then one Attempt
    attempt   Attempt: the decision's steps for one message, and its final step
    session   VendorSession: breaker permit, rate-limit slot, the call, the in-flight mark
    verify    lookup: a status lookup of an order whose outcome is unknown
    purchase  purchase: one POST of the order, as one attempt
    record    Call, Audit: the fulfillment_logs row and order state written per call
"""

from fulfillment.services.delivery.entry import confirm_delivery, fulfil, settle_for_dead_letter

__all__ = ["confirm_delivery", "fulfil", "settle_for_dead_letter"]
