"""What a step adds to the maintenance report is the `report:` of its tool's definition."""

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine

from aishell import commands
from aishell.config.models import load_config
from aishell.config.resources import bundled_catalog_dir
from aishell.errors import CatalogError
from aishell.handlers.report import summarize
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from aishell.registry import load_registry
from aishell.risk import RiskLevel
from aishell.tool.context import ToolContext
from aishell.tool.report import SECTIONS, ReportRule
from tests.registry.test_registry import catalog, tool


def bundled_rules() -> dict[str, tuple[ReportRule, ...]]:
    registry = load_registry([bundled_catalog_dir()])
    return {name: t.report for name, t in registry.tools.items() if t.report}


def test_every_section_a_rule_may_name_is_in_the_report():
    report = summarize("quick", [], [])
    assert {s for sections in SECTIONS.values() for s in sections} <= set(report)


def test_the_report_counts_each_step_by_its_tools_rule():
    declined = {"table": "b", "skipped_tables": [{"table": "b", "reason": "not the owner"}]}
    findings = {"fragmentation_percent": 41.2, "free_space_percent": 3.0, "recommendation": "x"}
    actions: list[dict[str, Any]] = [
        {"tool": "rebuild_fragmented_indexes", "table": "a", "output": {"indexes_rebuilt": 2}},
        {
            "tool": "update_table_statistics",
            "table": "a",
            "output": {"statistics_updated": True, "tables_analyzed": 1},
        },
        # One step of many tables: each table the server analyzed counts, not the step.
        {
            "tool": "update_table_statistics",
            "table": None,
            "output": {
                "statistics_updated": True,
                "tables_analyzed": 2,
                "skipped_tables": [{"table": "f", "reason": "not the owner"}],
            },
        },
        {"tool": "update_table_statistics", "table": "b", "output": declined},
        {"tool": "optimize_table", "table": "a", "output": {"vacuumed": True}},
        {"tool": "optimize_table", "table": "b", "output": {"vacuumed": False}},
        {"tool": "vacuum_full_table", "table": "c", "output": {"vacuumed": True}},
        {"tool": "analyze_table_fragmentation", "table": "a", "output": {**findings, "m": 1}},
        {
            "tool": "check_table_corruption",
            "table": None,
            "output": {"method": "amcheck", "status_by_table": {"a": "ok", "b": "corrupted"}},
        },
        {"tool": "repair_corrupted_tables", "table": None, "output": {"repaired_tables": ["b"]}},
        {"tool": "a_site_tool", "table": "a", "output": {"indexes_rebuilt": 99}},
        {"tool": "update_table_statistics", "table": "c", "output": None},
    ]
    report = summarize("full", ["a", "b", "c"], actions, None, bundled_rules())
    assert report["indexes_rebuilt"] == 2
    assert report["statistics_updated"] == 3  # the declined ones did nothing
    assert report["tables_optimized"] == 2
    assert report["fragmentation"] == {"a": findings}
    assert report["corrupted_tables"] == ["b"] and report["corruption_found"] is True
    assert report["corruption_check"] == "checked"
    assert report["repaired_tables"] == ["b"]
    assert report["corruption_repaired"] == ["b"]  # the reference tutorial's name
    assert report["skipped"] == [
        {"tool": "update_table_statistics", "table": "f", "reason": "not the owner"},
        {"tool": "update_table_statistics", "table": "b", "reason": "not the owner"},
    ]
    assert report["steps_not_run"] == 1
    assert report["tables_processed"] == ["a", "b", "c"]


def test_corruption_repaired_is_an_empty_list_when_nothing_was_repaired():
    checked = {
        "tool": "check_table_corruption",
        "table": None,
        "output": {"method": "integrity_check", "status_by_table": {"a": "ok"}},
    }
    # A repair the check's finding skipped (its condition) has no output.
    skipped = {"tool": "repair_corrupted_tables", "table": None, "output": None}
    report = summarize("emergency", ["a"], [checked, skipped], None, bundled_rules())
    assert report["corruption_repaired"] == [] and report["corruption_found"] is False
    assert summarize("quick", [], [])["corruption_repaired"] == []


