"""A verified backup whose file was moved, deleted or cut short by hand proves nothing:
retention keeps the newest verified backup whose file is there whole (never deleting the
others for one that is gone), the catalog shows the row's file as missing, and neither
`backups list`, the state store's newest verified backup (which `backup_required` and
the backup_stale alert read) nor the freshness count it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from aishell.state.signing import load_key
from aishell.state.store import StateStore


def _small_target(home: Path) -> None:
    """A one-table database at the demo target's path: retention reads the catalog."""
    conn = sqlite3.connect(home / "demo.db")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t (v) VALUES ('one'), ('two')")
    conn.commit()
    conn.close()


def _verified(config: Config) -> str:
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    return str(done.steps[1].output["backup_path"])


def _by_path(config: Config) -> dict[str, dict]:
    return {b["path"]: b for b in commands.list_backups(config)}


def test_retention_keeps_the_newest_verified_backup_still_on_disk(
    config: Config, home: Path, tmp_path: Path
) -> None:
    _small_target(home)
    oldest, kept, moved = _verified(config), _verified(config), _verified(config)
    Path(moved).rename(tmp_path / "moved-away.sqlite")
    job = {"type": "full", "verify": False, "cleanup": True, "retention_days": 0, "keep_last": 1}
    done = commands.run_job(config, "backup", job, approver=PreApproved())
    assert done.status == "completed", done.error
    cleanup = done.steps[-1].output
    assert cleanup["deleted_backups"] == [oldest]
    # The row whose file is gone is left, and said so; the one on disk is kept for it.
    assert [s["path"] for s in cleanup["skipped"]] == [moved]
    assert Path(kept).is_file()
    listed = _by_path(config)
    assert {"the newest verified backup"} == {
        k["why"] for k in cleanup["kept"] if k["backup_id"] == listed[kept]["id"]
    }
    assert listed[moved]["file"] == "missing" and listed[kept]["file"] == "on disk"


def test_a_verified_backup_whose_file_is_gone_or_cut_short_is_not_fresh(
    config: Config, home: Path, tmp_path: Path
) -> None:
    _small_target(home)
    first, second = _verified(config), _verified(config)
    Path(second).rename(tmp_path / "moved-away.sqlite")
    listed = _by_path(config)
    newest = commands.backup_catalog(config)["newest_restorable"]["demo"]
    assert newest["backup_id"] == listed[first]["id"]
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        found = store.newest_restorable(config, ["demo"])["demo"].created_at
    assert found == listed[first]["created_at"]
    assert listed[second]["file"] == "missing" and listed[first]["file"] == "on disk"
    # Cut short: not the backup the catalog recorded either.
    with open(first, "r+b") as handle:
        handle.truncate(100)
    assert _by_path(config)[first]["file"] == "missing"
    assert commands.backup_catalog(config)["newest_restorable"]["demo"]["backup_id"] is None
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        assert store.newest_restorable(config, ["demo"])["demo"].backup is None
