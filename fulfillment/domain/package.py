"""Bundles: the size an order asks for, and the catalogue of what each network sells.

A size comes from size_gb or is parsed from a package name such as 'AT iShare 2GB' or
'500MB'. The two vendors count differently (DESIGN.md): AT-iShare takes size_gb, where a
package named in MB is MB / 1000 ('500MB' -> 0.5); the aggregator takes volume_mb, where a
package named in MB keeps its number ('500MB' -> 500) and one named in GB is GB x 1024
('1.5GB' -> 1536). A size matches a catalogue entry when either count agrees, and the entry
then gives both.

The catalogue is configuration (PACKAGE_CATALOGUE_FILE, else DEFAULT_CATALOGUE): per network
a brand and the sizes it sells; a size a network does not sell is INVALID_PACKAGE before any
vendor call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final, Literal

from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.domain.errors import ConfigurationError, InvalidPackage

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(GB|MB|G|M)\b", re.IGNORECASE)
_LABEL = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(GB|MB)\s*", re.IGNORECASE)
MAX_SIZE_GB = Decimal(100)

#: What each network sells, as its brand and sizes (the shipped default; an operator's
#: PACKAGE_CATALOGUE_FILE, TOML of the same shape, replaces it).
DEFAULT_CATALOGUE: Final[Mapping[str, Mapping[str, object]]] = {
    "at-ishare": {
        "brand": "AT iShare",
        "sizes": ["500MB", "1GB", "1.5GB", "2GB", "3GB", "4GB", "5GB", "6GB", "7GB", "8GB",
                  "10GB", "12GB", "15GB", "20GB", "25GB", "30GB", "40GB", "50GB", "100GB"],
    },
    "mtn": {
        "brand": "MTN",
        "sizes": ["500MB", "1GB", "1.5GB", "2GB", "3GB", "4GB", "5GB", "6GB", "8GB", "10GB",
                  "15GB", "20GB", "25GB", "30GB", "40GB", "50GB", "100GB"],
    },
    "telecel": {
        "brand": "Telecel",
        "sizes": ["500MB", "1GB", "1.5GB", "2GB", "3GB", "5GB", "10GB", "15GB", "20GB",
                  "30GB", "50GB"],
    },
    "at-bigtime": {
        "brand": "BigTime",
        "sizes": ["15GB", "20GB", "30GB", "40GB", "50GB", "60GB", "80GB", "100GB"],
    },
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Size:
    """An amount in the unit it was given in."""

    amount: Decimal
    unit: Literal["GB", "MB"]

    @property
    def raw_gb(self) -> Decimal:
        return self.amount if self.unit == "GB" else self.amount / Decimal(1000)

    @property
    def gb(self) -> Decimal:
        """AT-iShare's count: '500MB' -> 0.5 (normalised: 2.0 -> 2)."""
        value = self.raw_gb
        return value.normalize() if value != value.to_integral_value() else value.quantize(1)

    @property
    def volume_mb(self) -> Decimal:
        """The aggregator's count: '500MB' -> 500, '1.5GB' -> 1536 (a whole number for every
        size a catalogue sells)."""
        return self.amount if self.unit == "MB" else self.amount * 1024

    @property
    def label(self) -> str:
        """'2GB', '1.5GB', '500MB'."""
        amount = self.amount.normalize()
        text = f"{amount:f}" if amount != amount.to_integral_value() else f"{int(amount)}"
        return f"{text}{self.unit}"

    def same_as(self, other: Size) -> bool:
        return self.raw_gb == other.raw_gb or self.volume_mb == other.volume_mb


@dataclass(frozen=True, slots=True)
class Bundle:
    """A catalogue entry an order matched: what each vendor is sent."""

    network: str
    name: str  # 'MTN 5GB'
    size_gb: Decimal
    volume_mb: int


