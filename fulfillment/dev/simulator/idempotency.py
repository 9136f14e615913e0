"""The aggregator's Idempotency-Key: a repeated HTTP request of one attempt gets the first answer.

A key belongs to the purchase body it first came with (another body with it is refused).
Requests with one key are answered one at a time (`KeySlot.busy`), so a repeat that arrives
while the first is still being answered waits for it and then gets its answer. Answers that
came from the books are kept (acceptance, 409, 422, 402), also one the client never received
(a dropped connection): a repeat gets it back, same status and body. A refusal before the
books (429, 5xx, garbage, timeout, an outage) keeps nothing: a repeat is answered afresh, which
is safe since nothing was bought.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fulfillment.dev.simulator.api import Reply
    from fulfillment.dev.simulator.handler import JsonBody


class KeySlot:
    """What the vendor knows of one Idempotency-Key."""

    def __init__(self) -> None:
        self.busy = threading.Lock()  # held while a request with the key is answered
        self._lock = threading.Lock()
        self._payload: JsonBody | None = None
        self._requests = 0
        self._answer: Reply | None = None
        self._replays = 0

    def arrive(self, payload: JsonBody | None) -> int | None:
        """Count a request with this key: the how-manieth it is (1: the first), or None when
        the key came with another body (the request is refused, not counted)."""
        with self._lock:
            if self._payload is None:
                self._payload = payload
            elif payload != self._payload:
                return None
            self._requests += 1
            return self._requests

    @property
    def answer(self) -> Reply | None:
        with self._lock:
            return self._answer

    def keep(self, reply: Reply) -> None:
        with self._lock:
            if self._answer is None:
                self._answer = reply

    def replayed(self) -> int:
        with self._lock:
            self._replays += 1
            return self._replays

    @property
    def replays(self) -> int:
        with self._lock:
            return self._replays


class IdempotencyKeys:
    """Every key the vendor has seen, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, KeySlot] = {}

    def slot(self, key: str) -> KeySlot:
        with self._lock:
            return self._slots.setdefault(key, KeySlot())

    def snapshot(self) -> JsonBody:
        """{"keys": how many were seen, "replays": answers given back to a repeat}."""
        with self._lock:
            slots = list(self._slots.values())
        return {"keys": len(slots), "replays": sum(s.replays for s in slots)}

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()
