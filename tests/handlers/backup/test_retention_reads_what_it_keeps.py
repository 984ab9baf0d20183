"""Retention keeps the newest verified backup for what it proves, and deletes older ones
only once that backup is read whole and still has the sha256 the catalog recorded: a
file changed in place at the same size (a disk's error, a hand that edited it) is no
good backup, so it does not stand in for the older ones that are, and it is kept for a
person to look at rather than deleted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import Prompting
from tests.handlers.backup.recorded import resealed
from tests.helpers import one_step_plan


def _flip_a_byte(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size // 2)
        byte = handle.read(1)
        handle.seek(size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert path.stat().st_size == size


def test_a_verified_backup_changed_in_place_keeps_the_older_good_one(
    config: Config, home: Path
) -> None:
    small = sqlite3.connect(home / "demo.db")
    small.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    small.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(2000)])
    small.commit()
    small.close()
    for verify in (True, True, False):
        done = commands.run_job(config, "backup", {"type": "full", "verify": verify})
        assert done.status == "completed", done.error
    oldest, changed, newest = sorted(commands.list_backups(config), key=lambda b: b["id"])
    assert oldest["verified_at"] and changed["verified_at"] and not newest["verified_at"]
    # All three past the retention age.
    conn = sqlite3.connect(home / "state.db")
    for n, backup in enumerate((oldest, changed, newest)):
        at = f"2026-01-0{n + 1}T00:00:00.000+00:00"
        conn.execute("UPDATE backups SET created_at = ? WHERE id = ?", (at, backup["id"]))
    conn.commit()
    conn.close()
    resealed(home)  # as if they had been taken then
    _flip_a_byte(Path(changed["path"]))
    plan = one_step_plan(
        "backup", "demo", "sqlite", "cleanup_old_backups", {"retention_days": 7, "keep_last": 1}
    )
    preview = commands.apply_plan(config, plan, dry_run=True)
    estimate = preview.steps[0].estimate
    assert estimate["backups_to_delete"] == []
    assert "no longer has the sha256 the catalog recorded" in estimate["kept"][str(changed["id"])]
    assert estimate["kept"][str(oldest["id"])] == "the newest verified backup"
    done = commands.apply_plan(config, plan, approver=Prompting(ask=lambda r: "yes"))
    assert done.status == "completed", done.error
    assert done.steps[0].output["deleted_backups"] == []
    assert all(Path(b["path"]).exists() for b in (oldest, changed, newest))
