"""Backups in a fleet: two homes (two machines' aishell) on one state store. Each backup
names the host that took it; with one backup folder shared by both homes, a backup one
home took is validated and restored by the other; a backup whose file this machine
cannot read is refused in one line naming the host that took it, its path and the
setting that shares a folder."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.errors import UsageError
from aishell.policy.approvers import Prompting
from aishell.state.signing import KEY_FILE
from tests.conftest import REPO
from tests.handlers.backup.recorded import resealed
from tests.helpers import one_step_plan

ANOTHER_HOST = "another-host.invalid"


def machine(home: Path, state: Path, backups: Path, demo: Path) -> Config:
    """A home as one machine of the fleet sets it up: the shared state store, the
    backup folder, the demo target, and `restored`, an empty database of its own."""
    if not (home / "config").exists():
        shutil.copytree(REPO / "config", home / "config")
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["state"] = {"url": f"sqlite:///{state}"}
    data["backup_dir"] = str(backups)
    data["targets"]["demo"]["url"] = f"sqlite:///{demo}"
    data["targets"]["restored"] = {"url": f"sqlite:///{home / 'restored.db'}"}
    path.write_text(yaml.safe_dump(data))
    sqlite3.connect(home / "restored.db").close()
    return load_config(home=home)


def machine_b(home: Path, demo_db: Path, tmp_path: Path, backups: Path) -> Config:
    """Machine A (the test's home) takes a backup; machine B shares its state store and
    the key that signs runs (a fleet copies it to every machine)."""
    state = tmp_path / "shared-state.db"
    first = machine(home, state, backups, demo_db)
    taken = commands.run_job(first, "backup", {"type": "full"})
    assert taken.status == "completed", taken.error
    other = tmp_path / "machine-b"
    other.mkdir()
    shutil.copy2(home / KEY_FILE, other / KEY_FILE)
    return machine(other, state, backups, demo_db)


def yes() -> Prompting:
    return Prompting(ask=lambda _request: "yes")


def test_a_shared_backup_folder_serves_every_machine(home, demo_db, tmp_path):
    second = machine_b(home, demo_db, tmp_path, tmp_path / "nfs" / "aishell-backups")
    (listed,) = commands.list_backups(second)
    assert Path(listed["path"]).is_relative_to(tmp_path / "nfs" / "aishell-backups")
    assert listed["host"] == socket.gethostname()
    assert listed["manifest"]["hostname"] == socket.gethostname()
    # Machine B proves it restorable, then restores it.
    drill = commands.run_job(second, "backup", {"type": "drill"})
    assert drill.status == "completed", drill.error
    assert drill.steps[1].output["backup_path"] == listed["path"]
    assert drill.steps[1].output["ok"]
    restored = commands.restore(second, listed["id"], "restored", approver=yes())
    assert restored.status == "completed", restored.error
    copy = sqlite3.connect(second.home / "restored.db")
    original = sqlite3.connect(demo_db)
    try:
        for table in ("users", "orders"):
            query = f"SELECT * FROM {table} ORDER BY 1"
            assert copy.execute(query).fetchall() == original.execute(query).fetchall()
    finally:
        copy.close()
        original.close()


def taken_elsewhere(config: Config, backup: dict[str, Any]) -> None:
    """As if another machine had taken the backup into a folder of its own: the catalog
    names that host, and its file is not on this machine."""
    manifest = {**backup["manifest"], "hostname": ANOTHER_HOST}
    engine = create_engine(config.state_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE backups SET manifest = :manifest WHERE id = :id"),
                {"manifest": json.dumps(manifest), "id": backup["id"]},
            )
    finally:
        engine.dispose()
    resealed(config.home, config.state_url)  # as that machine would have recorded it
    folder = Path(backup["path"]).parent
    folder.rename(folder.with_name(folder.name + "-unmounted"))


def test_a_backup_on_another_machine_is_refused_naming_its_host(
    home, demo_db, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    second = machine_b(home, demo_db, tmp_path, home / "backups")
    (backup,) = commands.list_backups(second)
    taken_elsewhere(second, backup)
    path = backup["path"]
    expected = (
        f"Backup {backup['id']} ({path}) was taken on host {ANOTHER_HOST} and cannot be read "
        f"on this host ({socket.gethostname()}); read it on {ANOTHER_HOST}, or set "
        "backup_dir in each machine's config to one folder they all mount at the same "
        "path (NFS, say)"
    )
    with pytest.raises(UsageError) as refused:
        commands.restore(second, backup["id"], "restored", approver=yes())
    assert str(refused.value) == expected
    drill = commands.run_job(second, "backup", {"type": "drill"})
    assert drill.status == "failed"
    assert drill.steps[0].error == (
        f"Target 'demo' has no backup on disk here; the newest: {expected}"
    )
    validate = one_step_plan("backup", "demo", "sqlite", "validate_backup", {"backup_path": path})
    checked = commands.apply_plan(second, validate)
    assert checked.status == "failed" and checked.steps[0].error == expected
    # The listing says where each backup was taken.
    monkeypatch.setenv("AISHELL_HOME", str(second.home))
    shown = CliRunner().invoke(cli, ["backups", "list", "--json"])
    assert shown.exit_code == 0, shown.output
    assert [row["host"] for row in json.loads(shown.output)["backups"]] == [ANOTHER_HOST]
    table = CliRunner().invoke(cli, ["backups", "list"], env={"COLUMNS": "200"})
    assert "host" in table.output and ANOTHER_HOST in table.output, table.output
