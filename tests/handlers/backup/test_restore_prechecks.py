"""A restore checks everything it can before anyone is asked: the archive and its chain,
the dialect, an empty target or --replace, free space and the client program; and its
prompt shows the exact commands that will run."""

from __future__ import annotations

import json
import shlex
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import inspect, text

import aishell.cli.output as cli_output
from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.handlers.backup.manifest import read_manifest, sha256_of
from aishell.handlers.backup.restore import RESTORE_MARGIN, SQLITE_HOW
from aishell.handlers.backup.swap import SCRATCH_SHOWN, how
from aishell.policy.approvers import ApprovalRequest, Prompting
from tests.handlers.backup.test_backup_lock_wait import verified_full_backup
from tests.helpers import digest, one_step_plan, tmpfs
from tests.services import engine, scratch_mysql, scratch_postgresql


class Recorder:
    """An approver that would say yes, and remembers every time it was asked."""

    def __init__(self, answer: str = "yes") -> None:
        self.asked: list[ApprovalRequest] = []
        self.answer = answer
        self.approver = Prompting(ask=self.ask)

    def ask(self, request: ApprovalRequest) -> str:
        self.asked.append(request)
        return self.answer


def sqlite_backup(config: Config) -> dict[str, Any]:
    """A verified full backup of the demo database, as the catalog lists it."""
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    [listed] = commands.list_backups(config)
    assert listed["verified_at"]
    return listed


def server_backup(config: Config, url: str) -> dict[str, Any]:
    """A verified full backup of the server target `db`, holding two small tables: taken
    without its validation, then recorded as verified (as_verified says why)."""
    with engine(url).connect() as conn:
        conn.execute(text("CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(40))"))
        conn.execute(text("CREATE TABLE b (id INTEGER PRIMARY KEY)"))
        # One executemany for the 50 rows, not 50 round trips.
        rows = [{"i": i, "v": f"value {i}"} for i in range(50)]
        conn.execute(text("INSERT INTO a VALUES (:i, :v)"), rows)
        conn.execute(text("INSERT INTO b VALUES (1)"))
    verified_full_backup(config)
    [listed] = commands.list_backups(config, "db")
    assert listed["verified_at"]
    return listed


def server_state(url: str) -> dict[str, int]:
    """Each table of a server database with its row count."""
    with engine(url).connect() as conn:
        preparer = conn.dialect.identifier_preparer
        return {
            t: conn.execute(text(f"SELECT count(*) FROM {preparer.quote(t)}")).scalar_one()
            for t in inspect(conn).get_table_names()
        }


@pytest.fixture
def other_server(server_url: str) -> Iterator[str]:
    """A second, empty database on the same server as server_url."""
    scratch = scratch_postgresql if server_url.startswith("postgresql") else scratch_mysql
    with scratch() as url:
        yield url


def assert_refused(
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
    backup_id: int,
    to: str,
    line: str,
    replace: bool = False,
) -> None:
    """The restore fails with `line`, through the API and the CLI, and nobody is asked."""
    recorder = Recorder()
    done = commands.restore(config, backup_id, to, replace=replace, approver=recorder.approver)
    assert done.status == "failed", done.status
    assert done.steps[0].status == "failed"
    assert done.steps[0].error == line
    assert done.error == line
    monkeypatch.setattr(cli_output, "make_approver", lambda *_a, **_k: recorder.approver)
    flags = ["--replace"] if replace else []
    shown = CliRunner().invoke(cli, ["restore", str(backup_id), "--to", to, *flags, "--json"])
    assert shown.exit_code == 1, shown.output
    out = json.loads(shown.stdout)
    assert out["status"] == "failed" and out["error"]["message"] == line
    assert out["error"] == {"code": "run_failed", "message": line, "exit_code": 1}
    assert "\n" not in line
    assert recorder.asked == []


def add_target(home: Path, name: str, url: str) -> Config:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"][name] = {"url": url, "environment": "test"}
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def empty_sqlite_target(home: Path, folder: Path) -> tuple[Config, Path]:
    """A new, empty SQLite file in `folder` as the target `restored`."""
    path = folder / "restored.db"
    sqlite3.connect(path).close()
    return add_target(home, "restored", f"sqlite:///{path}"), path


# --- the target already holds tables -----------------------------------------------------


def test_sqlite_restore_over_a_non_empty_target_without_replace_is_refused(
    config, demo_db, home, monkeypatch
):
    backup = sqlite_backup(config)
    before = digest(demo_db)
    line = (
        "Target 'demo' is not empty (4 tables: app_logs, orders, products, users); restore "
        "into an empty database, or pass --replace to overwrite it"
    )
    assert_refused(config, monkeypatch, backup["id"], "demo", line)
    assert digest(demo_db) == before


def test_server_restore_over_a_non_empty_target_without_replace_is_refused(
    server_config, server_url, home, monkeypatch
):
    backup = server_backup(server_config, server_url)
    with engine(server_url).connect() as conn:
        conn.execute(text("DELETE FROM a WHERE id < 10"))
    before = server_state(server_url)
    line = (
        "Target 'db' is not empty (2 tables: a, b); restore into an empty database, "
        "or pass --replace to overwrite it"
    )
    assert_refused(server_config, monkeypatch, backup["id"], "db", line)
    assert server_state(server_url) == before == {"a": 40, "b": 1}


