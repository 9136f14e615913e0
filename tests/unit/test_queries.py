"""db/queries.sql: every query is named once, and the admin list and its CSV export agree."""

from __future__ import annotations

import pytest

from db.queries import load, parse, q


def _statement(name: str) -> str:
    """The query without its comment lines."""
    return "\n".join(line for line in q(name).splitlines() if not line.startswith("--"))


def test_the_file_parses_and_every_query_has_a_body() -> None:
    assert load()
    assert all(body.strip() for body in load().values())


def test_a_name_defined_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_the_export_is_the_list_without_its_page_limit() -> None:
    """export_orders streams what list_orders pages through: same columns, filters, order."""
    page = _statement("list_orders")
    assert page.endswith("LIMIT %(limit)s")
    assert _statement("export_orders") == page.removesuffix("LIMIT %(limit)s").rstrip()
