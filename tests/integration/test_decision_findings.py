"""Each finding of the fulfilment-decision review, reproduced against real PostgreSQL and the
simulator over HTTP (every one of these failed on the code before the decision rule).

The vendor is watched through a recording wrapper around the real client: the order of its
POSTs and GETs per reference is what "never buy blind" is about.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from db.store import Store
from fulfillment.dev.simulator.server import Simulator
from fulfillment.domain.order import FulfillmentRequest
from fulfillment.services.admin import view_status
from fulfillment.services.deadletter import handle_gave_up
from fulfillment.services.delivery import fulfil, settle_for_dead_letter
from fulfillment.services.notifier import Notifier
from fulfillment.services.ports import DeadLetterNotice, FulfilDeps, Outcome, VendorPort
from fulfillment.vendors.answer import VendorAnswer

from .conftest import Sent
from .test_fulfil import make_due, script
from .test_webhook import callback, hook_url, post, start_hook, vendor_calls

__all__ = ["hook_url", "start_hook"]  # the webhook's fixtures, shared

pytestmark = pytest.mark.integration

Deps = Callable[..., FulfilDeps]
NewOrder = Callable[..., str]


@dataclass
class Recording:
    """The real client, with every call written down as ("POST" | "GET", outcome)."""

    inner: VendorPort
    calls: list[tuple[str, str]] = field(default_factory=list)

    def purchase(
        self, request: FulfillmentRequest, attempt: int = 1, *, resend: int = 0
    ) -> VendorAnswer:
        return self._note("POST", lambda: self.inner.purchase(request, attempt, resend=resend))

    def status(self, reference: str) -> VendorAnswer:
        return self._note("GET", lambda: self.inner.status(reference))

    def _note(self, verb: str, call: Callable[[], VendorAnswer]) -> VendorAnswer:
        try:
            answer = call()
        except Exception as exc:
            self.calls.append((verb, type(exc).__name__))
            raise
        self.calls.append((verb, answer.status))
        return answer

    def blind_repurchases(self) -> int:
        """POSTs that follow a POST without a readable answer, with no answered GET between."""
        blind, unknown = 0, False
        for verb, outcome in self.calls:
            answered = outcome in ("success", "pending", "failed", "not_found")
            if verb == "POST":
                blind += unknown
                unknown = not answered
            elif answered:
                unknown = False
        return blind


@dataclass
class OpensOnFailure:
    """A breaker that opens when a vendor-wide failure is reported, denies the next `deny`
    calls, then lets calls through again (the circuit closed)."""

    deny: int = 1
    opened: bool = False

    def allow(self) -> object:
        from fulfillment.fleet.breaker import BreakerPermit

        if self.opened and self.deny > 0:
            self.deny -= 1
            return BreakerPermit(False, retry_in_s=30.0)
        return BreakerPermit(True)

    def record(self, *, success: bool, probe: bool = False) -> None:
        if not success:
            self.opened = True

    def is_open(self) -> bool:
        return self.opened and self.deny > 0

    def trip(self, seconds: float, reason: str, *, alert: bool = True) -> None:
        return None

    def release_probe(self) -> None:
        return None


def order_row(store: Store, oid: str) -> dict[str, object]:
    row = store.order_row(oid)
    assert row is not None
    return row


def test_1_an_unknown_outcome_spared_by_an_opening_circuit_is_looked_up_before_buying(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder
) -> None:
    oid = new_order()
    script(sim, oid, ["drop_after_delivery"])  # delivered; the answer never arrives
    vendor = Recording(make_deps().routes["at-ishare"].client)
    breaker = OpensOnFailure(deny=1)  # the check right after the POST meets the open circuit
    assert fulfil(oid, make_deps(vendor=vendor, breaker=breaker)) is Outcome.DEFERRED
    row = order_row(store, oid)
    # spared: no attempt spent on the outage, but the purchase is still in flight
    assert (row["fulfillment_attempts"], row["fulfillment_in_flight_attempt"]) == (0, 1)
    make_due(store, oid)
    assert fulfil(oid, make_deps(vendor=vendor, breaker=breaker)) is Outcome.SUCCESS
    assert vendor.calls == [("POST", "VendorConnectionError"), ("GET", "success")]
    assert vendor.blind_repurchases() == 0
    assert sim.ledger.deliveries(oid) == 1
    assert order_row(store, oid)["fulfillment_attempts"] == 1  # the vendor had it: counted


def test_2_an_outcome_that_stays_unknown_goes_to_a_human_and_a_retry_still_looks_first(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder
) -> None:
    oid = new_order()
    deps = make_deps()
    # A worker sent attempt 1 (the vendor delivered it) and was lost before the answer.
    assert store.claim(
        oid,
        "00000000-0000-4000-8000-00000000abcd",
        ttl_s=30,
        early_s=0,
        networks=["at-ishare"],
        begin=True,
    )
    deps.routes["at-ishare"].client.purchase(order_row_request(store, oid))
    expire_claim(store, oid)
    script(sim, oid, [], status_responses=["error"] * 10)
    outcomes = []
    for _ in range(6):
        outcomes.append(fulfil(oid, deps))
        make_due(store, oid)
        if outcomes[-1] is Outcome.DEAD_LETTERED:
            break
    assert outcomes[-1] is Outcome.DEAD_LETTERED, outcomes
    row = order_row(store, oid)
    # not failed, not refundable: processing, in a human's queue, the attempt still in flight
    assert row["fulfillment_status"] == "processing"
    assert row["fulfillment_in_flight_attempt"] == 1
    assert view_status(row) == "outcome_unknown"
    assert "unknown" in str(row["dead_letter_reason"])
    # No message makes a worker buy it now.
    assert fulfil(oid, deps) is Outcome.NOT_DUE
    # An admin marks it failed by hand and retries: the in-flight mark still forces a lookup.
    with store.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET fulfillment_status = 'failed', dead_letter_reason = NULL,"
            " dead_lettered_at = NULL, next_attempt_at = now() WHERE id = %s",
            (oid,),
        )
    script(sim, oid, [], status_responses=[])
    vendor = Recording(deps.routes["at-ishare"].client)
    assert fulfil(oid, make_deps(vendor=vendor)) is Outcome.SUCCESS
    assert vendor.calls == [("GET", "success")]
    assert sim.ledger.deliveries(oid) == 1


def test_3_replayed_pending_callbacks_spend_nothing_and_the_order_completes_later(
    store: Store,
    sim: Simulator,
    make_deps: Deps,
    new_order: NewOrder,
    hook_url: str,
) -> None:
    sim.update_faults({"pending_seconds": 3})
    oid = new_order()
    script(sim, oid, ["pending"])
    assert fulfil(oid, make_deps()) is Outcome.PENDING
    before = order_row(store, oid)
    body = callback(oid, status="pending")
    from fulfillment.vendors.atishare_signing import signed_headers

    from .conftest import KEY, SECRET

    headers = signed_headers(
        KEY, SECRET, "POST", "/webhooks/at-ishare", body, datetime.now(UTC).timestamp()
    )
    answers = [post(hook_url, body, headers=headers).status_code for _ in range(40)]
    assert all(code < 500 for code in answers), answers
    assert answers[1:] == [200] * 39  # replays: nothing done
    after = order_row(store, oid)
    for column in ("fulfillment_status", "fulfillment_status_checks", "next_attempt_at"):
        assert after[column] == before[column], column
    assert vendor_calls(sim, oid)[1] == 0  # not one status check spent by the callbacks
    # The vendor finishes; its success callback is confirmed and completes the order at once.
    time.sleep(3.2)  # the vendor settles its pending purchase after 3 s
    assert post(hook_url, callback(oid)).json() == {"success": True, "status": "success"}
    assert order_row(store, oid)["fulfillment_status"] == "success"


def test_3b_a_failed_callback_keeps_the_orders_backoff(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, hook_url: str
) -> None:
    oid = new_order()
    script(sim, oid, ["error"])
    fulfil(oid, make_deps())
    before = order_row(store, oid)
    assert before["next_attempt_at"] is not None
    assert post(hook_url, callback(oid, status="failed")).status_code == 202
    after = order_row(store, oid)
    assert after["next_attempt_at"] == before["next_attempt_at"]
    assert vendor_calls(sim, oid) == (1, 1)  # the worker's own POST and lookup, nothing more


def test_4_a_callback_while_the_circuit_is_open_answers_2xx_and_leaves_no_claim(
    store: Store,
    sim: Simulator,
    make_deps: Deps,
    new_order: NewOrder,
    start_hook: Callable[..., str],
) -> None:
    sim.update_faults({"pending_seconds": 3600})
    oid = new_order()
    script(sim, oid, ["pending"])
    assert fulfil(oid, make_deps()) is Outcome.PENDING
    closed = OpensOnFailure(deny=1_000, opened=True)
    url = start_hook(lambda: make_deps(breaker=closed))
    response = post(url, callback(oid))
    assert response.status_code == 202, response.text
    row = order_row(store, oid)
    assert row["claim_token"] is None and row["fulfillment_status"] == "processing"


def test_5_dramatiq_giving_up_on_a_bought_order_asks_the_vendor_before_flagging(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, sent: Sent
) -> None:
    oid = new_order()
    deps = make_deps()
    assert store.claim(
        oid,
        "00000000-0000-4000-8000-00000000abce",
        ttl_s=30,
        early_s=0,
        networks=["at-ishare"],
        begin=True,
    )
    # delivered, answer lost with the worker
    deps.routes["at-ishare"].client.purchase(order_row_request(store, oid))
    expire_claim(store, oid)
    notice = DeadLetterNotice(
        kind="dead_letter",
        order_id=oid,
        reason="worker gave up after 3 retries: RuntimeError",
        error_code="WORKER_GAVE_UP",
        source="dramatiq",
    )
    notifier = Notifier(store, webhook_url=None)
    assert not handle_gave_up(
        notice, store, notifier, settle=lambda o: settle_for_dead_letter(o, deps)
    )
    row = order_row(store, oid)
    assert row["fulfillment_status"] == "success"  # never flagged failed
    assert row["dead_lettered_at"] is None


def test_5b_without_a_lookup_a_gave_up_order_in_flight_is_never_flagged_failed(
    store: Store, make_deps: Deps, new_order: NewOrder
) -> None:
    oid = new_order()
    assert store.claim(
        oid,
        "00000000-0000-4000-8000-00000000abcf",
        ttl_s=30,
        early_s=0,
        networks=["at-ishare"],
        begin=True,
    )
    expire_claim(store, oid)
    notice = DeadLetterNotice(
        kind="dead_letter", order_id=oid, reason="worker gave up", source="dramatiq"
    )
    assert handle_gave_up(notice, store, Notifier(store, webhook_url=None))
    row = order_row(store, oid)
    assert row["fulfillment_status"] == "processing"
    assert view_status(row) == "outcome_unknown"


def test_6_failed_after_pending_waits_its_backoff(
    store: Store, sim: Simulator, make_deps: Deps, new_order: NewOrder, sent: Sent
) -> None:
    sim.update_faults({"pending_seconds": 3600})
    oid = new_order()
    script(sim, oid, ["pending"])
    assert fulfil(oid, make_deps()) is Outcome.PENDING
    make_due(store, oid)
    # The vendor gives the pending purchase up (the simulator's pendings only ever succeed).
    vendor = Recording(GivesUpPending(make_deps().routes["at-ishare"].client))
    assert fulfil(oid, make_deps(vendor=vendor)) is Outcome.RETRY_SCHEDULED
    assert vendor.calls == [("GET", "failed")]  # no purchase in the same claim
    assert sent.retries[-1] == (oid, 0.2)  # RETRY_DELAYS' first entry: attempt 1 was spent
    row = order_row(store, oid)
    assert (row["fulfillment_status"], row["fulfillment_attempts"]) == ("failed", 1)


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class GivesUpPending:
    """The vendor answers every lookup "failed": its pending purchase did not go through."""

    inner: VendorPort

    def purchase(
        self, request: FulfillmentRequest, attempt: int = 1, *, resend: int = 0
    ) -> VendorAnswer:
        return self.inner.purchase(request, attempt, resend=resend)

    def status(self, reference: str) -> VendorAnswer:
        answer = self.inner.status(reference)
        return VendorAnswer(
            "failed", reference, answer.transaction_id, 200, {"status": "failed"}, 1, None
        )


def order_row_request(store: Store, oid: str) -> FulfillmentRequest:
    order = store.get_order(oid)
    assert order is not None
    return order.request()


def expire_claim(store: Store, oid: str) -> None:
    """The worker holding the claim is gone and its lease has run out."""
    with store.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET claim_expires_at = %s WHERE id = %s",
            (datetime.now(UTC) - timedelta(seconds=1), oid),
        )
