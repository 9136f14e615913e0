"""One simulated vendor's live state: its ledger, fault dice and outages, purchases in flight.

The simulator runs two, AT-iShare (fulfillment.dev.simulator.atishare) and the aggregator
(fulfillment.dev.simulator.aggregator), each a subclass that adds its credentials and answers
its own protocol; nothing here is shared between them, so faults on one leave the other alone.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fulfillment.dev.simulator.faults import Chaos, FaultConfig
from fulfillment.dev.simulator.handler import ControlRoutes, JsonBody
from fulfillment.dev.simulator.ledger import Ledger

if TYPE_CHECKING:
    from fulfillment.dev.simulator.handler import Handler


class Vendor:
    """A simulated vendor: `ledger`, `chaos`, `update_faults`, `reset`, its in-flight list and
    its /_sim/ control routes; subclasses answer the vendor API (`answer`)."""

    def __init__(self, ledger: Ledger, chaos: Chaos, *, stopping: threading.Event) -> None:
        self.ledger = ledger
        self.chaos = chaos
        self._stopping = stopping
        self._inflight_lock = threading.Lock()
        self._inflight: dict[int, JsonBody] = {}

    def answer(self, http: Handler, path: str, body: bytes) -> None:
        """Answer one request to the vendor API."""
        raise NotImplementedError

    def update_faults(self, changes: Mapping[str, Any]) -> FaultConfig:
        """Apply a partial config (ValidationError if invalid); a new balance resets the account."""
        config = self.chaos.update(changes)
        if "balance" in changes:
            self.ledger.set_balance(config.balance)
        return config

    def reset(self) -> None:
        """Clear the ledger, scripts and any outage; the fault config stays."""
        self.ledger.reset()
        self.chaos.reset()

    def start(self) -> None:
        """Start what runs beside the requests (none here; the aggregator's callbacks)."""

    def stop(self) -> None:
        """Stop what start() started (once the simulator's stopping event is set)."""

    @contextlib.contextmanager
    def purchase_in_flight(self, ticket: int, reference: str, client_port: int) -> Iterator[None]:
        """List a purchase in GET /_sim/inflight while it is being answered."""
        entry = {"reference": reference, "client_port": client_port, "since": time.monotonic()}
        with self._inflight_lock:
            self._inflight[ticket] = entry
        try:
            yield
        finally:
            with self._inflight_lock:
                self._inflight.pop(ticket, None)

    def purchases_in_flight(self) -> JsonBody:
        """{"purchases": [{"reference", "client_port", "seconds"}...]}: purchases not answered
        yet, each with the client's port and how long ago it arrived."""
        now = time.monotonic()
        with self._inflight_lock:
            entries = list(self._inflight.values())
        return {
            "purchases": [
                {
                    "reference": e["reference"],
                    "client_port": e["client_port"],
                    "seconds": round(now - e["since"], 3),
                }
                for e in entries
            ]
        }

    def sleep(self, seconds: float) -> None:
        """Stall a handler; the simulator's stop() wakes every sleeper so shutdown is quick."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def ledger_snapshot(self) -> JsonBody:
        """GET /_sim/ledger."""
        return self.ledger.snapshot()

    def control_routes(self) -> ControlRoutes:
        """The /_sim/ routes: health, ledger, inflight, faults, script, reset, down."""
        chaos = self.chaos
        return {
            "/_sim/health": {"GET": lambda _: {"ok": True}},
            "/_sim/ledger": {"GET": lambda _: self.ledger_snapshot()},
            "/_sim/inflight": {"GET": lambda _: self.purchases_in_flight()},
            "/_sim/faults": {
                "GET": lambda _: chaos.config.model_dump(mode="json"),
                "POST": lambda p: self.update_faults(p).model_dump(mode="json"),
            },
            "/_sim/script": {"POST": chaos.scripts.set_from_json},
            "/_sim/reset": {"POST": lambda _: self.reset()},
            "/_sim/down": {"POST": chaos.down_from_json},
        }
