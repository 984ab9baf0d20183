"""A backup's catalog row is signed with the home's key as a run and a schedule are:
restore, validation, retention and an incremental's choice of parent act on the file,
checksum and manifest aishell recorded, never on what was written into the state store
since (a path pointed at another file, its sha256 or manifest to match that file, a
parent swapped), nor on a row stored without a signature. Each refuses such a row in
one line naming the backup, the field and what to do; a drill and `backup_required`
pass over it; `backups list` and `doctor` show it.

Before, anyone who could write to the state store (a fleet's shared PostgreSQL store,
whose login every machine holds) could have `aishell restore ID` load a file of theirs,
and retention keep it in place of a real backup."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import StateTampered
from aishell.policy.approvers import NonInteractive, PreApproved, Prompting
from tests.conftest import EditConfig
from tests.helpers import one_step_plan

YES = Prompting(ask=lambda _request: "yes")
AGAIN = "take a new backup (`aishell run backup --type full`)"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(
    request: pytest.FixtureRequest, edit_config: EditConfig, demo_db: Path, home: Path
) -> Iterator[Config]:
    """The demo target `db` and an empty `restored` beside it, with the state store on
    SQLite (state.db) or on a scratch PostgreSQL database, as a fleet shares one."""
    sqlite3.connect(home / "restored.db").close()
    targets = {
        "db": {"url": f"sqlite:///{demo_db}", "environment": "test"},
        "restored": {"url": f"sqlite:///{home / 'restored.db'}", "environment": "test"},
    }
    if request.param == "sqlite":
        yield edit_config({"targets": targets, "default_target": "db"})
        return
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        yield edit_config({"targets": targets, "default_target": "db", "state": {"url": url}})


def _backups(config: Config, n: int) -> list[dict[str, Any]]:
    """n full backups of `db`, each validated by a restore, oldest first."""
    for _ in range(n):
        done = commands.run_job(config, "backup", {"type": "full"}, approver=PreApproved())
        assert done.status == "completed", done.error
    return sorted(commands.list_backups(config, "db"), key=lambda b: b["id"])


def _written(config: Config, backup: dict[str, Any], column: str, value: Any) -> None:
    """A backup's column changed in the store, as anyone who can write to it could."""
    engine = create_engine(config.state_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(f"UPDATE backups SET {column} = :v WHERE id = :id"),
                {"v": value, "id": backup["id"]},
            )
    finally:
        engine.dispose()


def _stand_in(config: Config, backup: dict[str, Any]) -> Path:
    """A file of someone else's, with a manifest beside it, outside the backup folder."""
    path = config.home / "elsewhere" / "theirs.db"
    path.parent.mkdir()
    path.write_bytes(Path(backup["path"]).read_bytes())
    manifest = Path(backup["path"] + ".manifest.json")
    path.with_name(path.name + ".manifest.json").write_bytes(manifest.read_bytes())
    return path


def _change(config: Config, backup: dict[str, Any], change: str) -> str:
    """Make the change named; the line that refuses the row after it."""
    what = f"state.db: backup {backup['id']}"
    if change == "unsealed":  # as a row recorded before backups were signed
        _written(config, backup, "seal", None)
        return f"{what} carries no signature"
    if change == "path":
        _written(config, backup, "path", str(_stand_in(config, backup)))
    elif change == "sha256":
        _written(config, backup, "sha256", "0" * 64)
    elif change == "manifest":
        _written(config, backup, "manifest", json.dumps({**backup["manifest"], "tables": {}}))
    else:  # another parent: an incremental built on whatever file that names
        parent = {**backup["manifest"], "parent": str(_stand_in(config, backup))}
        _written(config, backup, "manifest", json.dumps(parent))
        change = "manifest"
    return f"{what}'s {change} does not match its signature; it was changed outside aishell"


CHANGES = ["path", "sha256", "manifest", "parent", "unsealed"]


