"""A SQLite restore says that it puts the target's AUTOINCREMENT counters (sqlite_sequence)
back as the backup has them: in its preview, its prompt and its estimate, as state it
replaces. A full backup replaces every counter, so does an increment that carries the
whole sqlite_sequence; a target without counters hears nothing of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aishell import commands
from aishell.config.models import Config
from tests.handlers.backup.test_restore_prechecks import Recorder
from tests.handlers.backup.test_sqlite_increment_schema import _sqlite_run
from tests.helpers import digest, one_step_plan, use_target

COUNTERS = "AUTOINCREMENT counters (sqlite_sequence) of notes, tickets"


def _with_counters(path: Path) -> None:
    _sqlite_run(
        path,
        "CREATE TABLE tickets (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)",
        "INSERT INTO tickets (what) VALUES ('a'), ('b')",
        "INSERT INTO notes (what) VALUES ('a')",
    )


def _take(config: Config, kind: str) -> dict[str, Any]:
    done = commands.run_job(config, "backup", {"type": kind})
    assert done.status == "completed", done.error
    newest: dict[str, Any] = commands.list_backups(config, "db")[0]
    assert newest["kind"] == kind
    return newest


def _asked(config: Config, backup: dict[str, Any]) -> Any:
    """What the restore into `db` shows the person asked, who says no."""
    recorder = Recorder(answer="no")
    done = commands.restore(config, backup["id"], "db", replace=True, approver=recorder.approver)
    assert done.status != "completed"
    [request] = recorder.asked
    return request


def test_sqlite_a_full_restore_names_the_counters_it_replaces(home: Path, demo_db: Path) -> None:
    _with_counters(demo_db)
    config = use_target(home, f"sqlite:///{demo_db}")
    backup = _take(config, "full")
    before = digest(demo_db)
    request = _asked(config, backup)
    assert COUNTERS in request.estimate["replaces_tables"]
    assert COUNTERS in request.estimate["replaces_data"]
    assert request.sql[-1].startswith("-- replaces 7 objects of 'db': ")
    assert request.sql[-1].endswith(f", {COUNTERS}")
    plan = one_step_plan(
        "backup", "db", "sqlite", "restore_backup", {"backup_path": backup["path"], "replace": True}
    )
    preview = commands.apply_plan(config, plan, dry_run=True)
    assert preview.steps[0].sql is not None and preview.steps[0].sql[-1].endswith(COUNTERS)
    assert digest(demo_db) == before


def test_sqlite_an_increment_names_every_counter_it_carries(home: Path, demo_db: Path) -> None:
    """Only notes changed, yet the chain (its full backup first) puts back tickets'
    counter too."""
    _with_counters(demo_db)
    config = use_target(home, f"sqlite:///{demo_db}")
    _take(config, "full")
    _sqlite_run(demo_db, "INSERT INTO notes (what) VALUES ('b')")
    increment = _take(config, "incremental")
    assert increment["manifest"]["changed"] == ["notes"]
    request = _asked(config, increment)
    assert COUNTERS in request.estimate["replaces_data"]
    assert request.sql[-1].endswith(COUNTERS)


def test_sqlite_a_target_without_counters_hears_nothing_of_them(
    config: Config, demo_db: Path
) -> None:
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    [backup] = commands.list_backups(config)
    recorder = Recorder(answer="no")
    commands.restore(config, backup["id"], "demo", replace=True, approver=recorder.approver)
    [request] = recorder.asked
    assert not any("sqlite_sequence" in shown for shown in request.estimate["replaces_tables"])
