import itertools
import sqlite3
import subprocess
import sys

import pytest
import yaml

from aishell import commands
from aishell.config.models import load_config
from aishell.errors import TargetLocked
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import NonInteractive, PreApproved, Prompting
from aishell.state.store import StateStore
from aishell.targets.engines import open_target
from aishell.targets.identity import database_identity
from tests.helpers import corrupt_index, digest, query

LEVEL_INDEX = "idx_app_logs_level"


def index_fragmentation(db, name):
    """Share of leaf pages out of key order, measured independently of aishell."""
    pages = [
        r[0]
        for r in query(
            db, "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path", name
        )
    ]
    jumps = sum(1 for a, b in itertools.pairwise(pages) if b != a + 1)
    return 100.0 * jumps / max(len(pages) - 1, 1)


def test_full_run_completes_and_is_recorded(config, demo_db):
    before_fragmentation = index_fragmentation(demo_db, LEVEL_INDEX)
    free_before = query(demo_db, "PRAGMA freelist_count")[0][0]
    assert before_fragmentation > 30 and free_before > 0

    result = commands.run_job(config, "maintenance", {"type": "full"})

    assert result.status == "completed"
    assert {s.status for s in result.steps} == {"succeeded"}
    assert index_fragmentation(demo_db, LEVEL_INDEX) < before_fragmentation / 2
    assert query(demo_db, "PRAGMA freelist_count")[0][0] == 0
    assert query(demo_db, "PRAGMA integrity_check")[0][0] == "ok"
    stats = {r[0] for r in query(demo_db, "SELECT DISTINCT tbl FROM sqlite_stat1")}
    assert stats == {"app_logs", "orders", "products", "users"}
    report = result.report
    assert report["indexes_rebuilt"] >= 1 and report["statistics_updated"] == 4
    assert report["reclaimed_bytes"] > 0 and report["freelist_after"] == 0

    stored = commands.show_run(config, result.run_id)
    assert stored["status"] == "completed"
    assert [s["status"] for s in stored["steps"]] == ["succeeded"] * len(result.steps)
    assert (
        stored["steps"][2]["output"]["indexes_rebuilt"] == result.steps[2].output["indexes_rebuilt"]
    )
    # Resolved params are stored: the report's references became the outputs themselves.
    assert stored["steps"][-1]["params"]["baseline"]["database_size_bytes"] > 0
    assert stored["steps"][-1]["planned_params"]["baseline"] == "${step_0.output}"
    kinds = [e["kind"] for e in stored["events"]]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert commands.list_runs(config)[0]["run_id"] == result.run_id


def test_dry_run_leaves_the_database_byte_for_byte_unchanged(config, demo_db):
    before = digest(demo_db)
    result = commands.run_job(config, "maintenance", {"type": "full"}, dry_run=True)
    assert digest(demo_db) == before
    assert sorted(p.name for p in demo_db.parent.glob("demo.db*")) == ["demo.db"]
    assert result.status == "completed" and result.dry_run
    by_tool = {}
    for step in result.steps:
        by_tool.setdefault(step.tool, set()).add(step.status)
    assert by_tool["analyze_database_health"] == {"succeeded"}
    assert by_tool["analyze_table_fragmentation"] == {"succeeded"}
    assert by_tool["rebuild_fragmented_indexes"] == {"previewed"}
    assert by_tool["optimize_table"] == {"previewed"}
    # The report needs outputs of previewed steps, so it is previewed too.
    assert by_tool["generate_maintenance_report"] == {"previewed"}
    assert any("REINDEX" in sql for s in result.steps for sql in s.sql)


def test_strict_level_without_a_person_runs_what_needs_no_approval_then_waits(edit_config, demo_db):
    config = edit_config(maintenance={"default_config": {"safety_level": "strict"}})
    result = commands.run_job(
        config, "maintenance", {"type": "full", "tables": ["orders"]}, approver=NonInteractive()
    )
    assert result.status == "waiting_approval"
    assert [(s.tool, s.status) for s in result.steps] == [
        ("analyze_database_health", "succeeded"),
        ("analyze_table_fragmentation", "succeeded"),
        ("rebuild_fragmented_indexes", "waiting_approval"),
        ("optimize_table", "waiting_approval"),
        ("update_table_statistics", "succeeded"),
        ("generate_maintenance_report", "pending"),
    ]
    assert result.steps[-1].error == "waits for step_2, step_3"
    # Nothing medium ran: the free pages are still there.
    assert query(demo_db, "PRAGMA freelist_count")[0][0] > 0
    stored = commands.show_run(config, result.run_id)
    assert [a["decision"] for a in stored["approvals"]] == ["deferred", "deferred"]
    assert stored["approvals"][0]["how"] == "non-interactive"


