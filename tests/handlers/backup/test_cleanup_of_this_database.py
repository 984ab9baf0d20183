"""Retention over the backups of the database a target reaches now: its preview names
exactly what its run deletes (a quick validation decodes a server's backup and proves
it less than a restore does), it never keeps in place of a whole backup one whose
chain is broken, and a backup of another database the target's name reached before is
not its to delete; an incremental chains only from a backup of its own database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from tests.helpers import run_sql, use_target
from tests.services import scratch_server

# Retention that deletes every backup but the newest one and those it must keep.
_CLEANUP = {"cleanup": True, "retention_days": 0, "keep_last": 1}


@contextmanager
def _database(dialect: str, home: Path, name: str = "target") -> Iterator[str]:
    """A database of the dialect with tables t and u; its URL."""
    if dialect == "sqlite":
        conn = sqlite3.connect(home / f"{name}.db")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t (v) VALUES ('a'), ('b')")
        conn.commit()
        conn.close()
        yield f"sqlite:///{home / f'{name}.db'}"
        return
    with scratch_server(dialect) as url:
        run_sql(
            url,
            "CREATE TABLE t (id integer PRIMARY KEY, v text)",
            "CREATE TABLE u (id integer PRIMARY KEY, v text)",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        )
        yield url


def _take(config: Config, **job: Any) -> Any:
    done = commands.run_job(config, "backup", {"type": "full", **job}, "db")
    assert done.status == "completed", done.error
    return done


def _cleanup_step(result: Any) -> Any:
    return next(s for s in result.steps if s.tool == "cleanup_old_backups")


def _path_of(result: Any, tool: str) -> str:
    return str(next(s for s in result.steps if s.tool == tool).output["backup_path"])


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_quick_cleanup_previews_exactly_what_it_deletes(home: Path, dialect: str) -> None:
    with _database(dialect, home) as url:
        config = use_target(home, url)
        _take(config)
        verified = _path_of(_take(config), "backup_database_full")
        _take(config, verify=False)
        job = {"type": "full", "quick": True, **_CLEANUP}
        dry = commands.run_job(config, "backup", dict(job), "db", dry_run=True)
        previewed = sorted(_cleanup_step(dry).estimate["backups_to_delete"])
        done = commands.run_job(config, "backup", dict(job), "db", approver=PreApproved())
        assert done.status == "completed", done.error
        assert sorted(_cleanup_step(done).output["deleted_backups"]) == previewed
        # A quick validation decodes a server's dump, never restores it: the newest
        # backup a restore proved stays (SQLite's copy is restored, quick or not).
        assert (verified in previewed) is (dialect == "sqlite")


def test_a_backup_of_another_database_is_not_this_targets_to_delete(home: Path) -> None:
    with _database("sqlite", home, "first") as first, _database("sqlite", home, "second") as second:
        config = use_target(home, first)
        theirs = [_path_of(_take(config), "backup_database_full") for _ in range(2)]
        config = use_target(home, second)
        _take(config)
        done = commands.run_job(
            config, "backup", {"type": "full", **_CLEANUP}, "db", approver=PreApproved()
        )
        assert done.status == "completed", done.error
        output = _cleanup_step(done).output
        assert not set(theirs) & set(output["deleted_backups"]), output
        assert sorted(s["path"] for s in output["skipped"]) == sorted(theirs)
        assert all("is a backup of another database" in s["why"] for s in output["skipped"])
        assert all(Path(p).is_file() for p in theirs)
        # Nor does an incremental chain from one: the newest verified of its own is none.
        increment = commands.run_job(config, "backup", {"type": "incremental"}, "db")
        listed = {b["path"] for b in commands.list_backups(config, "db")}
        assert increment.steps[0].output["backup_path"] not in theirs
        assert increment.steps[0].output["backup_path"] in listed


def test_an_increment_whose_parent_is_gone_is_not_kept_for_the_whole_backup(
    home: Path,
) -> None:
    with _database("sqlite", home) as url:
        config = use_target(home, url)
        whole = _path_of(_take(config), "backup_database_full")
        parent = _path_of(_take(config), "backup_database_full")
        conn = sqlite3.connect(home / "target.db")
        conn.execute("INSERT INTO t (v) VALUES ('c')")
        conn.commit()
        conn.close()
        increment = commands.run_job(config, "backup", {"type": "incremental"}, "db")
        assert increment.status == "completed", increment.error
        Path(parent).unlink()  # by hand: the increment restores nothing now
        done = commands.run_job(
            config,
            "backup",
            {"type": "full", "verify": False, **_CLEANUP},
            "db",
            approver=PreApproved(),
        )
        assert done.status == "completed", done.error
        output = _cleanup_step(done).output
        assert whole not in output["deleted_backups"], output
        assert {"backup_id": _id_of(config, whole), "why": "the newest verified backup"} in (
            output["kept"]
        )
        # And the next increment chains from it, not from the broken chain.
        again = commands.run_job(config, "backup", {"type": "incremental"}, "db")
        assert again.status == "completed", again.error
        assert again.steps[0].output["backup_path"] == whole


def _id_of(config: Config, path: str) -> int:
    return next(int(b["id"]) for b in commands.list_backups(config, "db") if b["path"] == path)


def test_an_increment_refuses_a_parent_of_another_database(home: Path) -> None:
    with _database("sqlite", home, "first") as first, _database("sqlite", home, "second") as second:
        config = use_target(home, first)
        theirs = _path_of(_take(config), "backup_database_full")
        config = use_target(home, second)
        step = Step("step_0", "backup_database_incremental", {"parent": theirs}, "Chain on it")
        plan = Plan("backup", "db", "sqlite", {"type": "incremental"}, (step,))
        done = commands.apply_plan(config, plan, approver=PreApproved())
        assert done.status == "failed"
        assert "is not of the database target 'db' reaches now" in done.steps[0].error
