"""The fulfilment decision (fulfillment/domain/decision.py): its table, then its promises for
every state and answer hypothesis can make up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fulfillment.domain.decision import (
    Answer,
    Asker,
    Buy,
    Complete,
    Decision,
    Defer,
    Facts,
    Human,
    Leave,
    Lookup,
    Wait,
    after_lookup,
    after_purchase,
    answer_of_error,
    first_step,
)
from fulfillment.domain.errors import (
    InsufficientBalance,
    PermanentVendorError,
    RateLimited,
    VendorServerError,
    VendorTimeout,
    VendorUnauthorized,
)
from fulfillment.domain.retry import RetryPolicy

POLICY = RetryPolicy(
    delays=(300, 900, 3600),
    max_attempts=3,
    max_deferrals=50,
    max_status_checks=4,
    status_check_delay_s=3,
)


def facts(
    attempts: int = 0,
    in_flight: int | None = None,
    status_checks: int = 0,
    deferrals: int = 0,
    at_vendor: bool = False,
) -> Facts:
    return Facts(attempts, in_flight, status_checks, deferrals, at_vendor, max_attempts=3)


# -- the table ---------------------------------------------------------------------------


def test_a_fresh_order_is_bought_anything_else_is_looked_up_first() -> None:
    assert first_step(facts(), Asker.WORKER).step == Buy(1)
    for state in (facts(in_flight=1), facts(attempts=1), facts(attempts=1, at_vendor=True)):
        for asker in Asker:
            assert first_step(state, asker).step == Lookup()
    assert first_step(facts(), Asker.CALLBACK).step == Leave()
    assert first_step(facts(), Asker.RECONCILER).step == Wait(0.0, open=False, why="requeued")


@pytest.mark.parametrize("asker", list(Asker))
def test_a_confirmed_delivery_completes_for_every_asker(asker: Asker) -> None:
    decided = after_lookup(facts(in_flight=1), Answer.DELIVERED, POLICY, asker)
    assert decided.step == Complete()
    assert decided.facts.attempts == 1  # the vendor had it: the attempt counts


def test_a_lost_workers_purchase_the_vendor_never_got_is_bought_again_at_once() -> None:
    decided = after_lookup(facts(attempts=1, in_flight=1), Answer.NOT_FOUND, POLICY, Asker.WORKER)
    assert decided.step == Buy(2)
    assert decided.facts.in_flight is None


def test_an_unknown_purchase_is_looked_up_at_once_and_a_failed_lookup_waits_open() -> None:
    bought = facts(attempts=1, in_flight=1)
    assert after_purchase(bought, Answer.UNKNOWN, POLICY).step == Lookup()
    decided = after_lookup(bought, Answer.UNKNOWN, POLICY, Asker.WORKER, right_after_purchase=True)
    assert decided.step == Wait(3, open=True, why="status_check")
    assert decided.facts.in_flight == 1 and decided.facts.status_checks == 1


def test_while_the_vendor_is_down_nothing_is_spent_not_even_the_post() -> None:
    bought = facts(attempts=1, in_flight=1)
    decided = after_lookup(
        bought, Answer.UNKNOWN, POLICY, Asker.WORKER, vendor_down=True, right_after_purchase=True
    )
    assert decided.step == Defer()
    assert (decided.facts.attempts, decided.facts.in_flight, decided.facts.status_checks) == (
        0,
        1,
        0,
    )
    # ... and when the vendor is back and never got it, attempt 1 is bought as attempt 1
    assert after_lookup(decided.facts, Answer.NOT_FOUND, POLICY, Asker.WORKER).step == Buy(1)


def test_failed_after_pending_waits_its_backoff() -> None:
    waiting = facts(attempts=1, at_vendor=True, status_checks=2)
    decided = after_lookup(waiting, Answer.FAILED, POLICY, Asker.WORKER)
    assert decided.step == Wait(300, open=False, why="backoff")
    assert decided.facts.status_checks == 0


def test_an_exhausted_status_budget_goes_to_a_human_as_outcome_unknown() -> None:
    decided = after_lookup(
        facts(attempts=1, in_flight=1, status_checks=3), Answer.UNKNOWN, POLICY, Asker.WORKER
    )
    assert isinstance(decided.step, Human) and decided.step.outcome_unknown
    pending = after_lookup(
        facts(attempts=1, at_vendor=True, status_checks=3), Answer.PENDING, POLICY, Asker.WORKER
    )
    assert isinstance(pending.step, Human) and pending.step.outcome_unknown
    # a retry whose last attempt the vendor confirmed failed is a plain failure
    retry = after_lookup(facts(attempts=1, status_checks=3), Answer.UNKNOWN, POLICY, Asker.WORKER)
    assert isinstance(retry.step, Human) and not retry.step.outcome_unknown


def test_a_callback_changes_nothing_short_of_a_confirmed_delivery() -> None:
    for answer in (Answer.PENDING, Answer.FAILED, Answer.NOT_FOUND, Answer.UNKNOWN):
        state = facts(attempts=1, at_vendor=True, status_checks=2)
        assert after_lookup(state, answer, POLICY, Asker.CALLBACK) == Decision(Leave(), state)


def test_a_dead_letter_goes_to_a_human_as_what_the_vendor_says() -> None:
    state = facts(attempts=1, in_flight=1)
    unknown = after_lookup(state, Answer.UNKNOWN, POLICY, Asker.DEAD_LETTER).step
    assert isinstance(unknown, Human) and unknown.outcome_unknown
    confirmed = after_lookup(state, Answer.NOT_FOUND, POLICY, Asker.DEAD_LETTER).step
    assert isinstance(confirmed, Human) and not confirmed.outcome_unknown


def test_held_answers_give_the_attempt_back_rejected_ones_go_to_a_human() -> None:
    bought = facts(attempts=1, in_flight=1)
    held = after_purchase(bought, Answer.HELD, POLICY, retry_after_s=7)
    assert held.step == Wait(7, open=False, why="held")
    assert (held.facts.attempts, held.facts.in_flight, held.facts.deferrals) == (0, None, 1)
    rejected = after_purchase(bought, Answer.REJECTED, POLICY, error_code="INVALID_PHONE").step
    assert rejected == Human("vendor rejected the order: INVALID_PHONE", False)


def test_errors_map_onto_answers() -> None:
    assert answer_of_error(PermanentVendorError("x")) is Answer.REJECTED
    for held in (RateLimited("x"), InsufficientBalance("x"), VendorUnauthorized("x")):
        assert answer_of_error(held) is Answer.HELD
    for unknown in (VendorTimeout("x"), VendorServerError("x")):
        assert answer_of_error(unknown) is Answer.UNKNOWN


# -- the promises, for every state -------------------------------------------------------

states = st.builds(
    facts,
    attempts=st.integers(0, 4),
    in_flight=st.none() | st.integers(1, 4),
    status_checks=st.integers(0, 5),
    deferrals=st.integers(0, 60),
    at_vendor=st.booleans(),
)
answers = st.sampled_from(list(Answer))
askers = st.sampled_from(list(Asker))


@given(states, answers, askers, st.booleans(), st.booleans())
def test_nothing_but_not_found_or_failed_ever_allows_a_purchase_after_an_unknown_outcome(
    state: Facts, answer: Answer, asker: Asker, down: bool, right_after: bool
) -> None:
    decided = after_lookup(
        state, answer, POLICY, asker, vendor_down=down, right_after_purchase=right_after
    )
    if isinstance(decided.step, Buy):
        assert answer in (Answer.NOT_FOUND, Answer.FAILED)
        assert asker is Asker.WORKER and not right_after
        assert decided.facts.in_flight is None
        assert decided.step.attempt <= state.max_attempts
    if state.outcome_open and isinstance(first_step(state, asker).step, Buy):
        pytest.fail("bought blind")


@given(states, answers, askers, st.booleans(), st.booleans())
def test_no_order_the_vendor_may_hold_is_given_up_as_failed(
    state: Facts, answer: Answer, asker: Asker, down: bool, right_after: bool
) -> None:
    decided = after_lookup(
        state, answer, POLICY, asker, vendor_down=down, right_after_purchase=right_after
    )
    if isinstance(decided.step, Human) and not decided.step.outcome_unknown:
        assert not decided.facts.outcome_open
    if isinstance(decided.step, Wait) and not decided.step.open:
        assert not decided.facts.outcome_open


@given(states, answers)
def test_after_a_purchase_an_unknown_answer_is_always_looked_up(
    state: Facts, answer: Answer
) -> None:
    bought = Facts(
        state.attempts + 1, state.attempts + 1, 0, state.deferrals, False, state.max_attempts + 1
    )
    decided = after_purchase(bought, answer, POLICY)
    if answer is Answer.UNKNOWN:
        assert decided.step == Lookup() and decided.facts.in_flight == bought.in_flight
    else:
        assert decided.facts.in_flight is None
    assert not isinstance(decided.step, Buy)
