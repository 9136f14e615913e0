"""The networks the fleet serves (fleet_networks), by name.

A process adds the networks of its NETWORKS_ENABLED when it starts (and `fulfillment
migrate` does), so which networks are served is known fleet-wide; the orders' status default
reads the table (a new row of a network not served gets no status). The worker's side, whether
some host serves an order's network, is Store.network_served.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from db.store import Row, Store


@dataclass(frozen=True, slots=True)
class NetworkRow:
    network: str
    enabled_at: datetime
    enabled_by: str
    #: when a process serving it last started (or migrate ran with it enabled)
    seen_at: datetime
    seen_age_s: float


def _network(row: Row) -> NetworkRow:
    return NetworkRow(
        network=str(row["network"]),
        enabled_at=row["enabled_at"],
        enabled_by=str(row["enabled_by"]),
        seen_at=row["seen_at"],
        seen_age_s=max(float(row.get("seen_age_s") or 0.0), 0.0),
    )


class NetworkStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, networks: Iterable[str], *, by: str) -> None:
        """Add the networks a process serves (kept as they were if already there)."""
        names = sorted(set(networks))
        if names:
            self.store.execute_named("record_networks", {"networks": names, "by": by})

    def list(self) -> builtins.list[NetworkRow]:
        return [_network(r) for r in self.store.fetch_all("served_networks", {})]

    def disable(self, network: str) -> NetworkRow | None:
        """Stop serving a network fleet-wide; None when it was not served."""
        row = self.store.fetch_one("disable_network", {"network": network})
        return _network(row) if row else None
