"""Validation holds a backup file to the sha256 the catalog recorded when it was taken,
as a restore does, not only to the manifest beside it: a file whose bytes and manifest
were both replaced fails the drill (and loses its verified mark) instead of being
"proven by restore" and then refused by the restore; a file the catalog never recorded
is refused."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from aishell import commands
from aishell.config.models import Config
from tests.helpers import one_step_plan


def _small_target(home: Path, rows: int) -> None:
    conn = sqlite3.connect(home / "demo.db")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("DELETE FROM t")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    conn.commit()
    conn.close()


def _backup(config: Config, verify: bool) -> Path:
    done = commands.run_job(config, "backup", {"type": "full", "verify": verify})
    assert done.status == "completed", done.error
    return Path(done.steps[1].output["backup_path"])


def _manifest(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def test_a_file_and_manifest_both_replaced_fail_the_drill(config: Config, home: Path) -> None:
    _small_target(home, 3)
    other = _backup(config, verify=False)
    _small_target(home, 5)
    good = _backup(config, verify=True)
    [row] = [b for b in commands.list_backups(config) if b["path"] == str(good)]
    assert row["verified_at"]
    # Another backup's bytes in its place, its manifest rewritten to fit them.
    shutil.copyfile(other, good)
    replaced = json.loads(_manifest(other).read_text()) | {"file": good.name}
    _manifest(good).write_text(json.dumps(replaced))
    drill = commands.run_job(config, "backup", {"type": "drill"})
    assert drill.status == "failed"
    assert drill.steps[1].output is None or not drill.steps[1].output.get("ok")
    assert "differs from the catalog's" in drill.steps[1].error, drill.steps[1].error
    [row] = [b for b in commands.list_backups(config) if b["path"] == str(good)]
    assert row["verified_at"] is None
    assert commands.backup_catalog(config)["newest_restorable"]["demo"]["backup_id"] is None


@pytest.mark.parametrize("quick", [False, True])
def test_a_file_the_catalog_never_recorded_is_refused(
    config: Config, home: Path, quick: bool
) -> None:
    _small_target(home, 3)
    taken = _backup(config, verify=False)
    stray = taken.with_name("stray.sqlite")
    shutil.copyfile(taken, stray)
    shutil.copyfile(_manifest(taken), _manifest(stray))
    plan = one_step_plan(
        "backup", "demo", "sqlite", "validate_backup", {"backup_path": str(stray), "quick": quick}
    )
    checked = commands.apply_plan(config, plan)
    assert checked.status == "failed"
    assert checked.steps[0].error == (
        f"Backup file {stray} is not in the backup catalog of target 'demo': aishell "
        "validates only the backups it recorded (`aishell backups list`)"
    )
