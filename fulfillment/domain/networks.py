"""The networks the platform sells, the vendor connections that can serve them, and which
network a Ghanaian number was issued on.

Which vendor serves which network is configuration (NETWORK_VENDORS, parsed by
parse_routes); this module knows only the names and the rule that every enabled network
needs a vendor. Numbers are ported, so network_of_number is a hint to log and show, never a
reason to refuse an order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.domain.errors import ConfigurationError, InvalidPhoneNumber
from fulfillment.domain.phone import normalize_ghana_mobile

VENDOR_AT_ISHARE: Final = "at-ishare"
VENDOR_AGGREGATOR: Final = "aggregator"
#: the vendor connections this release has a client for
KNOWN_VENDORS: Final = frozenset({VENDOR_AT_ISHARE, VENDOR_AGGREGATOR})

#: network -> vendor when NETWORK_VENDORS does not say otherwise
DEFAULT_ROUTES: Final[Mapping[str, str]] = {
    "at-ishare": VENDOR_AT_ISHARE,
    "mtn": VENDOR_AGGREGATOR,
    "telecel": VENDOR_AGGREGATOR,
    "at-bigtime": VENDOR_AGGREGATOR,
}

#: the networks each vendor connection's client can buy for (its protocol's network codes)
SERVES: Final[Mapping[str, frozenset[str]]] = {
    VENDOR_AT_ISHARE: frozenset({"at-ishare"}),
    VENDOR_AGGREGATOR: frozenset({"mtn", "telecel", "at-bigtime"}),
}

#: how people name each vendor connection (dashboard, alerts)
VENDOR_NAMES: Final[Mapping[str, str]] = {
    VENDOR_AT_ISHARE: "AT-iShare API",
    VENDOR_AGGREGATOR: "the data aggregator",
}

#: how people name each network (dashboard, alerts, SMS)
DISPLAY_NAMES: Final[Mapping[str, str]] = {
    "at-ishare": "AT-iShare",
    "mtn": "MTN",
    "telecel": "Telecel",
    "at-bigtime": "AT-BigTime",
}

# The mobile prefixes of DESIGN.md (the national number's first two digits after the 0).
# AirtelTigo's numbers serve both AT products, iShare and BigTime.
_PREFIXES: Final[Mapping[str, frozenset[str]]] = {
    "mtn": frozenset({"24", "25", "53", "54", "55", "59"}),
    "telecel": frozenset({"20", "50"}),
    "airteltigo": frozenset({"26", "27", "56", "57"}),
}
_ISSUER_OF_NETWORK: Final[Mapping[str, str]] = {
    "mtn": "mtn",
    "telecel": "telecel",
    "at-ishare": "airteltigo",
    "at-bigtime": "airteltigo",
}


def issuer_of_number(e164: str) -> str | None:
    """'+233241234567' -> 'mtn'; 'telecel', 'airteltigo', or None for a prefix not listed."""
    national = e164.removeprefix("+233")
    for issuer, prefixes in _PREFIXES.items():
        if national[:2] in prefixes:
            return issuer
    return None


def prefix_mismatch(network: str, e164: str) -> str | None:
    """The issuer a number's prefix names when it is not the order's network's (a ported
    number, or a typo the vendor may refuse); None when they agree or the prefix is unknown."""
    issuer = issuer_of_number(e164)
    if issuer is None or _ISSUER_OF_NETWORK.get(network) == issuer:
        return None
    return issuer


def number_note(network: str | None, phone: object) -> str | None:
    """For people: the network a number's prefix says it was issued on, when that is not the
    order's (a ported number, or a typo the vendor may refuse); None otherwise."""
    if network is None:
        return None
    try:
        issuer = prefix_mismatch(network, normalize_ghana_mobile(phone))
    except InvalidPhoneNumber:
        return None
    return None if issuer is None else DISPLAY_NAMES.get(issuer, "AirtelTigo")


def parse_networks(text: str) -> frozenset[str]:
    """'at-ishare, mtn' -> {'at-ishare', 'mtn'}; ConfigurationError naming an unknown one."""
    names = frozenset(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = sorted(names - KNOWN_NETWORKS)
    if unknown:
        raise ConfigurationError(
            f"NETWORKS_ENABLED: unknown network {', '.join(unknown)}; "
            f"known: {', '.join(sorted(KNOWN_NETWORKS))}"
        )
    return names


def parse_routes(text: str, enabled: Iterable[str]) -> dict[str, str]:
    """NETWORK_VENDORS 'mtn=aggregator,telecel=aggregator' over DEFAULT_ROUTES: the vendor of
    every enabled network. ConfigurationError for an unknown network or vendor, or a
    malformed pair."""
    routes = dict(DEFAULT_ROUTES)
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        network, sep, vendor = (part.strip().lower() for part in pair.partition("="))
        if not sep or not network or not vendor:
            raise ConfigurationError(f"NETWORK_VENDORS: {pair!r} is not network=vendor")
        if network not in KNOWN_NETWORKS:
            raise ConfigurationError(f"NETWORK_VENDORS: unknown network {network!r}")
        if vendor not in KNOWN_VENDORS:
            raise ConfigurationError(
                f"NETWORK_VENDORS: unknown vendor {vendor!r} for {network}; "
                f"known: {', '.join(sorted(KNOWN_VENDORS))}"
            )
        if network not in SERVES[vendor]:
            raise ConfigurationError(
                f"NETWORK_VENDORS: {vendor} cannot buy {network} bundles (it serves "
                f"{', '.join(sorted(SERVES[vendor]))})"
            )
        routes[network] = vendor
    return {network: routes[network] for network in sorted(enabled)}
