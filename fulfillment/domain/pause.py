"""The runtime pause: what a scope is, its name for people, and what a pause must say.

A scope is the whole fleet (FLEET, stored as '*') or one network code of KNOWN_NETWORKS. A
worker claims no order whose network, or the whole fleet, is paused (fleet_pauses, read by
claim_order); the rules about which scope a person meant live here, so the CLI, the API and
the dashboard refuse the same input with the same words.
"""

from __future__ import annotations

from typing import Final

from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.domain.errors import InvalidOrder
from fulfillment.domain.phone import mask_phones_in_text

#: The scope of a pause of the whole fleet (fleet_pauses.scope).
FLEET: Final = "*"
#: Longest reason kept (as the admin actions' reasons).
MAX_PAUSE_REASON: Final = 500
#: Longest actor name kept.
MAX_ACTOR: Final = 200


def scope_of(network: str | None) -> str:
    """The scope a person meant: None, blank or '*' is the whole fleet; otherwise one of the
    known network codes (any case, surrounding spaces ignored). InvalidOrder naming the field
    `network` for anything else."""
    text = (network or "").strip().lower()
    if text in ("", FLEET):
        return FLEET
    if text not in KNOWN_NETWORKS:
        shown = network if len(network or "") <= 40 else f"{(network or '')[:40]}..."
        raise InvalidOrder(
            "network",
            f"unknown network {shown!r}; one of {', '.join(sorted(KNOWN_NETWORKS))} "
            "(or none for the whole fleet)",
        )
    return text


def scope_label(scope: str) -> str:
    """A scope in words for people: "the whole fleet", "network mtn"."""
    return "the whole fleet" if scope == FLEET else f"network {scope}"


def holding(scope: str, paused: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Of the scopes still `paused`, those that hold orders of `scope` after it is resumed:
    for the whole fleet, every network paused on its own; for a network, the whole fleet's
    pause (and its own, if paused again meanwhile)."""
    if scope == FLEET:
        return tuple(s for s in paused if s != FLEET)
    return tuple(s for s in paused if s in (FLEET, scope))


def pause_reason(reason: str | None) -> str:
    """Why the fleet is paused, trimmed and cut to MAX_PAUSE_REASON, a phone number in it
    masked (the reason is shown on every page and printed by the CLI and the API);
    InvalidOrder (field `reason`) when it is blank or holds control characters (a terminal
    escape printed by `fulfillment pauses`)."""
    text = (reason or "").strip()
    if not text:
        raise InvalidOrder("reason", "say why the fleet is paused (it is shown and audited)")
    _printable("reason", text)
    return mask_phones_in_text(text)[:MAX_PAUSE_REASON]


def actor_name(actor: str | None) -> str:
    """Who acts, as the audit keeps it; InvalidOrder (field `actor`) when blank."""
    text = (actor or "").strip()
    if not text:
        raise InvalidOrder("actor", "say who is acting (it goes into the audit trail)")
    _printable("actor", text)
    return text[:MAX_ACTOR]


def _printable(field: str, text: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidOrder(field, "must not contain control characters (newlines, escapes)")
