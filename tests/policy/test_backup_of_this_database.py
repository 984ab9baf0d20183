"""backup_required counts a backup of the database the target reaches now, as old as it
is: a backup of the database its name reached before (the URL pointed elsewhere, a
SQLite file replaced) vouches for nothing, and a backup its own run took ages like any
other when the run is resumed days later."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import NonInteractive
from tests.helpers import run_sql, use_target
from tests.services import scratch_server

STATISTICS = "update_table_statistics"
NEEDS = f"{STATISTICS} needs a verified backup of 'db'"
QUICK = {"type": "quick", "tables": ["t"]}


@contextmanager
def _two_databases(dialect: str, home: Path) -> Iterator[tuple[str, str]]:
    """Two databases of the dialect, each with a table t of a few rows; their URLs."""
    if dialect == "sqlite":
        urls = []
        for name in ("first", "second"):
            conn = sqlite3.connect(home / f"{name}.db")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            conn.execute("INSERT INTO t (v) VALUES ('a'), ('b')")
            conn.commit()
            conn.close()
            urls.append(f"sqlite:///{home / f'{name}.db'}")
        yield urls[0], urls[1]
        return
    with scratch_server(dialect) as first, scratch_server(dialect) as second:
        for url in (first, second):
            run_sql(url, "CREATE TABLE t (id integer PRIMARY KEY, v text)")
            run_sql(url, "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        yield first, second


def _pointed_at(home: Path, url: str, edit_config: Any) -> Config:
    """Target db at url, its statistics updates needing a backup from the last day."""
    use_target(home, url)
    required = {"type": "backup_required", "before_operations": [STATISTICS]}
    return edit_config(
        maintenance={
            "default_config": {"safety_level": "permissive"},
            "safety_constraints": [required],
        }
    )


def _needs_backup(step: Any) -> bool:
    return any(r.startswith(NEEDS) for r in step.reasons)


def _statistics(result: Any) -> Any:
    return next(s for s in result.steps if s.tool == STATISTICS)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_backup_of_the_database_the_target_reached_before_counts_not(
    home: Path, edit_config: Any, dialect: str
) -> None:
    with _two_databases(dialect, home) as (first, second):
        config = _pointed_at(home, first, edit_config)
        taken = commands.run_job(config, "backup", {"type": "full"})
        assert taken.status == "completed", taken.error
        assert not _needs_backup(_statistics(commands.plan_job(config, "maintenance", QUICK)))
        # The same name, another database: its verified backup is not this one's.
        config = _pointed_at(home, second, edit_config)
        preview = commands.plan_job(config, "maintenance", QUICK)
        assert _needs_backup(_statistics(preview)), _statistics(preview).reasons
        ran = commands.run_job(config, "maintenance", QUICK, approver=NonInteractive())
        assert ran.status == "waiting_approval", ran.error
        assert _needs_backup(_statistics(ran))


def test_a_backup_of_a_sqlite_file_since_replaced_counts_not(home: Path, edit_config: Any) -> None:
    with _two_databases("sqlite", home) as (first, _):
        config = _pointed_at(home, first, edit_config)
        taken = commands.run_job(config, "backup", {"type": "full"})
        assert taken.status == "completed", taken.error
        path = home / "first.db"
        # A copy put in its place: the same path and contents, another file.
        shutil.copyfile(path, home / "copy.db")
        os.replace(home / "copy.db", path)
        preview = commands.plan_job(config, "maintenance", QUICK)
        assert _needs_backup(_statistics(preview)), _statistics(preview).reasons


def test_a_backup_the_run_took_ages_when_the_run_is_resumed_days_later(
    edit_config: Any, demo_db: Path
) -> None:
    required = {"type": "backup_required", "before_operations": ["optimize_table"]}
    config = edit_config(
        backup={"default_config": {"safety_level": "strict"}, "safety_constraints": [required]}
    )
    steps = (
        Step("step_0", "backup_database_full", {}, "Back up first"),
        Step("step_1", "optimize_table", {"table": "orders"}, "Then compact orders"),
    )
    plan = Plan("backup", "demo", "sqlite", {"type": "custom"}, steps)
    waiting = commands.apply_plan(config, plan, approver=NonInteractive())
    assert waiting.status == "waiting_approval", waiting.error
    # Its backup a moment old: the approval is asked for the strict level alone.
    assert not any("needs a verified backup" in r for r in waiting.steps[1].reasons)
    commands.decide_steps(config, waiting.run_id, "approved", step=1, reason="backed up")
    later = datetime.now(UTC) + timedelta(days=3)
    resumed = commands.resume_run(
        config, waiting.run_id, approver=NonInteractive(), clock=lambda: later
    )
    # Three days on, the run's backup is three days old: the yes given for a step
    # after a fresh backup does not cover it.
    assert resumed.status == "waiting_approval", resumed.error
    assert any(
        r.startswith("optimize_table needs a verified backup of 'demo'") and "24 h" in r
        for r in resumed.steps[1].reasons
    ), resumed.steps[1].reasons
