"""Small tables share a step in standard and full maintenance: each table done in turn,
its outcome in the step's output and the report, the step's writes only to the tables
it lists, and a run killed (SIGKILL) inside a shared step going on, when resumed, at the
first table not done: no table's VACUUM sent twice, none missed; a table that only read
costs no checkpoint of its own."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text

from aishell import commands
from aishell.cli import cli
from aishell.guard.connection import Guard, shapes_for
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from aishell.state.store import StateStore
from tests.helpers import use_target
from tests.services import engine

TABLES = [f"shared_{i}" for i in range(6)]
HELD = "shared_3"


def make_tables(url: str, tables: list[str], rows: int = 400) -> None:
    with engine(url).begin() as conn:
        for t in tables:
            conn.execute(text(f"CREATE TABLE {t} (id integer PRIMARY KEY, note varchar(40))"))
            conn.execute(
                text(f"INSERT INTO {t} SELECT g, 'row ' || g FROM generate_series(1, {rows}) g")
            )
            conn.execute(text(f"DELETE FROM {t} WHERE id % 2 = 0"))


def vacuum_counts(url: str) -> dict[str, int]:
    with engine(url).connect() as conn:
        rows = conn.execute(text("SELECT relname, vacuum_count FROM pg_stat_user_tables")).all()
    return {str(r[0]): int(r[1]) for r in rows}


def with_lock_wait(home: Path, ms: int) -> None:
    """The target waits this long for a lock: the held table's VACUUM waits, and the
    test kills the run meanwhile."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["lock_timeout_ms"] = ms
    path.write_text(yaml.safe_dump(data))


