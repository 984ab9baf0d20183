"""A tool's risks and mitigations are those of the engine it runs on: an approval on
PostgreSQL shows what REINDEX CONCURRENTLY and VACUUM do there, not what they do to a
SQLite file; a catalog entry that leaves an engine out is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text

from aishell import commands
from aishell.cli import cli
from aishell.errors import CatalogError
from aishell.registry import load_tool
from tests.services import engine
from tests.test_restore_prechecks import Recorder

REPO_TOOLS = Path(__file__).resolve().parent.parent / "tools"


def tool_file(tmp_path: Path, **changes: object) -> Path:
    """optimize_table's definition with some keys replaced."""
    data = yaml.safe_load((REPO_TOOLS / "optimize_table.yaml").read_text())
    data.update(changes)
    path = tmp_path / "optimize_table.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_one_list_holds_on_every_engine(tmp_path):
    tool = load_tool(tool_file(tmp_path, risks=["Locks."], mitigations=None))
    assert tool.risks == {d: ("Locks.",) for d in ("mysql", "postgresql", "sqlite")}
    assert tool.mitigations_on("postgresql") == ()


@pytest.mark.parametrize(
    "risks, complaint",
    [
        ({"sqlite": ["a"], "postgresql": ["b"]}, "not postgresql, sqlite"),
        ({"sqlite": ["a"], "postgresql": ["b"], "mysql": ["c"], "oracle": ["d"]}, "oracle"),
        ({"sqlite": ["a"], "postgresql": "b", "mysql": ["c"]}, "risks.postgresql must be"),
        ({"sqlite": ["a"], "postgresql": [""], "mysql": ["c"]}, "risks.postgresql must be"),
        ("Locks.", "risks must be a list of sentences, or such a list per dialect"),
    ],
)
def test_a_list_per_engine_names_exactly_the_engines_it_implements(tmp_path, risks, complaint):
    with pytest.raises(CatalogError) as raised:
        load_tool(tool_file(tmp_path, risks=risks))
    assert complaint in str(raised.value)
    assert "optimize_table.yaml" in str(raised.value)


def test_every_shipped_tool_says_something_for_each_engine_it_risks_writing_on():
    for path in sorted(REPO_TOOLS.glob("*.yaml")):
        tool = load_tool(path)
        for dialect in tool.implementations:
            if tool.risk_level.value in ("medium", "high", "critical"):
                assert tool.risks_on(dialect), (tool.name, dialect)
                assert tool.mitigations_on(dialect), (tool.name, dialect)


def strict_full_maintenance(config, tables: list[str]) -> Recorder:
    """Full maintenance of `tables` at the strict level, every medium step asked."""
    recorder = Recorder()
    result = commands.run_job(
        config,
        "maintenance",
        {"type": "full", "tables": tables},
        approver=recorder.approver,
        safety_level="strict",
    )
    assert result.status == "completed", result.error
    return recorder


def assert_asked_about(recorder: Recorder, config, dialect: str) -> None:
    registry = commands.load_catalog(config)
    asked = {request.tool: request for request in recorder.asked}
    assert {"rebuild_fragmented_indexes", "optimize_table"} <= set(asked)
    for name, request in asked.items():
        tool = registry.get(name)
        assert request.risks == tool.risks_on(dialect)
        assert request.mitigations == tool.mitigations_on(dialect)
        others = {s for d in tool.implementations if d != dialect for s in tool.risks_on(d)}
        assert not set(request.risks) & (others - set(tool.risks_on(dialect)))


def test_the_prompt_on_sqlite_shows_what_vacuum_does_to_the_file(demo_db, config):
    recorder = strict_full_maintenance(config, ["orders"])
    assert_asked_about(recorder, config, "sqlite")
    [optimize] = [r for r in recorder.asked if r.tool == "optimize_table"]
    assert "The whole database is locked while VACUUM rewrites the file." in optimize.risks


def test_the_prompt_on_a_server_shows_its_engine(server_config, server_url):
    with engine(server_url).begin() as conn:
        conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY, note VARCHAR(40))"))
        conn.execute(text("CREATE INDEX orders_note ON orders (note)"))
        for i in range(200):
            conn.execute(text("INSERT INTO orders VALUES (:i, :n)"), {"i": i, "n": f"n{i}"})
    dialect = "postgresql" if server_url.startswith("postgresql") else "mysql"
    recorder = strict_full_maintenance(server_config, ["orders"])
    assert_asked_about(recorder, server_config, dialect)
    shown = [s for r in recorder.asked for s in (*r.risks, *r.mitigations)]
    assert not [s for s in shown if "VACUUM rewrites the file" in s or "SQLite" in s]
    if dialect == "postgresql":
        assert any("REINDEX CONCURRENTLY" in s for s in shown)
    else:
        assert any("ALTER TABLE ... FORCE" in s for s in shown)


def test_tools_show_lists_each_engines_risks(config):
    runner = CliRunner()
    shown = runner.invoke(cli, ["tools", "show", "optimize_table"], catch_exceptions=False)
    assert shown.exit_code == 0
    assert "postgresql: VACUUM (ANALYZE) reads the whole table" in " ".join(shown.output.split())
    as_json = runner.invoke(cli, ["tools", "show", "optimize_table", "--json"])
    data = json.loads(as_json.output)
    assert set(data["risks"]) == {"sqlite", "postgresql", "mysql"}
    assert data["mitigations"]["postgresql"] == [
        "Reads and writes of the table go on meanwhile (VACUUM without FULL)."
    ]
