import pytest

from aishell import commands
from aishell.errors import TargetError, UsageError
from tests.helpers import digest, query

TABLES = ["app_logs", "orders", "products", "users"]


def tools_of(preview):
    return [s.tool for s in preview.steps]


def test_quick_plan_updates_statistics_of_every_table(config, demo_db):
    preview = commands.plan_job(config, "maintenance", {"type": "quick"})
    # The demo's tables are small: one step analyzes them all.
    assert tools_of(preview) == (
        ["analyze_database_health", "update_table_statistics", "generate_maintenance_report"]
    )
    assert preview.steps[1].params == {"tables": TABLES}
    assert preview.steps[1].sql == [f'ANALYZE "{t}"' for t in TABLES]
    assert preview.steps[0].params == {"tables": TABLES, "check_corruption": False}


def test_standard_plan_measures_then_analyzes_each_table(config, demo_db):
    preview = commands.plan_job(config, "maintenance", {"type": "standard", "tables": ["orders"]})
    assert tools_of(preview) == [
        "analyze_database_health",
        "analyze_table_fragmentation",
        "update_table_statistics",
        "generate_maintenance_report",
    ]


def test_full_plan_per_table_in_order(config, demo_db):
    preview = commands.plan_job(config, "maintenance", {"type": "full"})
    per_table = ["analyze_table_fragmentation", "rebuild_fragmented_indexes", "optimize_table"]
    # The demo's tables are small: their statistics are refreshed in one step after them.
    assert tools_of(preview) == (
        ["analyze_database_health"]
        + per_table * 4
        + ["update_table_statistics", "generate_maintenance_report"]
    )
    optimized = [s.params["table"] for s in preview.steps if s.tool == "optimize_table"]
    assert preview.steps[-2].params == {"tables": optimized}
    assert preview.steps[0].params["check_corruption"] is True
    # The largest table (the most urgent on SQLite) comes first.
    order = [s.params["table"] for s in preview.steps if s.tool == "optimize_table"]
    sizes = dict(
        query(
            demo_db,
            "SELECT s.tbl_name, sum(d.pgsize) FROM dbstat d "
            "JOIN sqlite_schema s ON s.name = d.name GROUP BY s.tbl_name",
        )
    )
    assert order == sorted(TABLES, key=lambda t: -sizes[t])
    rebuild = next(
        s
        for s in preview.steps
        if s.tool == "rebuild_fragmented_indexes" and s.params["table"] == "app_logs"
    )
    assert rebuild.params == {"table": "app_logs", "fragmentation_threshold": 30, "min_pages": 8}
    # The preview reads the real catalog: the demo's scattered index is named.
    assert 'REINDEX "idx_app_logs_level"' in rebuild.sql
    report = preview.steps[-1]
    assert report.params["baseline"] == "${step_0.output}"
    assert report.params["actions"][0] == {
        "tool": "analyze_table_fragmentation",
        "table": order[0],
        "output": "${step_1.output}",
    }


def test_full_plan_without_index_rebuilds(config, demo_db):
    preview = commands.plan_job(config, "maintenance", {"type": "full", "rebuild_indexes": False})
    assert "rebuild_fragmented_indexes" not in tools_of(preview)


def test_emergency_plan_repairs_what_the_check_found(config, demo_db):
    preview = commands.plan_job(config, "maintenance", {"type": "emergency"})
    assert tools_of(preview) == [
        "analyze_database_health",
        "check_table_corruption",
        "repair_corrupted_tables",
        "generate_maintenance_report",
    ]
    repair = preview.plan.steps[2]
    assert repair.params["tables"] == "${step_1.output.corrupted_tables}"
    assert repair.condition == "${step_1.output.corrupted_tables}"
    assert preview.steps[2].requires_approval
    assert any("always needs approval" in r for r in preview.steps[2].reasons)


def test_planning_never_writes_to_the_target(config, demo_db):
    before = digest(demo_db)
    for kind in ("quick", "standard", "full", "emergency"):
        commands.plan_job(config, "maintenance", {"type": kind})
    assert digest(demo_db) == before


def test_a_missing_table_is_named_with_the_tables_there_are(config, demo_db):
    with pytest.raises(TargetError) as err:
        commands.plan_job(config, "maintenance", {"type": "quick", "tables": ["orders", "ordres"]})
    assert str(err.value) == (
        "Table 'ordres' not found in target 'demo'; tables are: app_logs, orders, products, users"
    )


def test_a_bad_type_is_refused(config, demo_db):
    with pytest.raises(UsageError, match="Unknown maintenance type 'weekly'; expected one of"):
        commands.plan_job(config, "maintenance", {"type": "weekly"})


def test_plan_hash_is_stable_for_the_same_database(config, demo_db):
    a = commands.plan_job(config, "maintenance", {"type": "full"})
    b = commands.plan_job(config, "maintenance", {"type": "full"})
    assert a.plan.hash == b.plan.hash


def test_statistics_steps_group_small_tables_and_leave_a_large_one_alone():
    from aishell.agents.base import PlanningContext
    from aishell.agents.maintenance import MaintenanceAgent
    from aishell.config.models import AgentDefaults

    # Named in the order full maintenance takes tables of equal urgency (by name).
    small = [f"a{i:03d}" for i in range(150)] + [f"c{i:03d}" for i in range(300)]
    tables = [*small[:150], "big", *small[150:]]
    sizes = {t: 2**20 for t in small} | {"big": 2**30}
    agent = MaintenanceAgent()
    for kind in ("quick", "full"):
        context = PlanningContext("db", "mysql", tuple(tables), AgentDefaults(), sizes=sizes)
        steps = agent.plan_steps({"type": kind, "tables": None}, context)
        groups = [
            s.params.get("tables") or [s.params["table"]]
            for s in steps
            if s.tool == "update_table_statistics"
        ]
        # In order, each table once: the small ones before the large table together, the
        # large one alone, then the rest in steps of at most 200.
        assert [t for g in groups for t in g] == tables, kind
        assert [len(g) for g in groups] == [150, 1, 200, 100], kind
    # Full maintenance refreshes a group's statistics right after that group's work.
    work = [s.params.get("table") for s in steps if s.tool == "optimize_table"]
    at = [i for i, s in enumerate(steps) if s.tool == "update_table_statistics"]
    optimize_big = next(
        i for i, s in enumerate(steps) if s.tool == "optimize_table" and s.params["table"] == "big"
    )
    assert at[1] == optimize_big + 1 and work == tables