def wait_for_vacuum_waiting(url: str, table: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    with engine(url).connect() as conn:
        while time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute(
                text(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE :q"
                ),
                {"q": f"VACUUM%{table}%"},
            ).first()
            if row is not None:
                return
            time.sleep(0.02)
    raise AssertionError(f"the run never waited for {table}'s lock (exit {proc.poll()})")


def newest_run(home: Path) -> str:
    conn = sqlite3.connect(home / "state.db")
    try:
        return str(conn.execute("SELECT run_id FROM runs ORDER BY created_at DESC").fetchone()[0])
    finally:
        conn.close()


def test_postgresql_a_run_killed_inside_a_shared_vacuum_goes_on_at_the_first_table_not_done(
    home: Path, pg_url: str
) -> None:
    make_tables(pg_url, TABLES)
    use_target(home, pg_url)
    with_lock_wait(home, 120_000)
    holder = engine(pg_url).connect()
    holder.execute(text("BEGIN"))  # the test's engine autocommits
    holder.execute(text(f"LOCK TABLE {HELD} IN SHARE UPDATE EXCLUSIVE MODE"))
    env = {k: v for k, v in os.environ.items() if k != "AISHELL_CONFIG"}
    env["AISHELL_HOME"] = str(home)
    args = ["run", "maintenance", "--type", "full", "--tables", ",".join(TABLES), "--yes"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "aishell", *args, "--json"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_vacuum_waiting(pg_url, HELD, proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        holder.execute(text("ROLLBACK"))
        holder.close()
    # The tables before the held one were vacuumed once; the rest not yet. (The killed
    # run's session may still send the held table's VACUUM once the lock is free: the
    # server learns of its client's death only when it next writes to it.)
    before = vacuum_counts(pg_url)
    assert [before[t] for t in TABLES] in ([1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0])

    run_id = newest_run(home)
    done = CliRunner().invoke(
        cli,
        ["resume", run_id, "--yes", "--json"],
        env={"AISHELL_HOME": str(home), "AISHELL_CONFIG": None},
        catch_exceptions=False,
    )
    assert done.exit_code == 0, done.output
    # Across the two processes, each table done before the kill was not vacuumed again,
    # and each after it once: only the table the kill cut short is done again.
    after = vacuum_counts(pg_url)
    assert [after[t] for t in TABLES] == [1, 1, 1, before[HELD] + 1, 1, 1]
    details = json.loads(done.stdout)
    assert details["status"] == "completed"
    optimize = next(s for s in details["steps"] if s["tool"] == "optimize_table")
    # The step says each table's outcome, those done before the kill among them.
    assert optimize["output"]["tables_done"] == TABLES
    assert [o["table"] for o in optimize["output"]["by_table"]] == TABLES
    assert details["report"]["tables_optimized"] == 6


def test_a_held_table_in_a_shared_step_is_skipped_and_the_others_done(
    home: Path, pg_url: str
) -> None:
    make_tables(pg_url, TABLES[:3])
    use_target(home, pg_url)
    with_lock_wait(home, 200)
    config = use_target(home, pg_url)
    holder = engine(pg_url).connect()
    holder.execute(text("BEGIN"))  # the test's engine autocommits
    holder.execute(text(f"LOCK TABLE {TABLES[1]} IN SHARE UPDATE EXCLUSIVE MODE"))
    try:
        result = commands.run_job(
            config, "maintenance", {"type": "full", "tables": TABLES[:3]}, approver=PreApproved()
        )
    finally:
        holder.execute(text("ROLLBACK"))
        holder.close()
    assert result.status == "completed", result.error
    optimize = next(s for s in result.steps if s.tool == "optimize_table")
    assert optimize.status == "succeeded"
    assert optimize.output["tables_done"] == [TABLES[0], TABLES[2]]
    [held] = optimize.output["skipped_tables"]
    assert held["table"] == TABLES[1] and held["cause"] == "locked"
    assert "tried twice" in held["reason"] and "held by pid" in held["reason"]
    assert result.report["tables_optimized"] == 2
    assert ("optimize_table", TABLES[1]) in {
        (s["tool"], s["table"]) for s in result.report["skipped"]
    }
    counts = vacuum_counts(pg_url)
    assert [counts[t] for t in TABLES[:3]] == [1, 0, 1]


def test_a_shared_step_writes_only_to_the_tables_it_lists(pg_url: str) -> None:
    with engine(pg_url).connect() as conn:
        shapes = shapes_for(
            ["VACUUM (ANALYZE) {table}"],
            [],
            conn,
            {},
            {"table": ['"shared_0"', '"shared_1"']},
        )
        guard = Guard(shapes=shapes, writes=True, risk=RiskLevel.MEDIUM)
        for listed in ("shared_0", "shared_1"):
            sql = f'VACUUM (ANALYZE) "{listed}"'
            assert guard.check(sql, None, "postgresql", "pyformat") is None
        refused = guard.check('VACUUM (ANALYZE) "other"', None, "postgresql", "pyformat")
        assert refused is not None


@pytest.mark.parametrize("kind", ["standard", "full"])
def test_mariadb_small_tables_share_each_step(home: Path, mysql_url: str, kind: str) -> None:
    with engine(mysql_url).begin() as conn:
        for t in TABLES[:4]:
            conn.execute(text(f"CREATE TABLE {t} (id int PRIMARY KEY, note varchar(40))"))
            conn.execute(text(f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b')"))
    config = use_target(home, mysql_url)
    result = commands.run_job(
        config, "maintenance", {"type": kind, "tables": TABLES[:4]}, approver=PreApproved()
    )
    assert result.status == "completed", result.error
    work = result.steps[1:-1]
    # One step of each tool, over the four tables in turn.
    assert all(s.params["tables"] == TABLES[:4] for s in work)
    for step in work:
        assert step.status == "succeeded"
        assert step.output.get("tables_done", step.output.get("tables")) == TABLES[:4]
    if kind == "full":
        optimize = next(s for s in work if s.tool == "optimize_table")
        assert [o["table"] for o in optimize.output["by_table"]] == TABLES[:4]
    # The audit names each table's own statements under the one step.
    audit = commands.run_statements(config, result.run_id)
    frag = next(s for s in work if s.tool == "analyze_table_fragmentation")
    assert {
        t
        for t in TABLES[:4]
        for a in audit
        if a["step_index"] == frag.index and t in str(a["parameters"])
    } == set(TABLES[:4])


def test_a_tool_that_only_reads_keeps_no_progress_of_each_table(config: Any) -> None:
    """A shared step checkpoints each table so that a resumed step skips the tables it
    changed; a tool that only reads (risk safe) changes none, so it would write a durable
    commit per table for nothing: none of them does."""
    registry = commands.load_catalog(config)
    for tool in registry.find(risk=RiskLevel.SAFE):
        for dialect, impl in tool.implementations.items():
            assert not getattr(impl, "checkpoints_each_table", False), (tool.name, dialect)


WRITES = ("VACUUM", "REINDEX", "OPTIMIZE", "ALTER")


def test_a_shared_step_keeps_the_progress_of_tables_that_wrote_and_of_none_that_only_read(
    server_config: Any, server_url: str
) -> None:
    """A shared step's progress is what a resumed step skips; a table its tool only read
    (the fragmentation analysis; a rebuild or compaction with nothing to do) is read
    again instead, so it costs no durable commit of its own."""
    tables = TABLES[:4]
    with engine(server_url).begin() as conn:
        for t in tables:
            conn.execute(text(f"CREATE TABLE {t} (id int PRIMARY KEY, note varchar(40))"))
            conn.execute(text(f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b'), (3, 'c')"))
            conn.execute(text(f"DELETE FROM {t} WHERE id = 2"))
    result = commands.run_job(
        server_config, "maintenance", {"type": "full", "tables": tables}, approver=PreApproved()
    )
    assert result.status == "completed", result.error
    shared = [s for s in result.steps if s.params.get("tables") == tables]
    tools = {s.tool for s in shared}
    assert {"analyze_table_fragmentation", "rebuild_fragmented_indexes", "optimize_table"} <= tools
    audit = commands.run_statements(server_config, result.run_id)
    with StateStore(server_config.state_url) as store:
        kept = {s.tool: store.get_progress(result.run_id, s.index) for s in shared}
    for step in shared:
        wrote = {
            t
            for a in audit
            if a["step_index"] == step.index and a["sql"].lstrip().upper().startswith(WRITES)
            for t in tables
            if t in a["sql"]
        }
        progress = kept[step.tool]
        if wrote:
            assert progress is not None, step.tool
            assert set(progress["done"]) >= wrote, step.tool
        else:
            assert progress is None, step.tool
    assert kept["analyze_table_fragmentation"] is None
    if "postgresql" in server_url:  # VACUUM writes every table; nothing to rebuild
        assert kept["optimize_table"] == {"done": tables, "skipped_tables": [], "tables_gone": []}
        assert kept["rebuild_fragmented_indexes"] is None
