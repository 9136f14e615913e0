"""The runtime pause's rules without a server: scopes, labels, reasons, and the words of a
resume's result."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.domain.errors import InvalidOrder
from fulfillment.domain.pause import (
    FLEET,
    MAX_PAUSE_REASON,
    actor_name,
    holding,
    pause_reason,
    scope_label,
    scope_of,
)
from fulfillment.services.pauses import MAX_REQUEUE, PauseView, ResumeResult


@pytest.mark.parametrize(
    ("given", "scope"),
    [(None, "*"), ("", "*"), ("  ", "*"), ("*", "*"), ("mtn", "mtn"), (" MTN ", "mtn")]
    + [(n, n) for n in sorted(KNOWN_NETWORKS)],
)
def test_the_scope_a_person_meant(given: str | None, scope: str) -> None:
    assert scope_of(given) == scope


@pytest.mark.parametrize("given", ["vodafone", "at ishare", "mtn,telecel", "x" * 500, "**"])
def test_an_unknown_network_is_refused_naming_the_field(given: str) -> None:
    with pytest.raises(InvalidOrder) as raised:
        scope_of(given)
    assert raised.value.field == "network"
    assert "at-ishare" in str(raised.value) and len(str(raised.value)) < 200


def test_labels() -> None:
    assert scope_label(FLEET) == "the whole fleet"
    assert scope_label("mtn") == "network mtn"


def test_what_still_holds_a_scope_after_its_resume() -> None:
    assert holding(FLEET, ["mtn", "at-ishare"]) == ("mtn", "at-ishare")
    assert holding(FLEET, []) == ()
    assert holding("at-ishare", ["*", "mtn"]) == ("*",)
    assert holding("at-ishare", ["mtn"]) == ()


def test_a_reason_is_required_trimmed_and_bounded() -> None:
    assert pause_reason("  vendor down  ") == "vendor down"
    assert len(pause_reason("x" * 2000)) == MAX_PAUSE_REASON
    for blank in (None, "", " \t\n"):
        with pytest.raises(InvalidOrder) as raised:
            pause_reason(blank)
        assert raised.value.field == "reason"
    with pytest.raises(InvalidOrder):
        pause_reason("a\x00b")
    with pytest.raises(InvalidOrder) as raised:
        actor_name("  ")
    assert raised.value.field == "actor"


def test_the_result_says_what_happened() -> None:
    assert (
        ResumeResult("*", False, 0).message == "the whole fleet was not paused; nothing re-enqueued"
    )
    done = ResumeResult("mtn", True, 3)
    assert done.message == "network mtn resumed; 3 waiting order(s) re-enqueued, oldest first"
    assert done.as_dict() == {
        "scope": "mtn",
        "label": "network mtn",
        "was_paused": True,
        "requeued": 3,
        "not_sent": 0,
        "more_waiting": False,
        "still_paused": [],
        "message": done.message,
    }
    capped = ResumeResult("*", True, MAX_REQUEUE, still_held_by=("mtn",), more_waiting=True)
    assert "the reconciler re-enqueues the rest" in capped.message
    assert capped.message.endswith("still paused: network mtn (its orders keep waiting)")


def test_a_pause_as_json() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    view = PauseView("*", "the whole fleet", "vendor down", "cli:ama", at, 12.34567)
    assert view.as_dict() == {
        "scope": "*",
        "label": "the whole fleet",
        "reason": "vendor down",
        "paused_by": "cli:ama",
        "paused_at": "2026-01-02T03:04:05Z",
        "age_s": 12.346,
        "already_paused": False,
        "message": "the whole fleet is paused: workers buy none of its orders until it is resumed",
    }


def test_a_reason_is_printable_and_names_no_customer_in_full() -> None:
    for bad in ("stop\x1b]0;pwned\x07", "line\nbreak", "nul\x00", "del\x7f"):
        with pytest.raises(InvalidOrder, match="control characters"):
            pause_reason(bad)
    with pytest.raises(InvalidOrder, match="control characters"):
        actor_name("ama\rroot")
    masked = pause_reason("customer +233241234567 reported a double charge")
    assert "+233241234567" not in masked and "241234567" not in masked
    assert masked.startswith("customer ") and masked.endswith(" reported a double charge")
