"""How the `fulfillment` command (fulfillment.cli.main, fulfillment.cli.admin) prints: tables
for people, JSON for scripts, CSV exports. (The exit statuses are in domain/constants.py,
shared with the web process.)

Every value is shaped here: times to the second in UTC in tables and as ISO-8601 UTC in JSON,
ids and decimals as text, one line per table cell, cut to a width; phone numbers are masked
(redacted) before anything is shown, nested ones included. Error lines go to stderr (fail).
Nothing here reads the database or decides which exit status applies: a command hands it one.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any
from uuid import UUID

from fulfillment.domain.phone import mask_phone, mask_phones_in_text

_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
CELL_CHARS = 40
BODY_CHARS = 60


def table(columns: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart, a header line first; cells are printed as given."""
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Decimal | UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def print_json(data: object) -> None:
    print(json.dumps(data, default=_json_value))


def redacted(value: Any, key: str = "") -> Any:
    """A log or notification row with every phone number masked, nested ones included."""
    if isinstance(value, dict):
        return {k: redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    if isinstance(value, str):
        return mask_phone(value) if "phone" in key.lower() else mask_phones_in_text(value)
    return value


def cell(value: object, width: int = CELL_CHARS) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and _ISO_UTC.fullmatch(value):  # view rows carry ISO strings
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):  # to the second, for people
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    text = str(value)
    text = " ".join(text.split())  # one line per row, whatever an error message holds
    return text if len(text) <= width else text[: width - 3] + "..."


def print_rows(
    columns: list[str], rows: list[list[Any]], empty: str, *, width: int = CELL_CHARS
) -> None:
    if not rows:
        print(empty)
        return
    print(table(columns, [[cell(v, width) for v in r] for r in rows]))


def print_cursor(cursor: str | None) -> None:
    print(f"next page: --cursor {cursor}" if cursor else "(last page)")


def write_csv(rows: Iterable[list[str]], out: IO[str]) -> int:
    """Row by row, as the database cursor yields them; the count excludes the header."""
    writer = csv.writer(out)
    count = -1
    for row in rows:
        writer.writerow(row)
        count += 1
    out.flush()
    return max(count, 0)


def json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
