"""Loads db/queries.sql once into {name: sql}."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

QUERIES_FILE = Path(__file__).with_name("queries.sql")
_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split a queries file into named statements (`-- name: x` headers)."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        sql = body.strip().rstrip(";").strip()
        if not sql:
            raise ValueError(f"query {name!r} is empty")
        queries[name] = sql
    return queries


@cache
def load() -> dict[str, str]:
    return parse(QUERIES_FILE.read_text(encoding="utf-8"))


def q(name: str) -> str:
    try:
        return load()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in {QUERIES_FILE.name}") from None
