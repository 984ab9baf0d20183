"""A restore and a validation trust a backup's manifest only as the catalog recorded it
when the backup was taken: only the file's bytes are hashed, so someone who may write in
the backup folder (not in state.db) could otherwise edit a manifest beside a good file
to make a restore drop a table it calls dropped, or chain onto a file of their own, and
have it pass against the edited figures."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import Prompting
from tests.handlers.backup.test_restore_prechecks import add_target


def _manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def _chain(config: Config, demo_db: Path) -> dict[str, Any]:
    """A verified full backup of the demo database, then a verified increment of it:
    the increment's catalog row."""
    assert commands.run_job(config, "backup", {"type": "full"}).status == "completed"
    conn = sqlite3.connect(demo_db)
    conn.execute("UPDATE users SET email = email || 'x' WHERE id < 5")
    conn.commit()
    conn.close()
    done = commands.run_job(config, "backup", {"type": "incremental"})
    assert done.status == "completed", done.error
    newest = commands.list_backups(config)[0]
    assert newest["kind"] == "incremental" and newest["verified_at"]
    return newest


def _edit(path: Path, **changes: Any) -> None:
    manifest = json.loads(_manifest_path(path).read_text())
    _manifest_path(path).write_text(json.dumps(manifest | changes, indent=2, sort_keys=True))


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    finally:
        conn.close()


def _restore(config: Config, home: Path, backup_id: int) -> tuple[Any, Path]:
    target = home / "restored.db"
    sqlite3.connect(target).close()
    config = add_target(home, "restored", f"sqlite:///{target}")
    done = commands.restore(config, backup_id, "restored", approver=Prompting(ask=lambda r: "yes"))
    return done, target


def test_a_manifest_edited_to_drop_a_table_is_refused(
    config: Config, demo_db: Path, home: Path
) -> None:
    newest = _chain(config, demo_db)
    path = Path(newest["path"])
    manifest = newest["manifest"]
    # The file and its sha256 untouched; the manifest now says `orders` was dropped.
    tables = {t: n for t, n in manifest["tables"].items() if t != "orders"}
    sums = {t: c for t, c in manifest["checksums"].items() if t != "orders"}
    _edit(path, dropped=["orders"], tables=tables, checksums=sums)
    done, target = _restore(config, home, newest["id"])
    assert done.status == "failed", done.status
    assert done.steps[0].error == (
        f"The manifest beside {path.name} is not the one the backup catalog recorded when "
        "it was taken (it differs in checksums, dropped, tables): it was edited since, and "
        "is not trusted; use another backup"
    )
    assert _tables(target) == set()
    drill = commands.run_job(config, "backup", {"type": "drill"})
    assert drill.status == "failed"
    assert "is not the one the backup catalog recorded" in drill.steps[1].error
    [row] = [b for b in commands.list_backups(config) if b["id"] == newest["id"]]
    assert row["verified_at"] is None


def test_a_chain_pointed_at_a_file_the_catalog_never_recorded_is_refused(
    config: Config, demo_db: Path, home: Path
) -> None:
    newest = _chain(config, demo_db)
    path = Path(newest["path"])
    parent = Path(newest["manifest"]["parent"])
    # A copy of the real parent with its manifest, outside the catalog: any file and a
    # manifest that fits it would do.
    stray = home / "elsewhere.sqlite"
    shutil.copyfile(parent, stray)
    shutil.copyfile(_manifest_path(parent), _manifest_path(stray))
    _edit(path, parent=str(stray))
    done, _target = _restore(config, home, newest["id"])
    assert done.status == "failed", done.status
    assert done.steps[0].error == (
        f"Backup {stray.name} is not in the backup catalog; aishell restores only the "
        "backups it recorded (`aishell backups list`)"
    )


def test_an_untouched_chain_of_another_target_restores(
    config: Config, demo_db: Path, home: Path
) -> None:
    newest = _chain(config, demo_db)
    done, target = _restore(config, home, newest["id"])
    assert done.status == "completed", done.error
    assert _tables(target) == {"users", "orders", "products", "app_logs"}
