"""Networks, routes and the catalogue: what each network sells, in both vendors' counts, and
which settings are refused."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fulfillment.domain.errors import ConfigurationError, InvalidPackage, UnsupportedNetwork
from fulfillment.domain.networks import (
    issuer_of_number,
    parse_networks,
    parse_routes,
    prefix_mismatch,
)
from fulfillment.domain.order import build_request
from fulfillment.domain.package import Catalogue, parse_size

OID = "3f1c0a52-8a53-4d8e-9a43-3e6f0c2b8f11"
CATALOGUE = Catalogue.default()


@pytest.mark.parametrize(
    ("network", "size_gb", "package", "name", "gb", "mb"),
    [
        ("at-ishare", None, "500MB", "AT iShare 500MB", Decimal("0.5"), 500),
        ("at-ishare", 2, None, "AT iShare 2GB", Decimal(2), 2048),
        ("mtn", None, "MTN 5GB", "MTN 5GB", Decimal(5), 5120),
        ("mtn", "0.5", None, "MTN 500MB", Decimal("0.5"), 500),
        ("telecel", None, "Telecel 1.5GB", "Telecel 1.5GB", Decimal("1.5"), 1536),
        ("at-bigtime", None, "BigTime 20GB", "BigTime 20GB", Decimal(20), 20480),
    ],
)
def test_each_network_sells_its_catalogue_in_both_counts(
    network: str, size_gb: object, package: str | None, name: str, gb: Decimal, mb: int
) -> None:
    req = build_request(
        OID, phone_number="0261234567", network=network, size_gb=size_gb, package_name=package
    )
    assert (req.package, req.size_gb, req.volume_mb) == (name, gb, mb)


@pytest.mark.parametrize(
    ("network", "size_gb", "package"),
    [("at-bigtime", 2, None), ("telecel", None, "Telecel 4GB"), ("mtn", None, "MTN 7GB")],
)
def test_a_size_the_network_does_not_sell_is_invalid_package(
    network: str, size_gb: object, package: str | None
) -> None:
    with pytest.raises(InvalidPackage, match=f"{network} does not sell") as info:
        build_request(
            OID, phone_number="0241234567", network=network, size_gb=size_gb, package_name=package
        )
    assert info.value.code == "INVALID_PACKAGE" and info.value.field == "size_gb"


def test_an_unknown_network_is_refused() -> None:
    with pytest.raises(UnsupportedNetwork, match="unknown network 'vodafone'") as info:
        build_request(
            OID, phone_number="0241234567", network="vodafone", size_gb=1, package_name=None
        )
    assert info.value.field == "network"


def test_a_ported_number_is_noted_never_refused() -> None:
    assert issuer_of_number("+233201234567") == "telecel"
    assert issuer_of_number("+233301234567") is None
    assert prefix_mismatch("mtn", "+233241234567") is None
    assert prefix_mismatch("at-bigtime", "+233561234567") is None
    assert prefix_mismatch("mtn", "+233201234567") == "telecel"
    req = build_request(OID, phone_number="0201234567", network="mtn", size_gb=2, package_name=None)
    assert req.issued_by == "telecel" and req.local_phone == "0201234567"


def test_networks_and_routes_settings() -> None:
    assert parse_networks(" AT-iShare, mtn ,,") == {"at-ishare", "mtn"}
    with pytest.raises(ConfigurationError, match="unknown network vodafone"):
        parse_networks("at-ishare,vodafone")
    assert parse_routes("", {"mtn", "at-ishare"}) == {"at-ishare": "at-ishare", "mtn": "aggregator"}
    for bad, match in [
        ("mtn=at-ishare", "at-ishare cannot buy mtn bundles"),
        ("at-ishare=aggregator", "aggregator cannot buy at-ishare bundles"),
        ("mtn", "not network=vendor"),
        ("glo=aggregator", "unknown network"),
        ("mtn=acme", "unknown vendor 'acme'"),
    ]:
        with pytest.raises(ConfigurationError, match=match):
            parse_routes(bad, {"mtn", "at-ishare"})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"glo": {"brand": "Glo", "sizes": ["1GB"]}}, "unknown network 'glo'"),
        ({"mtn": {"sizes": ["1GB"]}}, "needs a brand"),
        ({"mtn": {"brand": "MTN", "sizes": []}}, "needs a list of sizes"),
        ({"mtn": {"brand": "MTN", "sizes": "1GB"}}, "needs a list of sizes"),
        ({"mtn": {"brand": "MTN", "sizes": ["lots"]}}, "is not like"),
        ({"mtn": {"brand": "MTN", "sizes": ["0.0001GB"]}}, "whole number of MB"),
        ({"mtn": "MTN"}, "must be a table"),
    ],
)
def test_a_catalogue_that_is_not_one_refuses_to_load(data: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Catalogue(data)


def test_an_operator_catalogue_replaces_the_default() -> None:
    mine = Catalogue({"mtn": {"brand": "MTN", "sizes": ["750MB", "2GB"]}})
    assert mine.networks() == {"mtn"}
    assert mine.bundle("mtn", parse_size(None, "750MB")).volume_mb == 750
    with pytest.raises(InvalidPackage, match="it sells nothing"):
        mine.bundle("telecel", parse_size(2, None))


@given(network=st.sampled_from(sorted(CATALOGUE.networks())), data=st.data())
def test_every_catalogue_size_round_trips_through_its_own_label(
    network: str, data: st.DataObject
) -> None:
    label = data.draw(st.sampled_from(CATALOGUE.sizes(network)))
    bundle = CATALOGUE.bundle(network, parse_size(None, label))
    assert bundle.name.endswith(label)
    # the two counts agree with DESIGN.md: MB keeps its number, GB is x 1024
    amount = Decimal(label[:-2])
    assert bundle.volume_mb == (amount if label.endswith("MB") else amount * 1024)
    assert bundle.size_gb == (amount / 1000 if label.endswith("MB") else amount)
