"""The README's "Where things live" and docs/ARCHITECTURE.md name the tree as it is: every
path they name exists, and every package of the namespace is named in both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATH = re.compile(r"`((?:fulfillment|db|workers|producers|tests|bench|chaos|docs|ops)/[\w./]*)`")


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _documents() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return {
        "README.md": _section(readme, "Where things live"),
        "docs/ARCHITECTURE.md": (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"),
    }


def _packages() -> list[str]:
    return sorted(
        f"fulfillment/{p.parent.name}/" for p in (ROOT / "fulfillment").glob("*/__init__.py")
    )


@pytest.mark.parametrize("doc", sorted(_documents()))
def test_every_path_named_exists(doc: str) -> None:
    named = PATH.findall(_documents()[doc])
    assert named, f"{doc} names no path"
    missing = [p for p in named if not (ROOT / p).exists()]
    assert missing == [], f"{doc} names paths that are not in the tree: {missing}"


@pytest.mark.parametrize("doc", sorted(_documents()))
def test_every_package_of_the_namespace_is_named(doc: str) -> None:
    text = _documents()[doc]
    dotted = {p.rstrip("/").replace("/", ".") for p in _packages()}
    unnamed = [
        p
        for p in _packages()
        if p not in text
        and p.rstrip("/") not in text
        and p.rstrip("/").replace("/", ".") not in text
    ]
    assert unnamed == [], f"{doc} does not name {unnamed} (packages: {sorted(dotted)})"
