"""An approval holds for the lock wait its question showed.

A step's question shows the locks it takes and the lock wait that bounds them ("lock
wait 1 s (targets.db.lock_timeout_ms)"): how long it may queue for its lock, holding
up every session that queues behind it. A yes given for that wait does not cover a
longer one: a resume after the target's lock wait was raised asks again, naming it; a
wait made shorter, or left as it was, is covered. PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.executor.results import RunResult
from aishell.policy.approvers import NonInteractive, PreApproved
from tests.helpers import one_step_plan, read_yaml, run_sql, use_target, write_yaml


def _waits(home: Path, url: str, **timeouts: int) -> Config:
    """The config with the target at `url` and these lock waits."""
    use_target(home, url)
    path = home / "config" / "aishell.yaml"
    data = read_yaml(path)
    data["targets"]["db"].update(timeouts)
    write_yaml(path, data)
    return load_config(home=home)


def _approved_then_resumed(
    home: Path, url: str, dialect: str, table: str, setting: str, then: int, now: int
) -> RunResult:
    config = _waits(home, url, **{setting: then})
    params = {"tables": [table], "fragmentation_threshold": 0}
    plan = one_step_plan("maintenance", "db", dialect, "optimize_table", params)
    waiting = commands.apply_plan(config, plan, approver=NonInteractive(), safety_level="strict")
    assert waiting.status == "waiting_approval", (waiting.status, waiting.error)
    commands.decide_steps(config, waiting.run_id, "approved")
    config = _waits(home, url, **{setting: now})
    return commands.resume_run(
        config, waiting.run_id, approver=NonInteractive(), safety_level="strict"
    )


def _asked_again(resumed: RunResult, setting: str) -> None:
    step = resumed.steps[0]
    assert resumed.status == "waiting_approval", (resumed.status, step.status, step.error)
    assert step.status == "waiting_approval"
    assert "lock wait" in (step.error or "") and setting in (step.error or ""), step.error


def _pg_table(url: str) -> str:
    table = f"lw_{uuid.uuid4().hex[:8]}"
    run_sql(
        url,
        f"CREATE TABLE {table} (id int PRIMARY KEY, body text)",
        f"INSERT INTO {table} SELECT g, repeat('x', 100) FROM generate_series(1, 500) g",
    )
    return table


def test_postgresql_a_longer_lock_wait_is_asked_about(home: Path, pg_url: str) -> None:
    table = _pg_table(pg_url)
    setting = "lock_timeout_ms"
    resumed = _approved_then_resumed(home, pg_url, "postgresql", table, setting, 1000, 60_000)
    _asked_again(resumed, setting)


def test_postgresql_a_shorter_lock_wait_is_covered(home: Path, pg_url: str) -> None:
    table = _pg_table(pg_url)
    resumed = _approved_then_resumed(
        home, pg_url, "postgresql", table, "lock_timeout_ms", 5000, 500
    )
    assert resumed.status == "completed", resumed.error


def test_mariadb_a_longer_lock_wait_is_asked_about(home: Path, mysql_url: str) -> None:
    table = f"lw_{uuid.uuid4().hex[:8]}"
    run_sql(
        mysql_url,
        f"CREATE TABLE {table} (id int PRIMARY KEY, body varchar(200)) ENGINE=InnoDB",
        f"INSERT INTO {table} SELECT seq, repeat('x', 100) FROM seq_1_to_500",
    )
    setting = "lock_timeout_ms"
    resumed = _approved_then_resumed(home, mysql_url, "mysql", table, setting, 1000, 60_000)
    _asked_again(resumed, setting)


def test_sqlite_a_longer_busy_wait_is_asked_about(home: Path, tmp_path: Path) -> None:
    path = tmp_path / f"lw_{uuid.uuid4().hex[:8]}.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, "x" * 100) for i in range(500)])
    conn.commit()
    conn.close()
    setting = "busy_timeout_ms"
    url = f"sqlite:///{path}"
    resumed = _approved_then_resumed(home, url, "sqlite", "notes", setting, 1000, 60_000)
    _asked_again(resumed, setting)


def test_a_saved_plan_applied_with_a_longer_lock_wait_needs_a_yes_by_name(
    home: Path, pg_url: str
) -> None:
    """A plan saved with its preview showed a 1 s lock wait; applied with --yes after the
    wait was raised to a minute, its step waits for a person's yes to that very step."""
    table = _pg_table(pg_url)
    config = _waits(home, pg_url, lock_timeout_ms=1000)
    out = home / "plan.json"
    job = {"type": "full", "tables": [table]}
    commands.plan_job(config, "maintenance", job, out=out)
    config = _waits(home, pg_url, lock_timeout_ms=60_000)
    applied = commands.apply_plan(config, commands.load_plan_file(out), approver=PreApproved())
    assert applied.status == "waiting_approval", (applied.status, applied.error)
    held = [s for s in applied.steps if s.status == "waiting_approval"]
    assert held and all("lock wait 60 s" in (s.error or "") for s in held), [
        (s.step_id, s.status, s.error) for s in applied.steps
    ]