def parse_size(size_gb: object, package_name: str | None) -> Size:
    """size_gb wins when set; otherwise the package name is parsed. InvalidPackage (field
    size_gb) when neither gives a positive size up to 100 GB."""
    if size_gb is not None:
        size = Size(_to_decimal(size_gb), "GB")
    elif package_name:
        size = _from_name(package_name)
    else:
        raise InvalidPackage("no size_gb and no package_name to read a size from")
    if size.amount <= 0:
        raise InvalidPackage(f"size must be positive, got {size.amount}")
    if size.raw_gb > MAX_SIZE_GB:
        raise InvalidPackage(f"size {size.raw_gb} GB is above the {MAX_SIZE_GB} GB limit")
    return size


def parse_package_size(size_gb: object, package_name: str | None) -> Decimal:
    """The bundle size in GB, AT-iShare's count (see parse_size)."""
    return parse_size(size_gb, package_name).gb


class Catalogue:
    """What each network sells. Built from configuration; ConfigurationError when it is not
    a catalogue (unknown network, a size that cannot be read, no sizes)."""

    def __init__(self, data: Mapping[str, object]) -> None:
        self._brands: dict[str, str] = {}
        self._sizes: dict[str, tuple[Size, ...]] = {}
        for network, entry in data.items():
            if network not in KNOWN_NETWORKS:
                raise ConfigurationError(
                    f"package catalogue: unknown network {network!r}; "
                    f"known: {', '.join(sorted(KNOWN_NETWORKS))}"
                )
            if not isinstance(entry, Mapping):
                raise ConfigurationError(f"package catalogue: {network} must be a table")
            brand, sizes = entry.get("brand"), entry.get("sizes")
            if not isinstance(brand, str) or not brand.strip():
                raise ConfigurationError(f"package catalogue: {network} needs a brand")
            if not isinstance(sizes, Sequence) or isinstance(sizes, str) or not sizes:
                raise ConfigurationError(f"package catalogue: {network} needs a list of sizes")
            self._brands[network] = brand.strip()
            self._sizes[network] = tuple(_catalogue_size(network, s) for s in sizes)

    @classmethod
    def default(cls) -> Catalogue:
        return cls(DEFAULT_CATALOGUE)

    def networks(self) -> frozenset[str]:
        return frozenset(self._sizes)

    def sizes(self, network: str) -> tuple[str, ...]:
        """The sizes a network sells, as labels ('500MB', '2GB')."""
        return tuple(size.label for size in self._sizes.get(network, ()))

    def bundle(self, network: str, size: Size) -> Bundle:
        """The entry the size matches; InvalidPackage when the network does not sell it."""
        for entry in self._sizes.get(network, ()):
            if entry.same_as(size):
                return Bundle(
                    network=network,
                    name=f"{self._brands[network]} {entry.label}",
                    size_gb=entry.gb,
                    volume_mb=int(entry.volume_mb),
                )
        sold = ", ".join(self.sizes(network)) or "nothing (not in the catalogue)"
        raise InvalidPackage(f"{network} does not sell {size.label}; it sells {sold}")


def _catalogue_size(network: str, text: object) -> Size:
    match = _LABEL.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(
            f"package catalogue: {network} size {text!r} is not like '500MB' or '1.5GB'"
        )
    size = Size(Decimal(match.group(1)), "GB" if match.group(2).upper() == "GB" else "MB")
    if size.amount <= 0 or size.volume_mb != size.volume_mb.to_integral_value():
        raise ConfigurationError(
            f"package catalogue: {network} size {text!r} is not a whole number of MB"
        )
    return size


def _to_decimal(value: object) -> Decimal:
    if isinstance(value, bool):
        raise InvalidPackage("size_gb must be a number")
    if isinstance(value, int | float | Decimal):
        try:
            result = Decimal(str(value))
        except InvalidOperation as exc:  # pragma: no cover - str() of a number parses
            raise InvalidPackage(f"size_gb {value!r} is not a number") from exc
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation as exc:
            raise InvalidPackage(f"size_gb {value!r} is not a number") from exc
    else:
        raise InvalidPackage("size_gb must be a number")
    if not result.is_finite():
        raise InvalidPackage("size_gb must be finite")
    return result


def _from_name(name: str) -> Size:
    match = _SIZE.search(name)
    if match is None:
        raise InvalidPackage(f"cannot read a size from package name {name!r}")
    amount = Decimal(match.group(1))
    return Size(amount, "GB" if match.group(2).upper().startswith("G") else "MB")
