"""A quick validation (`--quick`) decodes each server backup whole and compares it with
its manifest (MariaDB: tables, rows and checksums, and the dump's last line with nothing
after it; PostgreSQL: tables and rows, a table's with those inheriting from it). What it
proves is recorded as such: a decoded backup is never marked verified, so it is never
"proven restorable", never the one retention protects in place of a restored one, and
never restored without a restore's proof. SQLite's quick validation restores its copy as
a full one does, and says so."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.handlers.backup.manifest import sha256_of
from aishell.policy.approvers import PreApproved
from tests.handlers.backup.recorded import record_as_on_disk
from tests.helpers import one_step_plan, run_sql, use_target


def _backup(config: Config, **job: Any) -> Any:
    done = commands.run_job(config, "backup", {"type": "full", **job}, approver=PreApproved())
    assert done.status == "completed", done.error
    return done


def _validate(config: Config, dialect: str, path: str, quick: bool = True) -> Any:
    plan = one_step_plan(
        "backup", "db", dialect, "validate_backup", {"backup_path": path, "quick": quick}
    )
    return commands.apply_plan(config, plan)


def _row(config: Config, path: str) -> dict[str, Any]:
    return next(b for b in commands.list_backups(config) if b["path"] == path)


def _rewrite(home: Path, path: Path, data: bytes, **manifest: Any) -> None:
    """Give a backup other bytes, and make its manifest and catalog row agree with them
    (sha256, size; and whatever else `manifest` says): only decoding it can tell."""
    path.write_bytes(data)
    sha, size = sha256_of(path), path.stat().st_size
    beside = path.with_name(path.name + ".manifest.json")
    said = json.loads(beside.read_text())
    said.update(sha256=sha, size_bytes=size, **manifest)
    beside.write_text(json.dumps(said))
    record_as_on_disk(home, path)


def _fill(url: str) -> None:
    run_sql(
        url,
        "CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(40))",
        "INSERT INTO a VALUES " + ", ".join(f"({i}, 'value {i}')" for i in range(50)),
        "CREATE TABLE b (id INTEGER PRIMARY KEY)",
        "INSERT INTO b VALUES (1), (2), (3)",
    )


def test_a_quick_mariadb_validation_compares_every_table_and_proves_no_restore(
    home: Path, mysql_url: str
) -> None:
    _fill(mysql_url)
    config = use_target(home, mysql_url)
    taken = _backup(config, quick=True)
    checked = taken.steps[2].output
    assert checked["tables_compared"] == 2 and checked["checksums_compared"] == 2
    assert checked["ok"] and checked["quick"] and checked["proof"] == "decoded"
    path = taken.steps[1].output["backup_path"]
    row = _row(config, path)
    # Decoded, not restored: never verified, nor the newest proven restorable.
    assert row["verified_at"] is None and row["proof"] == "decoded"
    assert row["verification"]["ok"] is True
    assert commands.backup_catalog(config)["newest_restorable"]["db"]["backup_id"] is None
    with pytest.raises(UsageError, match="only decoded by a quick validation"):
        commands.restore(config, row["id"], "db")


def test_a_quick_mariadb_validation_finds_what_the_dump_holds_against_its_manifest(
    home: Path, mysql_url: str
) -> None:
    _fill(mysql_url)
    config = use_target(home, mysql_url)
    path = Path(_backup(config, verify=False).steps[1].output["backup_path"])
    pristine = path.read_bytes()
    # Bytes after the dump's last line: the manifest and the catalog made to fit them.
    _rewrite(home, path, pristine + b"THIS IS NOT SQL;\n")
    checked = _validate(config, "mysql", str(path))
    assert checked.status == "failed"
    assert "goes on past the last line of its dump" in checked.steps[0].error
    # A manifest whose rows are not the file's.
    beside = path.with_name(path.name + ".manifest.json")
    tables = json.loads(beside.read_text())["tables"]
    _rewrite(home, path, pristine, tables={**tables, "a": 49})
    checked = _validate(config, "mysql", str(path))
    assert checked.status == "failed"
    assert "a: 50 rows in the backup's file, 49 expected" in checked.steps[0].error
    assert _row(config, str(path))["verified_at"] is None


def test_a_quick_postgresql_validation_counts_each_table_as_its_manifest_did(
    home: Path, pg_url: str
) -> None:
    _fill(pg_url)
    # A table's count covers the tables inheriting from it, as the manifest's did.
    run_sql(
        pg_url,
        "CREATE TABLE par (id integer)",
        "CREATE TABLE chi () INHERITS (par)",
        "INSERT INTO par VALUES (1)",
        "INSERT INTO chi VALUES (2), (3)",
    )
    config = use_target(home, pg_url)
    taken = _backup(config, quick=True)
    checked = taken.steps[2].output
    assert checked["tables_compared"] == 4
    assert checked["ok"] and checked["proof"] == "decoded", checked
    path = Path(taken.steps[1].output["backup_path"])
    beside = path.with_name(path.name + ".manifest.json")
    tables = json.loads(beside.read_text())["tables"]
    assert tables["par"] == 3
    _rewrite(home, path, path.read_bytes(), tables={**tables, "b": 4})
    checked = _validate(config, "postgresql", str(path))
    assert checked.status == "failed"
    assert "b: 3 rows in the backup's file, 4 expected" in checked.steps[0].error


def test_a_quick_sqlite_validation_restores_its_copy_and_says_so(config: Config, demo_db) -> None:
    taken = commands.run_job(config, "backup", {"type": "full", "quick": True})
    assert taken.status == "completed", taken.error
    checked = taken.steps[2].output
    assert checked["quick"] is False and checked["proof"] == "restored"
    [row] = commands.list_backups(config)
    assert row["verified_at"] and row["proof"] == "restored"


def test_retention_keeps_the_restored_backup_over_newer_decoded_ones(
    home: Path, mysql_url: str
) -> None:
    _fill(mysql_url)
    config = use_target(home, mysql_url)
    restored = _backup(config).steps[1].output["backup_path"]
    decoded = _backup(config, quick=True).steps[1].output["backup_path"]
    cleaned = _backup(config, quick=True, cleanup=True, retention_days=0, keep_last=1)
    newest = cleaned.steps[1].output["backup_path"]
    kept = {b["path"] for b in commands.list_backups(config)}
    # The newest (kept as the newest) was only decoded: the restored one stays too.
    assert kept == {restored, newest}
    assert Path(restored).is_file() and not Path(decoded).exists()
    freshness = commands.backup_catalog(config)["newest_restorable"]["db"]
    assert freshness["backup_id"] == _row(config, restored)["id"]


# mariadb-dump (and mysqldump) on PATH: the real dump, then bytes no dump ends with.
_GARBAGE_AFTER = """
import subprocess, sys
done = subprocess.run([REAL, *sys.argv[1:]], stdout=subprocess.PIPE)
sys.stdout.buffer.write(done.stdout + b"this is no SQL at all;\\n")
sys.exit(done.returncode)
"""


@pytest.fixture
def garbage_dump_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which("mariadb-dump") or shutil.which("mysqldump")
    assert real is not None
    folder = tmp_path / "garbage-bin"
    folder.mkdir()
    for name in ("mariadb-dump", "mysqldump"):
        program = folder / name
        program.write_text(f"#!{sys.executable}\nREAL = {real!r}\n{_GARBAGE_AFTER}")
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_a_dump_that_goes_on_past_its_end_is_no_backup(
    home: Path, mysql_url: str, garbage_dump_program: None
) -> None:
    _fill(mysql_url)
    config = use_target(home, mysql_url)
    done = commands.run_job(config, "backup", {"type": "full", "quick": True})
    assert done.status == "failed"
    step = done.steps[1]
    assert step.status == "failed"
    assert "'s dump goes on past its last line" in step.error, step.error
    assert commands.list_backups(config) == []


@pytest.mark.parametrize("server_url", ["postgresql", "mysql"], indirect=True)
def test_a_quick_validation_of_a_chain_takes_each_table_from_the_newest_file_holding_it(
    home: Path, server_url: str
) -> None:
    _fill(server_url)
    config = use_target(home, server_url)
    _backup(config)
    run_sql(server_url, "INSERT INTO b VALUES (4)")
    increment = _backup(config, type="incremental", quick=True)
    checked = increment.steps[2].output
    assert checked["tables_compared"] == 2 and checked["proof"] == "decoded", checked
    assert len(checked["chain"]) == 2 and checked["ok"], increment.steps[1].output
    manifest = json.loads(
        Path(increment.steps[1].output["backup_path"] + ".manifest.json").read_text()
    )
    # b from the increment, a from the full backup under it.
    assert manifest["changed"] == ["b"] and manifest["tables"] == {"a": 50, "b": 4}
