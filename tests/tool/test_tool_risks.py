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
from aishell.plan.model import Plan
from aishell.policy.approvers import ApprovalRequest
from aishell.registry import load_tool
from tests.handlers.backup.test_restore_prechecks import Recorder
from tests.helpers import one_step_plan
from tests.services import engine

REPO_TOOLS = Path(__file__).resolve().parents[2] / "tools"


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


def asked_in(config, plan_or_job: Plan | dict, dialect: str) -> list[ApprovalRequest]:
    """The approvals a run asked for (each answered no), each checked to show the
    tool's risks and mitigations on `dialect` and none that hold only elsewhere."""
    recorder = Recorder("no")
    if isinstance(plan_or_job, Plan):
        commands.apply_plan(config, plan_or_job, approver=recorder.approver)
    else:
        commands.run_job(
            config, "maintenance", plan_or_job, approver=recorder.approver, safety_level="strict"
        )
    registry = commands.load_catalog(config)
    for request in recorder.asked:
        tool = registry.get(request.tool)
        assert request.risks == tool.risks_on(dialect)
        assert request.mitigations == tool.mitigations_on(dialect)
        elsewhere = {s for d in tool.implementations for s in tool.risks_on(d)}
        assert not (elsewhere - set(tool.risks_on(dialect))) & set(request.risks)
    return recorder.asked


def test_the_prompt_on_sqlite_shows_what_vacuum_does_to_the_file(demo_db, config):
    asked = asked_in(config, {"type": "full", "tables": ["app_logs"]}, "sqlite")
    assert {"rebuild_fragmented_indexes", "optimize_table"} <= {r.tool for r in asked}
    [optimize] = [r for r in asked if r.tool == "optimize_table"]
    assert "The whole database is locked while VACUUM rewrites the file." in optimize.risks


def test_the_prompt_on_a_server_shows_its_engine(server_config, server_url):
    with engine(server_url).begin() as conn:
        conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY, note VARCHAR(40))"))
        for i in range(200):
            conn.execute(text("INSERT INTO orders VALUES (:i, :n)"), {"i": i, "n": f"n{i}"})
    dialect = "postgresql" if server_url.startswith("postgresql") else "mysql"
    asked = asked_in(server_config, {"type": "full", "tables": ["orders"]}, dialect)
    # A repair always asks: what it does differs most by engine (PostgreSQL takes no copy).
    repair = one_step_plan(
        "maintenance", "db", dialect, "repair_corrupted_tables", {"tables": ["orders"]}
    )
    asked += asked_in(server_config, repair, dialect)
    shown = [s for r in asked for s in (*r.risks, *r.mitigations)]
    assert "repair_corrupted_tables" in {r.tool for r in asked}
    assert not [s for s in shown if "VACUUM rewrites the file" in s or "backup copy" in s]
    if dialect == "postgresql":
        assert "optimize_table" in {r.tool for r in asked}  # a VACUUM always writes
        assert any("REINDEX TABLE CONCURRENTLY" in s for s in shown)
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
    one = runner.invoke(cli, ["tools", "show", "optimize_table", "--dialect", "sqlite", "--json"])
    assert json.loads(one.output)["risks"] == {
        "sqlite": [
            "The whole database is locked while VACUUM rewrites the file.",
            "Needs free disk space about the size of the database file.",
        ]
    }
