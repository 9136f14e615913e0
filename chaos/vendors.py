"""The two simulated vendors of a chaos run, and which network each one serves.

One simulator process speaks both protocols (fulfillment.dev.simulator.server): AT-iShare
with its control routes at /_sim/, the data aggregator with its own at /aggregator/_sim/
(faults, ledger, script, down, inflight, ...). The fleet runs with NETWORK_VENDORS unset, so
each network goes to the vendor of fulfillment.domain.networks.DEFAULT_ROUTES; the run reads
that table rather than repeating it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from fulfillment.dev.simulator.aggregator import MOUNT as AGGREGATOR_MOUNT
from fulfillment.domain.constants import KNOWN_NETWORKS, vendor_keys
from fulfillment.domain.networks import VENDOR_AGGREGATOR, VENDOR_AT_ISHARE, parse_routes

AT_ISHARE: Final = VENDOR_AT_ISHARE
AGGREGATOR: Final = VENDOR_AGGREGATOR
#: every vendor of the run, AT-iShare first
VENDORS: Final = (AT_ISHARE, AGGREGATOR)
LABELS: Final[Mapping[str, str]] = {AT_ISHARE: "AT-iShare", AGGREGATOR: "aggregator"}
#: where each vendor's signed callbacks go (DESIGN.md; fulfillment/web/webhooks.py)
WEBHOOK_PATHS: Final[Mapping[str, str]] = {
    AT_ISHARE: "/webhooks/at-ishare",
    AGGREGATOR: "/webhooks/aggregator",
}
#: the networks the fleet fulfils (NETWORKS_ENABLED), in the order the report lists them
NETWORKS: Final = ("at-ishare", "mtn", "telecel", "at-bigtime")
#: network -> vendor connection, as the fleet routes them (NETWORK_VENDORS unset)
ROUTES: Final[Mapping[str, str]] = parse_routes("", NETWORKS)

assert set(NETWORKS) == KNOWN_NETWORKS, "the chaos mix must cover every known network"
assert set(ROUTES.values()) == set(VENDORS), "every vendor must serve a network of the mix"


def vendor_of(network: str) -> str:
    """The vendor connection that serves `network`."""
    return ROUTES[network]


def control_urls(sim_url: str) -> dict[str, str]:
    """vendor -> the base of its control routes: http://host:port/_sim, .../aggregator/_sim."""
    return {AT_ISHARE: f"{sim_url}/_sim", AGGREGATOR: f"{sim_url}{AGGREGATOR_MOUNT}/_sim"}


def breaker_key(namespace: str, vendor: str) -> str:
    """The Redis hash of a vendor's fleet-wide circuit (fulfillment/fleet/breaker.py)."""
    return f"{vendor_keys(namespace, vendor)}:breaker:state"