# --- a backup of another dialect ---------------------------------------------------------


def test_a_sqlite_backup_into_a_server_target_is_refused(
    config, demo_db, home, server_url, monkeypatch
):
    backup = sqlite_backup(config)
    config = add_target(home, "copy", server_url)
    dialect = "postgresql" if server_url.startswith("postgresql") else "mysql"
    line = (
        f"Backup {Path(backup['path']).name} is a sqlite backup and target 'copy' is "
        f"{dialect}; restore it into a sqlite target"
    )
    assert_refused(config, monkeypatch, backup["id"], "copy", line)
    assert server_state(server_url) == {}


# --- the archive -------------------------------------------------------------------------


def change_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_sqlite_archive_changed_after_the_backup_is_refused(
    config, demo_db, home, tmp_path, monkeypatch
):
    backup = sqlite_backup(config)
    archive = Path(backup["path"])
    change_one_byte(archive)
    config, target = empty_sqlite_target(home, tmp_path)
    before = digest(target)
    sha = sha256_of(archive)
    line = (
        f"Backup file {archive.name} changed after it was taken: its sha256 {sha[:16]}... "
        f"differs from the manifest's {backup['sha256'][:16]}...; restore another backup"
    )
    assert_refused(config, monkeypatch, backup["id"], "restored", line)
    assert digest(target) == before


def test_an_archive_and_manifest_swapped_together_are_refused_by_the_catalog(
    config, demo_db, home, tmp_path, monkeypatch
):
    backup = sqlite_backup(config)
    archive = Path(backup["path"])
    change_one_byte(archive)
    # The manifest agrees with the changed file; the catalog in state.db still does not.
    manifest_path = archive.with_name(archive.name + ".manifest.json")
    manifest = read_manifest(archive)
    manifest["sha256"] = sha = sha256_of(archive)
    manifest_path.write_text(json.dumps(manifest))
    config, target = empty_sqlite_target(home, tmp_path)
    before = digest(target)
    line = (
        f"Backup file {archive.name} is not the one the catalog recorded: its sha256 "
        f"{sha[:16]}... differs from the catalog's {backup['sha256'][:16]}...; restore "
        "another backup"
    )
    assert_refused(config, monkeypatch, backup["id"], "restored", line)
    assert digest(target) == before


def test_a_server_archive_changed_after_the_backup_is_refused(
    server_config, server_url, other_server, home, monkeypatch
):
    backup = server_backup(server_config, server_url)
    archive = Path(backup["path"])
    change_one_byte(archive)
    config = add_target(home, "copy", other_server)
    sha = sha256_of(archive)
    line = (
        f"Backup file {archive.name} changed after it was taken: its sha256 {sha[:16]}... "
        f"differs from the manifest's {backup['sha256'][:16]}...; restore another backup"
    )
    assert_refused(config, monkeypatch, backup["id"], "copy", line)
    assert server_state(other_server) == {}


def test_a_missing_sqlite_archive_is_refused(config, demo_db, home, tmp_path, monkeypatch):
    backup = sqlite_backup(config)
    Path(backup["path"]).unlink()
    config, target = empty_sqlite_target(home, tmp_path)
    before = digest(target)
    line = (
        f"Backup file {backup['path']} does not exist; `aishell backups list` shows the "
        "backups on disk"
    )
    assert_refused(config, monkeypatch, backup["id"], "restored", line)
    assert digest(target) == before


def test_a_missing_server_archive_is_refused(
    server_config, server_url, other_server, home, monkeypatch
):
    backup = server_backup(server_config, server_url)
    Path(backup["path"]).unlink()
    config = add_target(home, "copy", other_server)
    line = (
        f"Backup file {backup['path']} does not exist; `aishell backups list` shows the "
        "backups on disk"
    )
    assert_refused(config, monkeypatch, backup["id"], "copy", line)
    assert server_state(other_server) == {}


# --- the client program ------------------------------------------------------------------


def test_a_missing_client_program_is_refused(
    server_config, server_url, other_server, home, tmp_path, monkeypatch
):
    backup = server_backup(server_config, server_url)
    config = add_target(home, "copy", other_server)
    nothing = tmp_path / "empty-bin"
    nothing.mkdir()
    monkeypatch.setenv("PATH", str(nothing))
    if server_url.startswith("postgresql"):
        line = (
            "pg_restore is not on PATH; install the PostgreSQL client tools or add their "
            "folder to PATH"
        )
    else:
        line = (
            "mariadb (or mysql) is not on PATH; install the MariaDB client tools or add "
            "their folder to PATH"
        )
    assert_refused(config, monkeypatch, backup["id"], "copy", line)
    assert server_state(other_server) == {}


# --- free space --------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: too small for any demo backup."""
    with tmpfs(tmp_path / "tiny", "1m") as mount_point:
        yield mount_point


