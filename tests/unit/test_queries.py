"""db/queries.sql: every query is named once."""

from __future__ import annotations

import pytest

from db.queries import load, parse


def test_the_file_parses() -> None:
    assert "list_orders" in load()


def test_a_name_defined_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
