"""The migration steps as files: how they are read, and the rules every step keeps for a table
the platform owns (orders: steps after the baseline only add to it, never rewrite its rows) and
for the fleet's history (no reverse step drops orders' columns or fulfillment_logs)."""

from __future__ import annotations

import re

import pytest

from db.migrate import REQUIRED_VERSION, Step, load_steps, parse_step
from fulfillment.domain.errors import MigrationError

STEPS = load_steps()


def _statements(sql: str) -> list[str]:
    code = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [" ".join(part.split()) for part in code.split(";") if part.strip()]


def test_steps_are_numbered_from_one_and_the_code_needs_one_of_them() -> None:
    assert [s.version for s in STEPS] == list(range(1, len(STEPS) + 1))
    assert 1 <= REQUIRED_VERSION <= len(STEPS)
    assert STEPS[0].name == "baseline"


#: The one rewrite of orders' rows a step may make, and why: step 0004 makes the status
#: default network-aware, and the rows of networks no fleet served that the old constant
#: default had marked 'pending' (never attempted, never enqueued, never claimed) lose that
#: status, which no request ever gave them, so that enabling their network later does not
#: adopt its history (issue: "enabling a network does not adopt its historical orders").
_STALE = (
    "FULFILLMENT_STATUS = 'PENDING' AND NETWORK IS DISTINCT FROM 'AT-ISHARE' "
    "AND FULFILLMENT_ATTEMPTS = 0 AND LAST_ENQUEUED_AT IS NULL AND CLAIM_TOKEN IS NULL"
)
ALLOWED_REWRITES = {
    "0004": (
        f"UPDATE ORDERS SET FULFILLMENT_STATUS = NULL WHERE {_STALE}",
        # the rows committed during the first, cleared once the default is gone
        "UPDATE ORDERS SET FULFILLMENT_STATUS = NULL WHERE CREATED_AT >= NOW() - INTERVAL "
        f"'1 HOUR' AND {_STALE}",
    )
}
#: Besides new columns, the one change to orders' definition: the fleet's status default
#: moves from a constant to the trigger that asks fleet_networks (step 0004).
_ALTER_ORDERS = (
    r"ALTER TABLE (IF EXISTS )?ORDERS (ADD COLUMN IF NOT EXISTS \w+ [^,]*"
    r"|ALTER COLUMN FULFILLMENT_STATUS DROP DEFAULT)"
)


@pytest.mark.parametrize("step", STEPS[1:], ids=lambda s: s.label)
def test_a_step_after_the_baseline_only_adds_to_orders(step: Step) -> None:
    for stmt in _statements(step.up):
        upper = stmt.upper()
        rewrites = re.search(r"\bUPDATE\s+ORDERS\b|\bDELETE\s+FROM\s+ORDERS\b", upper)
        if rewrites and upper not in ALLOWED_REWRITES.get(step.label, ()):
            pytest.fail(f"{step.label} rewrites orders' rows: {stmt}")
        if re.search(r"\bALTER\s+TABLE\s+(IF\s+EXISTS\s+)?ORDERS\b", upper):
            assert re.fullmatch(_ALTER_ORDERS, upper), (
                f"{step.label}: orders only gains columns (one per statement): {stmt}"
            )
        if re.search(r"\bINDEX\b.*\bON\s+ORDERS\b", upper):
            assert step.up_concurrently and "CONCURRENTLY" in upper, (
                f"{step.label}: an index on orders (large, the platform's) is built "
                f"CONCURRENTLY, in a step of its own: {stmt}"
            )


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.label)
def test_no_reverse_step_drops_the_fulfilment_history(step: Step) -> None:
    for stmt in _statements(step.down):
        upper = stmt.upper()
        assert not re.search(r"\bDROP\s+TABLE\b.*\b(ORDERS|FULFILLMENT_LOGS|ADMIN_AUDIT)\b", upper)
        assert not re.search(r"\bTRUNCATE\b|\bDELETE\s+FROM\b|\bUPDATE\s+ORDERS\b", upper)
        assert not re.search(r"\bDROP\s+COLUMN\b", upper), f"{step.label}: {stmt}"


def test_a_step_file_needs_both_sections_in_order() -> None:
    with pytest.raises(MigrationError, match="migrate:up' then"):
        parse_step("0009_x.sql", "-- migrate:down\nSELECT 1;\n-- migrate:up\nSELECT 1;")
    with pytest.raises(MigrationError, match="migrate:up' then"):
        parse_step("0009_x.sql", "-- migrate:up\nSELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        parse_step("9_x.sql", "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 1;")
    with pytest.raises(MigrationError, match="empty section"):
        parse_step("0009_x.sql", "-- migrate:up\n-- nothing\n-- migrate:down\nSELECT 1;")
    with pytest.raises(MigrationError, match="unknown section flag"):
        parse_step("0009_x.sql", "-- migrate:up quickly\nSELECT 1;\n-- migrate:down\nSELECT 1;")


def test_a_concurrently_section_is_one_statement() -> None:
    text = (
        "-- migrate:up concurrently\nCREATE INDEX CONCURRENTLY a ON t (x);\n"
        "CREATE INDEX CONCURRENTLY b ON t (y);\n-- migrate:down\nSELECT 1;"
    )
    with pytest.raises(MigrationError, match="one statement"):
        parse_step("0009_x.sql", text)
    step = parse_step(
        "0009_two_words.sql",
        "-- what it is\n-- migrate:up concurrently\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_idx ON t (x);\n"
        "-- migrate:down concurrently\nDROP INDEX CONCURRENTLY IF EXISTS a_idx;",
    )
    assert (step.version, step.name, step.label) == (9, "two_words", "0009")
    assert step.up_concurrently and step.down_concurrently
    assert step.indexes_built_concurrently() == ["a_idx"]


def test_the_checksum_covers_the_up_section_only() -> None:
    a = parse_step("0009_x.sql", "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;")
    b = parse_step("0009_x.sql", "-- c\n-- migrate:up\nSELECT 1;\n\n-- migrate:down\nSELECT 3;")
    c = parse_step("0009_x.sql", "-- migrate:up\nSELECT 2;\n-- migrate:down\nSELECT 2;")
    assert a.checksum == b.checksum != c.checksum
