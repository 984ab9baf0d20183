"""What the catalog's readers say of a backup is what it is: one a quick validation only
decoded shows as that (never as failed), `backups list` says whether each file is on
disk, and the fleet's figures (the view, the metrics) count only backups still in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from tests.helpers import fill_table, use_target


def _backup(config: Config, **job: Any) -> dict[str, Any]:
    done = commands.run_job(config, "backup", {"type": "full", **job}, approver=PreApproved())
    assert done.status == "completed", done.error
    path = done.steps[1].output["backup_path"]
    return next(b for b in commands.list_backups(config) if b["path"] == path)


def test_a_decoded_backup_shows_as_decoded_and_a_missing_file_as_missing(
    home: Path, pg_url: str
) -> None:
    fill_table(pg_url, "kept", 20)
    config = use_target(home, pg_url)
    decoded = _backup(config, quick=True)
    assert decoded["proof"] == "decoded" and decoded["verified_at"] is None
    runner = CliRunner()
    shown = runner.invoke(cli, ["backups", "show", str(decoded["id"])])
    assert shown.exit_code == 0, shown.output
    assert "failed validation" not in shown.output
    assert "decoded whole by a quick validation, never restored" in shown.output
    listed = runner.invoke(cli, ["backups", "list"], env={"COLUMNS": "250"})
    assert "decoded only" in listed.output and "on disk" in listed.output
    Path(decoded["path"]).unlink()
    listed = runner.invoke(cli, ["backups", "list"], env={"COLUMNS": "250"})
    assert "missing" in listed.output and "on disk" not in listed.output
    shown = runner.invoke(cli, ["backups", "show", str(decoded["id"])])
    assert "file: missing" in shown.output


def test_the_fleet_summary_counts_only_backups_still_in_place(home: Path, demo_db: Path) -> None:
    config = use_target(home, f"sqlite:///{demo_db}")
    older = _backup(config)
    newer = _backup(config)
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        assert store.newest_kept(["db"], 10) == {"db": newer["created_at"]}
        assert store.newest_restorable(config, ["db"])["db"].created_at == newer["created_at"]
    # Deleted by hand: it keeps nothing safe, and the figures say so.
    Path(newer["path"]).unlink()
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        assert store.newest_kept(["db"], 10) == {"db": older["created_at"]}
        assert store.backup_counts(["db"]) == {"db": 2}  # rows kept, in place or not
        assert store.newest_restorable(config, ["db"])["db"].created_at == older["created_at"]
    # A row deleted by retention proves nothing either, its file gone or not.
    conn = sqlite3.connect(home / "state.db")
    conn.execute("UPDATE backups SET deleted_at = created_at WHERE id = ?", (older["id"],))
    conn.commit()
    conn.close()
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        assert store.newest_kept(["db"], 10) == {}
        assert store.newest_restorable(config, ["db"])["db"].backup is None
