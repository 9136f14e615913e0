"""Bundle sizes: from size_gb or parsed from a package name such as 'AT iShare 2GB' or '500MB'."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from fulfillment.domain.errors import InvalidPackage

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(GB|MB|G|M)\b", re.IGNORECASE)
MAX_SIZE_GB = Decimal(100)


def parse_package_size(size_gb: object, package_name: str | None) -> Decimal:
    """The bundle size in GB. size_gb wins when set; otherwise the package name is parsed.

    Raises InvalidPackage (field size_gb) when neither gives a positive size up to 100 GB.
    """
    if size_gb is not None:
        size = _to_decimal(size_gb)
    elif package_name:
        size = _from_name(package_name)
    else:
        raise InvalidPackage("no size_gb and no package_name to read a size from")
    if size <= 0:
        raise InvalidPackage(f"size must be positive, got {size}")
    if size > MAX_SIZE_GB:
        raise InvalidPackage(f"size {size} GB is above the {MAX_SIZE_GB} GB limit")
    return size.normalize() if size != size.to_integral_value() else size.quantize(Decimal(1))


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


def _from_name(name: str) -> Decimal:
    match = _SIZE.search(name)
    if match is None:
        raise InvalidPackage(f"cannot read a size from package name {name!r}")
    amount = Decimal(match.group(1))
    unit = match.group(2).upper()
    return amount if unit.startswith("G") else amount / Decimal(1000)
