"""Publishing a dead-letter notice needs no database: only a notice that names no order, when
the broker is down, is kept at once (the reconciler could not find it again)."""

from __future__ import annotations

from typing import Any

import pytest

from fulfillment.services.deadletter import send_dead_letter
from fulfillment.services.ports import DeadLetterNotice

ORDER = "3f8a1c2e-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("order_id", "sent", "kept"),
    [
        (None, True, False),  # published: the consumer stores it
        (ORDER, True, False),
        (ORDER, False, False),  # the order row holds it: the reconciler re-sends
        (None, False, True),  # nothing would find it again: stored now
    ],
)
def test_a_notice_is_kept_only_when_nothing_could_find_it_again(
    order_id: str | None, sent: bool, kept: bool
) -> None:
    notice = DeadLetterNotice(kind="malformed_message", reason="not a UUID", order_id=order_id)
    messages: list[dict[str, Any]] = []
    stored: list[DeadLetterNotice] = []

    def send(message: dict[str, Any]) -> bool:
        messages.append(message)
        return sent

    send_dead_letter(notice, send, keep=stored.append)
    assert messages == [notice.to_message()]
    assert stored == ([notice] if kept else [])
