"""A cleanup deletes exactly the backups its review named: a saved plan's preview and a
dry run count the backup their own run takes first, and a run whose list has grown since
it was reviewed or approved refuses before it deletes anything."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.handlers.backup.recorded import resealed
from tests.helpers import use_target
from tests.services import engine, stats_reported

# Retention that deletes every backup but the newest one.
_CLEANUP = {"type": "full", "cleanup": True, "retention_days": 0, "keep_last": 1}


def _small_target(home: Path) -> None:
    """A one-table database at the demo target's path: retention reads the catalog, not
    what the backups hold."""
    conn = sqlite3.connect(home / "demo.db")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t (v) VALUES ('one'), ('two')")
    conn.commit()
    conn.close()


def _backups(config: Config, n: int, target: str | None = None) -> list[str]:
    for _ in range(n):
        done = commands.run_job(config, "backup", {"type": "full", "verify": False}, target)
        assert done.status == "completed", done.error
    return sorted(b["path"] for b in commands.list_backups(config, target))


def _cleanup_step(result: Any) -> Any:
    return next(s for s in result.steps if s.tool == "cleanup_old_backups")


def test_a_saved_plan_names_what_its_cleanup_deletes_and_apply_deletes_that(config, home):
    _small_target(home)
    earlier = _backups(config, 3)
    saved = home / "plan.json"
    preview = commands.plan_job(config, "backup", dict(_CLEANUP), out=saved)
    cleanup = _cleanup_step(preview)
    # The run's own backup is the newest one kept: the three earlier ones go.
    assert sorted(cleanup.estimate["backups_to_delete"]) == earlier
    assert [f"-- delete {p}" for p in earlier] == sorted(cleanup.sql)
    done = commands.apply_plan(config, saved, approver=PreApproved())
    assert done.status == "completed", done.error
    assert sorted(_cleanup_step(done).output["deleted_backups"]) == earlier


def test_apply_refuses_a_cleanup_whose_list_grew_since_the_plan_was_saved(config, home):
    _small_target(home)
    earlier = _backups(config, 2)
    saved = home / "plan.json"
    commands.plan_job(config, "backup", dict(_CLEANUP), out=saved)
    # Taken after the review: the apply's retention would delete it too.
    meanwhile = sorted(set(_backups(config, 1)) - set(earlier))
    done = commands.apply_plan(config, saved, approver=PreApproved())
    assert done.status == "failed"
    cleanup = _cleanup_step(done)
    assert cleanup.status == "failed"
    assert f"would delete {meanwhile[0]}, which the saved plan did not name" in cleanup.error
    assert all(Path(p).is_file() for p in earlier + meanwhile)


def test_a_dry_run_counts_the_backup_its_run_takes_first(config, home):
    _small_target(home)
    earlier = _backups(config, 2)
    dry = commands.run_job(config, "backup", dict(_CLEANUP), dry_run=True)
    estimate = _cleanup_step(dry).estimate
    assert sorted(estimate["backups_to_delete"]) == earlier
    assert list(estimate["kept"].values()) == ["one of the newest 1"]
    done = commands.run_job(config, "backup", dict(_CLEANUP), approver=PreApproved())
    assert done.status == "completed", done.error
    assert sorted(_cleanup_step(done).output["deleted_backups"]) == earlier


def test_a_resumed_cleanup_refuses_a_backup_its_approval_did_not_name(config, home):
    _small_target(home)
    earlier = _backups(config, 1)
    waiting = commands.run_job(config, "backup", dict(_CLEANUP), non_interactive=True)
    assert waiting.status == "waiting_approval", waiting.error
    named = _cleanup_step(waiting).estimate["backups_to_delete"]
    assert named == earlier
    index = _cleanup_step(waiting).index
    commands.decide_steps(config, waiting.run_id, "approved", step=index, reason="ok")
    before = _backups(config, 0)  # with the waiting run's own
    meanwhile = sorted(set(_backups(config, 1)) - set(before))
    # Older than the run's own backup, it is no longer the newest one kept.
    state = sqlite3.connect(home / "state.db")
    state.execute(
        "UPDATE backups SET created_at = '2026-01-01T00:00:00.000+00:00' WHERE path = ?",
        (meanwhile[0],),
    )
    state.commit()
    state.close()
    resealed(home)  # as if it had been taken then
    resumed = commands.resume_run(config, waiting.run_id)
    assert resumed.status == "failed"
    assert f"would delete {meanwhile[0]}, which its approval did not name" in (
        _cleanup_step(resumed).error
    )
    assert all(Path(p).is_file() for p in before + meanwhile)


def test_a_postgresql_plan_names_what_its_cleanup_deletes(home, pg_url):
    config = use_target(home, pg_url)
    with engine(pg_url).connect() as conn:
        conn.execute(text("CREATE TABLE t (id integer PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1), (2)"))
        stats_reported(conn)  # the plan and its apply both see the two rows
    earlier = _backups(config, 2, "db")
    saved = home / "plan.json"
    preview = commands.plan_job(config, "backup", dict(_CLEANUP), "db", out=saved)
    assert sorted(_cleanup_step(preview).estimate["backups_to_delete"]) == earlier
    meanwhile = sorted(set(_backups(config, 1, "db")) - set(earlier))
    refused = commands.apply_plan(config, saved, approver=PreApproved())
    assert refused.status == "failed"
    assert "which the saved plan did not name" in _cleanup_step(refused).error
    assert all(Path(p).is_file() for p in earlier + meanwhile)