def test_a_step_that_also_analyzed_counts_its_statistics_once():
    # PostgreSQL's optimize_table is VACUUM (ANALYZE): one step, two kinds of work.
    declined = {"table": "c", "skipped_tables": [{"table": "c", "reason": "not the owner"}]}
    actions: list[dict[str, Any]] = [
        {"tool": "optimize_table", "table": "a", "output": {"vacuumed": True}},
        {
            "tool": "optimize_table",
            "table": "b",
            "output": {"vacuumed": True, "statistics_updated": True},
        },
        {"tool": "optimize_table", "table": "c", "output": declined},
    ]
    report = summarize("full", ["a", "b", "c"], actions, None, bundled_rules())
    assert report["tables_optimized"] == 2
    assert report["statistics_updated"] == 1
    assert [s["table"] for s in report["skipped"]] == ["c"]


def test_without_rules_the_report_counts_no_work_but_still_the_skips():
    declined = {"skipped_tables": [{"table": "t", "reason": "read-only"}]}
    actions = [
        {"tool": "rebuild_fragmented_indexes", "table": "t", "output": {"indexes_rebuilt": 2}},
        {"tool": "update_table_statistics", "table": "t", "output": declined},
    ]
    report = summarize("quick", ["t"], actions)
    assert report["indexes_rebuilt"] == 0 and report["statistics_updated"] == 0
    assert report["skipped"] == [
        {"tool": "update_table_statistics", "table": "t", "reason": "read-only"}
    ]


def test_a_site_tool_adds_to_the_report_by_its_own_rule(tmp_path):
    analyze = tool(
        name="site_analyze",
        category="maintenance",
        risk_level="low",
        required_capabilities=["database_write"],
        implementations={"sqlite": {"sql": "ANALYZE {table}"}},
        report={"add": "statistics_updated"},
    )
    registry = load_registry([bundled_catalog_dir(), catalog(tmp_path, analyze)])
    report_tool = registry.get("generate_maintenance_report").implementation("sqlite")
    with create_engine("sqlite://").connect() as conn:
        ctx = ToolContext(conn=conn, dialect="sqlite", target="t")
        params = {
            "maintenance_type": "quick",
            "tables": ["t"],
            "actions": [{"tool": "site_analyze", "table": "t", "output": {"rowcount": 0}}] * 2,
        }
        report = report_tool.run(params, ctx)
    assert report["statistics_updated"] == 2
    assert report["summary"].startswith("quick maintenance of 1 table(s); 2 statistics update(s)")


def test_a_site_tool_adds_to_each_section_of_its_list_of_rules(tmp_path):
    refresh = tool(
        name="site_refresh",
        category="maintenance",
        risk_level="low",
        required_capabilities=["database_write"],
        implementations={"sqlite": {"sql": "ANALYZE {table}"}},
        report=[
            {"add": "indexes_rebuilt", "from": "rebuilt"},
            {"add": "statistics_updated", "when": "analyzed"},
        ],
    )
    registry = load_registry([bundled_catalog_dir(), catalog(tmp_path, refresh)])
    assert [r.section for r in registry.get("site_refresh").report] == [
        "indexes_rebuilt",
        "statistics_updated",
    ]
    rules = {name: t.report for name, t in registry.tools.items() if t.report}
    actions = [
        {"tool": "site_refresh", "table": "t", "output": {"rebuilt": 3, "analyzed": True}},
        {"tool": "site_refresh", "table": "u", "output": {"rebuilt": 1, "analyzed": False}},
    ]
    report = summarize("full", ["t", "u"], actions, None, rules)
    assert report["indexes_rebuilt"] == 4 and report["statistics_updated"] == 1


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"add": "rows_deleted"}, "report.add: 'rows_deleted' is not one of"),
        ({"add": "statistics_updated", "merge": "corruption_check"}, "exactly one of"),
        ({"set": "repaired_tables"}, "report: set needs from"),
        ({"merge": "corruption_check", "when": "ok"}, "report: merge takes no when"),
        ({"per_table": "fragmentation", "fields": []}, "report.fields must list at least one"),
        ({"add": "indexes_rebuilt", "from": 3}, "report.from must name a field"),
        ("statistics_updated", "report must be a mapping"),
        ([], "report: an empty list"),
        (
            [{"add": "statistics_updated"}, {"add": "statistics_updated", "when": "ok"}],
            "report: more than one rule for statistics_updated",
        ),
        ([{"add": "statistics_updated"}, {"set": "repaired_tables"}], "report: set needs from"),
    ],
)
def test_a_report_rule_that_does_not_fit_the_report_is_refused(tmp_path, rule, message):
    with pytest.raises(CatalogError, match=message):
        load_registry([catalog(tmp_path, tool(report=rule))])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"run_report": "yes"}, "run_report must be true or false"),
        ({"rows_purged": "rows_deleted"}, "rows_purged must name a field of returns"),
        ({"rows_purged": ["n"]}, "rows_purged must name a field of returns"),
    ],
)
def test_a_run_report_or_purge_count_that_does_not_fit_is_refused(tmp_path, overrides, message):
    with pytest.raises(CatalogError, match=message):
        load_registry([catalog(tmp_path, tool(**overrides))])


