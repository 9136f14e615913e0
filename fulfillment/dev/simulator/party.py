"""What the simulated parties that are not vendors (the SMS provider, the platform receiver)
share: a ledger, a live fault state and the same /_sim/ control routes."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Generic, Protocol, TypeVar

from fulfillment.dev.simulator.faults import PartyChaos, PartyFaults
from fulfillment.dev.simulator.handler import ControlRoutes


class Ledger(Protocol):
    def snapshot(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...


_Config = TypeVar("_Config", bound=PartyFaults)
_Ledger = TypeVar("_Ledger", bound=Ledger)


class SimulatedParty(Generic[_Config, _Ledger]):
    """One party's ledger and faults; `script_key` names what a fault script is keyed by
    (the JSON field of POST /_sim/script: a ClientReference, an event_id)."""

    script_key: str

    def __init__(
        self,
        ledger: _Ledger,
        faults: _Config,
        *,
        kinds: frozenset[str],
        seed: int | None,
        stopping: threading.Event,
    ) -> None:
        self.ledger = ledger
        self.chaos: PartyChaos[_Config] = PartyChaos(faults, kinds=kinds, seed=seed)
        self._stopping = stopping

    def update_faults(self, changes: Mapping[str, Any]) -> _Config:
        """Apply a partial config (ValidationError if invalid)."""
        return self.chaos.update(changes)

    def reset(self) -> None:
        """Clear the ledger, scripts and any outage; the fault config stays."""
        self.ledger.reset()
        self.chaos.reset()

    def control_routes(self) -> ControlRoutes:
        """The party's /_sim/ routes: health, ledger, faults, script, reset, down."""
        chaos = self.chaos
        return {
            "/_sim/health": {"GET": lambda _: {"ok": True}},
            "/_sim/ledger": {"GET": lambda _: self.ledger.snapshot()},
            "/_sim/faults": {
                "GET": lambda _: chaos.config.model_dump(mode="json"),
                "POST": lambda p: self.update_faults(p).model_dump(mode="json"),
            },
            "/_sim/script": {"POST": lambda p: chaos.script_from_json(p, self.script_key)},
            "/_sim/reset": {"POST": lambda _: self.reset()},
            "/_sim/down": {"POST": chaos.down_from_json},
        }