def test_pre_approval_is_recorded_with_who_and_how(edit_config, demo_db):
    config = edit_config(maintenance={"default_config": {"safety_level": "strict"}})
    result = commands.run_job(
        config, "maintenance", {"type": "full", "tables": ["orders"]}, approver=PreApproved()
    )
    assert result.status == "completed"
    approvals = commands.show_run(config, result.run_id)["approvals"]
    assert [a["decision"] for a in approvals] == ["approved", "approved"]
    assert all(a["how"] == "--yes" and a["decided_by"] for a in approvals)


def test_a_denied_step_is_not_run_and_the_rest_continue(edit_config, demo_db):
    config = edit_config(maintenance={"default_config": {"safety_level": "strict"}})
    asked = []

    def ask(request):
        asked.append(request)
        return "no" if request.tool == "rebuild_fragmented_indexes" else "yes"

    before = index_fragmentation(demo_db, LEVEL_INDEX)
    result = commands.run_job(
        config, "maintenance", {"type": "full", "tables": ["app_logs"]}, approver=Prompting(ask=ask)
    )
    assert result.status == "completed_with_denials"
    assert [s.status for s in result.steps] == [
        "succeeded",
        "succeeded",
        "denied",
        "succeeded",
        "succeeded",
        "succeeded",
    ]
    assert asked[0].sql == ['REINDEX main."idx_app_logs_created"', f'REINDEX main."{LEVEL_INDEX}"']
    assert asked[0].target == "demo" and asked[0].risk == "medium" and asked[0].reasons
    # VACUUM (approved) rebuilt the file, so compare against a fresh measurement.
    assert index_fragmentation(demo_db, LEVEL_INDEX) <= before


def test_all_approves_the_rest_of_that_risk_level(edit_config, demo_db):
    config = edit_config(maintenance={"default_config": {"safety_level": "strict"}})
    asked = []
    result = commands.run_job(
        config,
        "maintenance",
        {"type": "full", "tables": ["orders", "users"]},
        approver=Prompting(ask=lambda r: asked.append(r.tool) or "all"),
    )
    assert result.status == "completed"
    assert asked == ["rebuild_fragmented_indexes"]


def test_quit_stops_the_run(edit_config, demo_db):
    config = edit_config(maintenance={"default_config": {"safety_level": "strict"}})
    before = digest(demo_db)
    result = commands.run_job(
        config, "maintenance", {"type": "full"}, approver=Prompting(ask=lambda r: "quit")
    )
    assert result.status == "aborted"
    assert digest(demo_db) == before
    assert result.steps[-1].status == "pending"


def test_emergency_run_repairs_a_corrupted_index_after_a_backup(config, demo_db, home):
    corrupt_index(demo_db)
    assert query(demo_db, "PRAGMA integrity_check")[0][0] != "ok"
    result = commands.run_job(config, "maintenance", {"type": "emergency"}, approver=PreApproved())
    assert result.status == "completed", result.error
    check, repair = result.steps[1], result.steps[2]
    assert check.output["corrupted_tables"] == ["ledger"]
    assert any("missing from index ledger_a" in i["message"] for i in check.output["issues"])
    assert repair.params["tables"] == ["ledger"]
    assert repair.output["repaired_tables"] == ["ledger"]
    backup = repair.output["backup_path"]
    assert (
        backup.startswith(str(home / "backups"))
        and query(__import__("pathlib").Path(backup), "SELECT count(*) FROM ledger")[0][0] == 400
    )
    assert query(demo_db, "PRAGMA integrity_check")[0][0] == "ok"
    assert result.report["corruption_found"] and result.report["repaired_tables"] == ["ledger"]


def test_emergency_run_on_a_healthy_database_skips_the_repair(config, demo_db):
    result = commands.run_job(
        config, "maintenance", {"type": "emergency"}, approver=NonInteractive()
    )
    assert result.status == "completed"
    repair = result.steps[2]
    assert repair.status == "skipped"
    assert repair.error == "step_1 found no corrupted_tables: nothing to do"
    assert result.report["corruption_found"] is False


def site_catalog(home, **tool):
    folder = home / "site_tools"
    folder.mkdir(exist_ok=True)
    (folder / f"{tool['name']}.yaml").write_text(yaml.safe_dump(tool))
    config_path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(config_path.read_text())
    data["catalog_paths"] = ["site_tools"]
    config_path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


SLOW_SQL = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500000000) "
    "SELECT count(*) AS n FROM n"
)


def run_plan(config, steps):
    plan = Plan("maintenance", "demo", "sqlite", {"type": "custom"}, tuple(steps))
    return commands.apply_plan(config, plan)