def test_a_sqlite_restore_without_the_free_space_is_refused(
    config, demo_db, home, tiny_disk, monkeypatch
):
    backup = sqlite_backup(config)
    config, target = empty_sqlite_target(home, tiny_disk)
    before = digest(target)
    size = Path(backup["path"]).stat().st_size
    needed = int(size * RESTORE_MARGIN)
    free = shutil.disk_usage(tiny_disk).free
    assert free < needed
    line = (
        f"Not enough free space in {tiny_disk} for the restore: {needed:,} bytes needed "
        f"(the backup's {size:,} and a 20% margin), {free:,} free; free space there and retry"
    )
    assert_refused(config, monkeypatch, backup["id"], "restored", line)
    assert digest(target) == before
    assert shutil.disk_usage(tiny_disk).free == free


# --- what passes the prechecks -----------------------------------------------------------


def test_without_a_terminal_a_restore_that_passes_its_prechecks_waits(
    config, demo_db, home, tmp_path
):
    backup = sqlite_backup(config)
    config, target = empty_sqlite_target(home, tmp_path)
    before = digest(target)
    waiting = CliRunner().invoke(cli, ["restore", str(backup["id"]), "--to", "restored"])
    assert waiting.exit_code == 3, waiting.output
    assert "aishell approve" in waiting.output
    assert digest(target) == before


def test_the_sqlite_prompt_names_the_copy_and_the_tables_it_replaces(config, demo_db, home):
    backup = sqlite_backup(config)
    before = digest(demo_db)
    recorder = Recorder(answer="no")
    done = commands.restore(config, backup["id"], "demo", replace=True, approver=recorder.approver)
    assert done.status != "completed"
    [request] = recorder.asked
    assert request.sql == [
        f"-- {SQLITE_HOW}",
        f"-- SQLite backup API: copy {backup['path']} into {demo_db.resolve()}",
        "-- replaces 4 objects of 'demo': table app_logs, table orders, table products, "
        "table users",
    ]
    estimate = request.estimate
    tables = ["table app_logs", "table orders", "table products", "table users"]
    assert estimate["replaces_tables"] == estimate["replaces_data"] == tables
    assert estimate["commands"] == [
        f"SQLite backup API: copy {backup['path']} into {demo_db.resolve()}"
    ]
    assert estimate["backup"]["sha256_ok"] and estimate["backup"]["sha256"] == backup["sha256"]
    assert estimate["backup"]["tables"] == backup["manifest"]["tables"]
    assert estimate["disk"]["needed_bytes"] == int(
        Path(backup["path"]).stat().st_size * RESTORE_MARGIN
    )
    assert estimate["disk"]["free_bytes"] >= estimate["disk"]["needed_bytes"]
    assert digest(demo_db) == before


def test_the_prompt_and_preview_show_the_exact_command_without_the_password(
    server_config, server_url, other_server, home
):
    backup = server_backup(server_config, server_url)
    archive = backup["path"]
    database = other_server.rsplit("/", 1)[1]
    dialect = "postgresql" if server_url.startswith("postgresql") else "mysql"
    if dialect == "postgresql":
        # Trust authentication lets this password through; only the display is checked.
        target_url = other_server.replace("postgres@", "postgres:secret@")
        command = (
            "pg_restore --no-owner --exit-on-error --single-transaction "
            f"-d {database} -h 127.0.0.1 -p 5432 -U postgres {shlex.quote(archive)}"
        )
    else:
        # Loaded into a scratch database, then swapped in (swap.py).
        target_url = other_server
        command = (
            f"mariadb -h 127.0.0.1 -P 3306 --protocol=TCP -u root {SCRATCH_SHOWN} "
            f"< {shlex.quote(archive)}"
        )
    config = add_target(home, "copy", target_url)
    recorder = Recorder(answer="no")
    done = commands.restore(config, backup["id"], "copy", approver=recorder.approver)
    assert done.status != "completed"
    [request] = recorder.asked
    if dialect == "postgresql":
        expected = [f"-- {request.estimate['how']}", f"-- {command}"]
    else:
        swapped = [line for line in request.sql if line.startswith("-- RENAME TABLE ")]
        assert swapped and swapped[0].startswith(f"-- RENAME TABLE `{database}`.`t` TO ")
        expected = [f"-- {how(None)}", f"-- {command}", "SET SESSION lock_wait_timeout = 60"]
        expected += swapped
    expected.append("-- replaces nothing in 'copy'")
    assert request.sql == expected
    assert request.estimate["commands"][0] == command
    assert request.estimate["replaces_tables"] == []
    assert request.estimate["disk"].startswith("not checked: ")
    preview = commands.apply_plan(
        config,
        one_step_plan("backup", "copy", dialect, "restore_backup", {"backup_path": archive}),
        dry_run=True,
    )
    assert preview.steps[0].sql == expected, preview.steps[0].error
    shown = json.dumps([request.sql, request.estimate, request.params, preview.to_dict()])
    assert "secret" not in shown
    assert "pg_restore / mariadb / SQLite backup API" not in shown
    assert server_state(other_server) == {}
