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
    assert preview.steps[1].sql == [f'ANALYZE main."{t}"' for t in TABLES]
    assert preview.steps[0].params == {"tables": TABLES, "check_corruption": False}


def test_standard_plan_measures_then_analyzes_each_table(config, demo_db):
    preview = commands.plan_job(config, "maintenance", {"type": "standard", "tables": ["orders"]})
    assert tools_of(preview) == [
        "analyze_database_health",
        "analyze_table_fragmentation",
        "update_table_statistics",
        "generate_maintenance_report",
    ]


def test_full_plan_does_small_tables_in_shared_steps_in_order(config, demo_db):
    preview = commands.plan_job(config, "maintenance", {"type": "full"})
    # The demo's tables are small: one step of each tool does them all, in turn.
    assert tools_of(preview) == [
        "analyze_database_health",
        "analyze_table_fragmentation",
        "rebuild_fragmented_indexes",
        "optimize_table",
        "update_table_statistics",
        "generate_maintenance_report",
    ]
    order = preview.steps[3].params["tables"]
    assert all(s.params["tables"] == order for s in preview.steps[1:5])
    assert preview.steps[0].params["check_corruption"] is True
    # The largest table (the most urgent on SQLite) comes first.
    sizes = dict(
        query(
            demo_db,
            "SELECT s.tbl_name, sum(d.pgsize) FROM dbstat d "
            "JOIN sqlite_schema s ON s.name = d.name GROUP BY s.tbl_name",
        )
    )
    assert order == sorted(TABLES, key=lambda t: -sizes[t])
    rebuild = preview.steps[2]
    assert rebuild.params == {"tables": order, "fragmentation_threshold": 30, "min_pages": 8}
    # The preview reads the real catalog: the demo's scattered index is named, once.
    assert rebuild.sql.count('REINDEX main."idx_app_logs_level"') == 1
    # SQLite's VACUUM is of the file: the step sends it once at most.
    assert sum(sql == "VACUUM" for sql in preview.steps[3].sql) <= 1
    report = preview.steps[-1]
    assert report.params["baseline"] == "${step_0.output}"
    assert report.params["actions"][0] == {
        "tool": "analyze_table_fragmentation",
        "table": None,
        "output": "${step_1.output}",
    }


def test_a_large_table_keeps_steps_of_its_own_in_standard_and_full_maintenance():
    from aishell.agents.base import PlanningContext
    from aishell.agents.maintenance import MaintenanceAgent
    from aishell.config.models import AgentDefaults

    tables = ["a", "big", "c", "d"]
    sizes = {"a": 2**20, "big": 2**30, "c": 2**20, "d": 2**20}
    context = PlanningContext("db", "postgresql", tuple(tables), AgentDefaults(), sizes=sizes)
    steps = MaintenanceAgent().plan_steps({"type": "standard", "tables": tables}, context)
    assert [(s.tool, s.params.get("table") or s.params["tables"]) for s in steps[1:-1]] == [
        ("analyze_table_fragmentation", ["a"][0]),
        ("update_table_statistics", "a"),
        ("analyze_table_fragmentation", "big"),
        ("update_table_statistics", "big"),
        ("analyze_table_fragmentation", ["c", "d"]),
        ("update_table_statistics", ["c", "d"]),
    ]
    # Each shared step's rationale names how many tables it does, and which.
    assert steps[5].rationale == "Measure fragmentation of 2 tables, c to d"


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
    said = "^--type: 'weekly' is not one of: quick, standard, full, emergency$"
    with pytest.raises(UsageError, match=said):
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
        # Every step of the work is over the same groups, in the same order.
        for tool in ("analyze_table_fragmentation", "optimize_table"):
            of_tool = [
                s.params.get("tables") or [s.params["table"]] for s in steps if s.tool == tool
            ]
            assert of_tool == ([] if kind == "quick" else groups), (kind, tool)
    # Full maintenance refreshes a group's statistics right after that group's work.
    at = [i for i, s in enumerate(steps) if s.tool == "update_table_statistics"]
    optimize_big = next(
        i
        for i, s in enumerate(steps)
        if s.tool == "optimize_table" and s.params.get("table") == "big"
    )
    assert at[1] == optimize_big + 1