def test_a_step_past_its_time_limit_is_interrupted(home, demo_db):
    config = site_catalog(
        home,
        name="slow_count",
        description="Counts for a very long time.",
        category="analysis",
        risk_level="safe",
        required_capabilities=["database_read"],
        max_execution_time=1,
        idempotent=True,
        params={"type": "object", "properties": {}},
        returns={"type": "object"},
        examples=[{"params": {}}],
        implementations={"sqlite": {"sql": SLOW_SQL, "result": "one"}},
        locks={"sqlite": []},
    )
    result = run_plan(
        config,
        [Step("step_0", "slow_count", {}), Step("step_1", "count_table_rows", {"table": "users"})],
    )
    assert result.status == "failed"
    assert result.steps[0].status == "failed"
    assert "exceeded its time limit of 1 s" in result.steps[0].error
    assert result.steps[0].seconds < 10
    assert result.steps[1].status == "pending"


def test_a_reference_to_a_missing_key_fails_the_step_naming_both(config, demo_db):
    result = run_plan(
        config,
        [
            Step("step_0", "count_table_rows", {"table": "users"}),
            Step("step_1", "count_table_rows", {"table": "${step_0.output.table_name}"}),
        ],
    )
    assert result.status == "failed"
    assert result.steps[1].status == "failed"
    assert "step_1" in result.steps[1].error and "no key 'table_name'" in result.steps[1].error
    assert "row_count" in result.steps[1].error


def test_a_substituted_table_is_checked_against_the_catalog(config, demo_db):
    result = run_plan(
        config,
        [
            Step("step_0", "check_table_corruption", {"tables": ["users"]}),
            Step("step_1", "count_table_rows", {"table": "x ${step_0.output.checked_tables}"}),
        ],
    )
    assert result.steps[1].status == "failed"
    assert result.steps[1].error.startswith("Table 'x [\"users\"]' not found in target 'demo'")


HOLD_LOCK = """
import sys, time
from aishell.config.models import load_config
from aishell.targets.engines import open_target
from aishell.targets.identity import database_identity
target = open_target(load_config(), "demo")
with target.connect() as conn:
    identity = database_identity(conn)
lock = target.try_lock("aishell:" + identity)
print("held" if lock else "busy", flush=True)
time.sleep(60)
"""


def test_another_process_holding_the_target_is_refused_with_exit_5(config, demo_db, home):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            TargetLocked,
            match="is locked for maintenance: its database is in use by another aishell",
        ):
            commands.run_job(config, "maintenance", {"type": "quick"})
        from click.testing import CliRunner

        from aishell.cli import cli

        result = CliRunner().invoke(cli, ["run", "maintenance", "--type", "quick"])
        assert result.exit_code == 5
        # A dry run reads only and takes no lock.
        assert commands.run_job(config, "maintenance", {"type": "quick"}, dry_run=True).status == (
            "completed"
        )
    finally:
        holder.kill()
        holder.wait()
    # The holder died; the server (here: the lock file) let go with it.
    assert commands.run_job(config, "maintenance", {"type": "quick"}).status == "completed"


def test_a_stale_lease_of_a_dead_process_is_taken_over(config, demo_db):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with StateStore(config.state_url) as store:
        target = open_target(config, "demo")
        with target.connect() as conn:
            store.acquire_lock(database_identity(conn), "oldrun")
        target.close()
        store._conn.execute(
            __import__("sqlalchemy").text("UPDATE target_locks SET pid = :p"), {"p": dead.pid}
        )
        store._conn.commit()
    result = commands.run_job(config, "maintenance", {"type": "quick"})
    assert result.status == "completed"
    events = commands.show_run(config, result.run_id)["events"]
    assert any(e["kind"] == "stale_lock_taken_over" for e in events)


def test_a_run_of_another_host_whose_lock_is_taken_over_is_interrupted_for_all(config, demo_db):
    """A run killed on another machine shows running on every machine but its own (no
    process of another host can be looked at); once its target's lock is taken over (the
    server let go of it), it is stored interrupted, and every machine lists it so."""
    sqlalchemy = __import__("sqlalchemy")
    first = commands.run_job(config, "maintenance", {"type": "quick"})
    with StateStore(config.state_url) as store:
        target = open_target(config, "demo")
        with target.connect() as conn:
            store.acquire_lock(database_identity(conn), first.run_id)
        target.close()
        for sql in (
            "UPDATE target_locks SET pid = 4242, hostname = 'host-elsewhere'",
            "UPDATE runs SET status = 'running', pid = 4242, hostname = 'host-elsewhere' "
            "WHERE run_id = :r",
        ):
            store._conn.execute(sqlalchemy.text(sql), {"r": first.run_id})
        store._conn.commit()
    assert commands.show_run(config, first.run_id)["status"] == "running"

    second = commands.run_job(config, "maintenance", {"type": "quick"})

    assert second.status == "completed"
    shown = commands.show_run(config, first.run_id)
    assert shown["status"] == "interrupted", shown["status"]
    assert "host-elsewhere" in shown["error"] and "taken over" in shown["error"]
    assert commands.resume_run(config, first.run_id).status == "completed"


def test_state_store_is_wal_with_full_sync(config, demo_db):
    commands.run_job(config, "maintenance", {"type": "quick"})
    conn = sqlite3.connect(config.home / "state.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