@pytest.mark.parametrize("change", CHANGES)
def test_a_backup_row_changed_in_the_store_is_refused_by_restore_validate_and_retention(
    store_config: Config, change: str
) -> None:
    config = store_config
    older, newer = _backups(config, 2)
    said = _change(config, older, change)

    # Restore: refused before anything is planned, in one line saying what to do.
    with pytest.raises(StateTampered) as refused:
        commands.restore(config, older["id"], "restored", approver=YES)
    line = str(refused.value)
    assert line.startswith(said) and line.endswith(AGAIN) and len(line.splitlines()) == 1
    assert sqlite3.connect(config.home / "restored.db").execute(
        "SELECT count(*) FROM sqlite_master"
    ).fetchone() == (0,)

    # Validation of the file its row names now: refused.
    (now,) = [b for b in commands.list_backups(config) if b["id"] == older["id"]]
    plan = one_step_plan("backup", "db", "sqlite", "validate_backup", {"backup_path": now["path"]})
    checked = commands.apply_plan(config, plan)
    assert checked.status == "failed" and said in checked.steps[0].error

    # Retention neither deletes it nor keeps it in place of a real backup: skipped, said.
    keep = {"retention_days": 0, "keep_last": 1}
    plan = one_step_plan("backup", "db", "sqlite", "cleanup_old_backups", keep)
    cleaned = commands.apply_plan(config, plan, approver=YES)
    assert cleaned.status == "completed", cleaned.error
    output = cleaned.steps[0].output
    assert output["deleted_backups"] == []
    assert [s["backup_id"] for s in output["skipped"]] == [older["id"]]
    assert output["skipped"][0]["why"].startswith(said)
    assert [k["backup_id"] for k in output["kept"]] == [newer["id"]]
    assert Path(older["path"]).is_file()

    # The sound backup is still restored.
    done = commands.restore(config, newer["id"], "restored", approver=YES)
    assert done.status == "completed", done.error


def test_an_incremental_refuses_a_parent_changed_in_the_store(store_config: Config) -> None:
    config = store_config
    (parent,) = _backups(config, 1)
    said = _change(config, parent, "sha256")
    plan = one_step_plan(
        "backup", "db", "sqlite", "backup_database_incremental", {"parent": parent["path"]}
    )
    taken = commands.apply_plan(config, plan, approver=PreApproved())
    assert taken.status == "failed" and taken.steps[0].error.startswith(said)
    # Nor does a drill pick it to restore.
    drill = commands.run_job(config, "backup", {"type": "drill"})
    assert drill.status == "failed" and "has no backup on disk" in drill.steps[0].error


def test_backups_list_and_doctor_show_a_refused_row(
    store_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = store_config
    older, newer = _backups(config, 2)
    said = _change(config, older, "path")
    listed = {b["id"]: b for b in commands.list_backups(config)}
    assert listed[older["id"]]["seal_error"].startswith(said)
    assert listed[newer["id"]]["seal_error"] is None
    table = CliRunner().invoke(cli, ["backups", "list"], env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert "refused" in table.output and said in " ".join(table.output.split())
    problems = commands.doctor(config, targets=["db"])["problems"]
    refused = [p for p in problems if p["problem"].startswith(said)]
    assert len(refused) == 1 and "aishell run backup --type full" in refused[0]["fix"]


def test_backup_required_counts_no_backup_changed_in_the_store(
    store_config: Config, edit_config: EditConfig
) -> None:
    required = {"type": "backup_required", "before_operations": ["update_table_statistics"]}
    config = edit_config(
        maintenance={
            "default_config": {"safety_level": "permissive"},
            "safety_constraints": [required],
        }
    )
    (backup,) = _backups(config, 1)
    job = {"type": "quick", "tables": ["orders"]}
    needs = "update_table_statistics needs a verified backup of 'db'"

    def reasons() -> list[str]:
        ran = commands.run_job(config, "maintenance", job, approver=NonInteractive())
        step = next(s for s in ran.steps if s.tool == "update_table_statistics")
        return list(step.reasons)

    assert not any(r.startswith(needs) for r in reasons())
    _change(config, backup, "unsealed")
    assert any(r.startswith(needs) for r in reasons())