def test_a_site_tools_output_is_the_runs_report_and_its_deletions_are_counted(home, demo_db):
    # Neither is a tool name known to the code: both come from the definitions.
    trim = tool(
        name="site_trim_debug",
        category="cleanup",
        risk_level="high",
        required_capabilities=["database_write"],
        returns={"type": "object", "properties": {"rowcount": {"type": "integer"}}},
        implementations={"sqlite": {"sql": "DELETE FROM {table} WHERE level = 'DEBUG'"}},
        rows_purged="rowcount",
    )
    summary = tool(name="site_summary", run_report=True)
    folder = catalog(home, trim, summary, folder="site_tools")
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["catalog_paths"] = [str(folder)]
    path.write_text(yaml.safe_dump(data))
    config = load_config(home=home)
    debug_rows = _count(demo_db, "SELECT count(*) FROM app_logs WHERE level = 'DEBUG'")
    assert debug_rows > 0
    steps = (
        Step("step_0", "site_trim_debug", {"table": "app_logs"}),
        Step("step_1", "site_summary", {"table": "app_logs"}),
    )
    plan = Plan("maintenance", "demo", "sqlite", {"type": "custom"}, steps)
    result = commands.apply_plan(config, plan, approver=PreApproved(up_to=RiskLevel.HIGH))
    assert result.status == "completed", result.error
    left = _count(demo_db, "SELECT count(*) FROM app_logs")
    assert result.report == {"n": left} == result.to_dict()["report"]
    purged = [
        line
        for line in commands.metrics(config).splitlines()
        if line.startswith("aishell_last_run_rows_purged")
    ]
    assert purged == [
        f'aishell_last_run_rows_purged{{agent="maintenance",target="demo"}} {float(debug_rows)}'
    ]


def _count(path: Path, query: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(query).fetchone()[0])


def test_a_table_two_steps_optimized_counts_once():
    # MySQL: the rebuild step rebuilt a whole (ALTER ... FORCE), the optimize step
    # OPTIMIZEd it again; b was only rebuilt, c only optimized. Statistics are counted
    # by update: a's two are two.
    actions: list[dict[str, Any]] = [
        {
            "tool": "rebuild_fragmented_indexes",
            "table": None,
            "output": {
                "by_table": [
                    {"table": "a", "tables_rebuilt": 1, "indexes_rebuilt": 2},
                    {"table": "b", "tables_rebuilt": 1, "indexes_rebuilt": 1},
                ]
            },
        },
        {"tool": "optimize_table", "table": "a", "output": {"vacuumed": True}},
        {"tool": "optimize_table", "table": "c", "output": {"vacuumed": True}},
        {
            "tool": "update_table_statistics",
            "table": "a",
            "output": {"statistics_updated": True, "tables_analyzed": 1},
        },
        {
            "tool": "optimize_table",
            "table": "a",
            "output": {"vacuumed": True, "statistics_updated": True},
        },
    ]
    report = summarize("full", ["a", "b", "c"], actions, None, bundled_rules())
    assert report["tables_optimized"] == 3
    assert report["statistics_updated"] == 2
    assert report["indexes_rebuilt"] == 3  # indexes are counted, not tables
