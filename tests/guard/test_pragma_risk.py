"""SQLite's pragmas as the guard rates them: `writable_schema` makes sqlite_master a
table whose DELETE drops a table and whose UPDATE rewrites a view, so it is as critical
as DROP TABLE, however the pragma is spelled; a read pragma followed by a second
statement is no read. Before, a medium tool dropped a table this way unasked."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell import commands
from aishell.errors import CatalogError
from aishell.guard.statements import classify
from aishell.registry import load_registry
from aishell.risk import RiskLevel
from tests.guard.test_guard import (
    make_tables,
    run_one,
    site_config,
    table_names,
    tool_yaml,
    write_tool,
)
from tests.registry.test_registry import catalog, tool


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA writable_schema = ON",
        "pragma WRITABLE_SCHEMA=1",
        "PRAGMA main.writable_schema = ON",
        "PRAGMA main . writable_schema = ON",
        "PRAGMA optimize .writable_schema = ON",
        'PRAGMA main."writable_schema" = ON',
        "PRAGMA [main].writable_schema(1)",
        # SQLite reads past a comment anywhere in it.
        "pragma/**/writable_schema=1",
        "PRAGMA /* on */ main.writable_schema -- set\n = ON",
        # Set back, the schema's version leaves other connections on a stale schema.
        "PRAGMA schema_version = 1",
    ],
)
def test_writable_schema_is_critical_however_spelled(sql: str) -> None:
    found = classify(sql, "sqlite")
    assert found.writes and found.risk is RiskLevel.CRITICAL, found


@pytest.mark.parametrize(
    ("sql", "risk"),
    [("PRAGMA optimize", RiskLevel.LOW), ("PRAGMA journal_mode = WAL", RiskLevel.MEDIUM)],
)
def test_other_pragmas_keep_their_risk(sql: str, risk: RiskLevel) -> None:
    assert classify(sql, "sqlite").risk is risk


@pytest.mark.parametrize(
    "sql", ["PRAGMA journal_mode; DELETE FROM t", "PRAGMA table_info(t); DELETE FROM t"]
)
def test_a_read_pragma_with_a_second_statement_is_no_read(sql: str) -> None:
    found = classify(sql, "sqlite")
    assert found.writes and found.reason == "more than one statement", found


def test_a_medium_tool_that_writes_the_schema_table_does_not_load(tmp_path: Path) -> None:
    medium = tool(
        risk_level="medium",
        required_capabilities=["database_read", "database_write", "database_ddl"],
        implementations={"sqlite": {"sql": "PRAGMA writable_schema = ON"}},
    )
    with pytest.raises(CatalogError) as refused:
        load_registry([catalog(tmp_path, medium)])
    assert "critical" in str(refused.value), refused.value


DROPPED_BY_HAND = [
    "PRAGMA/**/writable_schema=1",
    "DELETE FROM sqlite_master WHERE name = 't'",
    "PRAGMA/**/writable_schema=0",
]


def test_a_write_of_the_schema_table_is_critical_with_a_commented_pragma(
    home: Path, tmp_path: Path
) -> None:
    """Tagged medium, the tool is refused; tagged high, a yes up to high does not run
    it, and `t` stays."""
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    make_tables(url)
    folder = home / "site_schema"
    write_tool(folder, tool_yaml("drop_by_hand", "medium", {"sqlite": {"sql": DROPPED_BY_HAND}}))
    with pytest.raises(CatalogError, match="tagged medium but .* needs at least critical"):
        commands.load_catalog(site_config(home, url, folder))
    unpragma = DROPPED_BY_HAND[1:2]  # writable_schema left on by an earlier step
    write_tool(folder, tool_yaml("drop_by_hand", "high", {"sqlite": {"sql": unpragma}}))
    with pytest.raises(CatalogError, match="tagged high but .* needs at least critical"):
        commands.load_catalog(site_config(home, url, folder))
    write_tool(folder, tool_yaml("drop_by_hand", "critical", {"sqlite": {"sql": DROPPED_BY_HAND}}))

    run = run_one(site_config(home, url, folder), url, "drop_by_hand", {"table": "t"})

    assert run.steps[0].status == "waiting_approval", run.steps[0].error
    assert "t" in table_names(url)
