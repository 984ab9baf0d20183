"""Files by what they are, not by their path: a purge's archive is a new regular file of
its own, outside aishell's folders, written again only by the run that made it; on
SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.files import KEY_LIMIT, PLAN_LIMIT
from aishell.policy.approvers import PreApproved
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from tests.handlers.backup.recorded import resealed
from tests.handlers.purge.test_log_cleanup import _purge_and_die, fill, rows_of
from tests.helpers import digest, one_step_plan, use_target

ROWS = 400
# Many small batches: a purge that is killed partway has checkpoints to resume from.
SMALL = {"batch_size": 10, "max_batch_size": 10, "max_batch_ms": 250}


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def logs(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[Config, str]]:
    """A config whose default target `db` holds an `events` table of mixed-age rows."""
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'logs.db'}"
        fill(url, rows=ROWS)
        yield use_target(home, url), url
        return
    from tests.services import scratch_mysql, scratch_postgresql

    scratch = scratch_postgresql if request.param == "postgresql" else scratch_mysql
    with scratch() as url:
        fill(url, rows=ROWS)
        yield use_target(home, url), url


def job(archive: Path | str, **extra: Any) -> dict[str, Any]:
    return {
        "table": "events",
        "date_column": "created_at",
        "retention_days": 30,
        "archive_to": f"file:{archive}",
        **SMALL,
        **extra,
    }


def one_line(text: str) -> str:
    """The one line an error is; click's own usage errors add their usage lines."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Usage:"):
        lines = [line for line in lines if line.startswith("Error:")]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# --- the path of a new archive -------------------------------------------------------


def test_a_purge_never_archives_into_the_verified_backup(logs, home):
    """The finding: a purge archived into the only verified backup and appended rows to it."""
    config, url = logs
    backup = commands.run_job(config, "backup", {"type": "full"})
    assert backup.status == "completed", backup.error
    path = Path(commands.list_backups(config)[0]["path"])
    before, rows = digest(path), rows_of(url)

    with pytest.raises(UsageError, match=r"already exists \(a regular file\)"):
        commands.run_job(config, "log_cleanup", job(path))
    # A new file beside the backup: inside backup_dir, refused before any row goes.
    beside = path.with_name("rows.jsonl")
    refused = commands.run_job(config, "log_cleanup", job(beside))
    assert refused.status == "failed"
    assert "which aishell keeps for itself" in (refused.error or "")
    assert digest(path) == before and rows_of(url) == rows and not beside.exists()


@pytest.mark.parametrize("kind", ["regular", "directory", "fifo", "device", "symlink"])
def test_an_existing_path_is_refused_when_the_purge_is_planned(logs, home, kind):
    config, url = logs
    rows = rows_of(url)
    path = home / "archive" / "events.jsonl"
    path.parent.mkdir()
    expected = {
        "regular": "a regular file",
        "directory": "a directory",
        "fifo": "a named pipe (FIFO)",
        "device": "a character device",
        "symlink": "a symbolic link",
    }[kind]
    if kind == "regular":
        path.write_text("kept\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":  # /dev/null's own numbers (we run as root)
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    else:
        path.symlink_to(home / "archive" / "not-yet.jsonl")  # dangling: would be made

    result = CliRunner().invoke(
        cli, ["run", "log-cleanup", "--table", "events", "--archive-to", f"file:{path}", "--yes"]
    )

    assert result.exit_code == 2, result.output
    line = one_line(result.output)
    assert f"archive file {path} already exists ({expected})" in line
    assert rows_of(url) == rows and commands.list_runs(config) == []
    assert not (home / "archive" / "not-yet.jsonl").exists()
    if kind == "regular":
        assert path.read_text() == "kept\n"


def test_an_archive_under_a_file_is_refused_in_one_line(logs, home):
    config, url = logs
    rows = rows_of(url)
    (home / "plain").write_text("a file, not a folder\n")
    path = home / "plain" / "sub" / "events.jsonl"
    with pytest.raises(UsageError, match=f"archive file {path}: {home / 'plain'} is not a folder"):
        commands.run_job(config, "log_cleanup", job(path))
    with pytest.raises(UsageError, match="^--archive-to: .* names a folder, not a file$"):
        commands.run_job(config, "log_cleanup", job(f"{home}/archive/.."))
    assert rows_of(url) == rows and (home / "plain").read_text() == "a file, not a folder\n"


def test_an_archive_directly_in_the_home_or_under_its_config_is_refused(logs, home):
    """The state folder (state.db, its journal, the key) and the config are aishell's own;
    a link or `..` that leads there is the same place."""
    config, url = logs
    rows = rows_of(url)
    (home / "elsewhere").mkdir()
    (home / "elsewhere" / "into-backups").symlink_to(config.backup_dir, target_is_directory=True)
    config.backup_dir.mkdir(exist_ok=True)
    with pytest.raises(UsageError, match="already exists"):
        commands.run_job(config, "log_cleanup", job(home / "state.db"))
    for path in (
        home / "events.jsonl",
        home / "archive" / ".." / "plan-signing.key.new",
        home / "config" / "events.jsonl",
        home / "elsewhere" / "into-backups" / "events.jsonl",
    ):
        result = commands.run_job(config, "log_cleanup", job(path))
        assert result.status == "failed", path
        assert "which aishell keeps for itself" in (result.error or "") or (
            "which holds aishell's state and key" in (result.error or "")
        )
        assert not os.path.lexists(path)
    assert rows_of(url) == rows


def test_a_bind_mounted_view_of_the_backup_folder_is_the_backup_folder(
    config, demo_db, tmp_path_factory
):
    """Real paths differ through a bind mount; the folder's device and inode do not."""
    config.backup_dir.mkdir(exist_ok=True)
    view = tmp_path_factory.mktemp("view")
    subprocess.run(["mount", "--bind", str(config.backup_dir), str(view)], check=True)
    try:
        path = view / "app_logs.jsonl"
        purge = {"table": "app_logs", "date_column": "created_at", "retention_days": 90}
        result = commands.run_job(
            config, "log_cleanup", {**purge, "archive_to": f"file:{path}"}, approver=PreApproved()
        )
        assert result.status == "failed"
        assert f"it is inside {config.backup_dir}" in (result.error or "")
        assert not path.exists() and not (config.backup_dir / "app_logs.jsonl").exists()
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_the_archive_is_a_new_file_only_its_owner_reads(logs, home):
    config, _url = logs
    path = home / "archive" / "deep" / "events.jsonl"
    result = commands.run_job(config, "log_cleanup", job(path))
    assert result.status == "completed", result.error
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (path.parent, path.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    gone = result.steps[1].output["rows_deleted"]
    assert gone > 0 and len(path.read_text().splitlines()) == gone
    # A second purge into the same file: refused, the first one's rows kept as they are.
    before = digest(path)
    with pytest.raises(UsageError, match="already exists"):
        commands.run_job(config, "log_cleanup", job(path))
    assert digest(path) == before


# --- the file a resumed purge goes on writing ----------------------------------------


def _killed_mid_purge(config: Config, home: Path, archive: Path) -> str:
    """A purge SIGKILLed after a few checkpoints; its run id."""
    child = multiprocessing.get_context("fork").Process(
        target=_purge_and_die, args=(home, job(archive), "before_commit", 5)
    )
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    killed = commands.list_runs(config, limit=1)[0]
    assert killed["status"] == "interrupted"
    with StateStore(config.state_url) as store:
        progress = store.get_progress(killed["run_id"], 1) or {}
    assert progress["archive_file_id"]["inode"] == archive.stat().st_ino
    return str(killed["run_id"])


def _replace(archive: Path, how: str) -> None:
    content = archive.read_bytes()
    moved = archive.with_name("moved.jsonl")
    if how == "copy":  # the same bytes in another file
        archive.rename(moved)
        archive.write_bytes(content)
    elif how == "symlink":  # a link to the very file the run made
        archive.rename(moved)
        archive.symlink_to(moved)
    elif how == "fifo":
        archive.rename(moved)
        os.mkfifo(archive)
    elif how == "shorter":
        archive.write_bytes(content[: len(content) // 2])


@pytest.mark.parametrize("how", ["copy", "symlink", "fifo", "shorter"])
def test_a_resume_writes_only_the_file_its_run_made(logs, home, how):
    config, url = logs
    archive = home / "archive" / "events.jsonl"
    run_id = _killed_mid_purge(config, home, archive)
    rows = rows_of(url)
    _replace(archive, how)

    result = commands.resume_run(config, run_id)

    said = {
        "copy": "was replaced: it is not the file this purge made",
        "symlink": "is a symbolic link",
        "fifo": "is a named pipe (FIFO), not the file this purge made",
        "shorter": "fewer than the",
    }[how]
    assert result.status == "failed" and said in (result.error or ""), result.error
    assert "\n" not in (result.error or "")
    assert rows_of(url) == rows  # not one row more went


def test_a_resume_cuts_its_own_file_back_and_goes_on(logs, home):
    config, url = logs
    before = rows_of(url)
    archive = home / "archive" / "events.jsonl"
    run_id = _killed_mid_purge(config, home, archive)
    result = commands.resume_run(config, run_id)
    assert result.status == "completed", result.error
    ids = [json.loads(line)["id"] for line in archive.read_text().splitlines()]
    gone = set(before) - set(rows_of(url))
    assert sorted(ids) == sorted(gone)  # every deleted row once, from the run's own file


# --- retention deletes only this home's backups ---------------------------------------


def _age(home: Path, backup_id: int, created_at: str) -> None:
    conn = sqlite3.connect(home / "state.db")
    conn.execute("UPDATE backups SET created_at = ? WHERE id = ?", (created_at, backup_id))
    conn.commit()
    conn.close()
    resealed(home)  # as if it had been taken then


def test_retention_deletes_only_backups_proven_by_their_manifest(logs, home, tmp_path_factory):
    """The finding: retention deleted whatever path a catalog row held (another home's
    backup, any file). Now each path must be a regular file in this home's backup folder
    whose manifest names it, its sha256 and its size."""
    config, url = logs
    for _ in range(2):
        taken = commands.run_job(config, "backup", {"type": "full", "verify": False})
        assert taken.status == "completed", taken.error
    newest, oldest = commands.list_backups(config)
    _age(home, oldest["id"], "2026-01-02T00:00:00.000+00:00")
    real = Path(oldest["path"])
    manifest = real.with_name(real.name + ".manifest.json")

    other_home = tmp_path_factory.mktemp("other-home") / "backups" / "db"
    other_home.mkdir(parents=True)
    theirs = other_home / real.name
    theirs.write_bytes(real.read_bytes())  # another home's copy, manifest and all
    (other_home / manifest.name).write_bytes(manifest.read_bytes())
    precious = tmp_path_factory.mktemp("elsewhere") / "precious.txt"
    precious.write_text("not a backup\n")
    folder = real.parent
    forged = folder / "db-full-forged.sql"
    forged.write_text("forged\n")
    forged.with_name(forged.name + ".manifest.json").write_text(
        json.dumps({**json.loads(manifest.read_text()), "file": forged.name, "sha256": "0" * 64})
    )
    link = folder / "db-full-link.sql"
    link.symlink_to(precious)
    moved_in = folder / "db-full-copied.sql"  # the backup's bytes, under another name
    moved_in.write_bytes(real.read_bytes())
    rows = {
        theirs: "not in this home's backup folder",
        precious: "not in this home's backup folder",
        forged: "its manifest does not name this backup",
        link: "it is a symbolic link, not a backup file",
        moved_in: "no readable manifest beside it",
    }
    # Recorded as a run records one: signed with the home's key.
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        for path in rows:
            store.record_backup(
                target="db",
                kind="full",
                path=str(path),
                created_at="2026-01-01T00:00:00.000+00:00",
                sha256=oldest["sha256"],
                size_bytes=oldest["size_bytes"],
            )
    before = {p: digest(p) for p in rows}
    plan = one_step_plan(
        "backup",
        "db",
        url.split(":")[0].split("+")[0],
        "cleanup_old_backups",
        {"retention_days": 0, "keep_last": 1},
    )
    preview = commands.apply_plan(config, plan, dry_run=True)
    assert preview.steps[0].estimate["backups_to_delete"] == [str(real)]
    assert set(preview.steps[0].estimate["skipped"]) == {str(p) for p in rows}

    done = commands.apply_plan(config, plan, approver=PreApproved())

    assert done.status == "completed", done.error
    output = done.steps[0].output
    assert output["deleted_backups"] == [str(real)]
    assert not real.exists() and not manifest.exists()
    skipped = {s["path"]: s["why"] for s in output["skipped"]}
    for path, why in rows.items():
        assert why in skipped[str(path)], skipped
        assert os.path.lexists(path) and digest(path) == before[path]
    assert Path(newest["path"]).exists()
    # What was skipped stays in the catalog, to be reported again.
    listed = {b["path"] for b in commands.list_backups(config)}
    assert listed == {newest["path"], *map(str, rows)}


# --- plan and key files: written beside their target, read only when regular ----------


def aishell(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own: a read that hangs fails on the timeout."""
    return subprocess.run(
        [sys.executable, "-m", "aishell", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
        check=False,
    )


# What only a FIFO or /dev/zero does to a read or a write: wait, or never end.
HANGS = {"fifo", "zero", "link-to-fifo"}


def in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process, where nothing it opens can hang (a regular file, a
    folder, /dev/null, a sparse file, a link to a file): what `aishell` returns, with the
    traceback of whatever it raised in its stderr, as a process prints it."""
    result = CliRunner().invoke(cli, list(args))
    stderr = result.stderr
    if result.exc_info is not None and not isinstance(result.exc_info[1], SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, stderr)


def run_for(kind: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """A process for what could hang, killed at its timeout; this process for the rest."""
    return aishell if kind in HANGS else in_process


def _special(path: Path, kind: str, home: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "link-to-fifo":
        os.mkfifo(home / "pipe")
        path.symlink_to(home / "pipe")
    elif kind == "directory":
        path.mkdir()
    elif kind == "oversize":
        with path.open("wb") as handle:
            handle.truncate(PLAN_LIMIT + 1)  # sparse: large, and costs nothing


@pytest.mark.parametrize("out", ["/dev/null", "symlink", "fifo", "directory"])
def test_plan_out_replaces_only_a_regular_file(demo_db, home, out):
    """The finding: `plan --out /dev/null` as root renamed a regular file over /dev/null."""
    assert os.geteuid() == 0  # the finding needs root; the suite runs as root
    target = Path(out) if out == "/dev/null" else home / "plan.json"
    if out == "symlink":
        (home / "elsewhere.json").write_text("mine\n")
        target.symlink_to(home / "elsewhere.json")
    elif out != "/dev/null":
        _special(target, out, home)
    before = os.lstat(target)

    made = run_for(out)("plan", "maintenance", "--type", "quick", "--out", str(target))

    assert made.returncode == 2, made.stderr
    line = one_line(made.stderr)
    assert str(target) in line and ("replaces only a regular file" in line or "directory" in line)
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode, after.st_rdev) == (
        before.st_ino,
        before.st_mode,
        before.st_rdev,
    )
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".partial")]
    if out == "symlink":
        assert (home / "elsewhere.json").read_text() == "mine\n"


def test_metrics_textfile_replaces_only_a_regular_file(demo_db, home):
    written = in_process("metrics", "--textfile", "/dev/null")
    assert written.returncode == 2, written.stderr
    assert "/dev/null is a character device" in one_line(written.stderr)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    textfile = home / "aishell.prom"
    assert in_process("metrics", "--textfile", str(textfile)).returncode == 0
    assert stat.S_ISREG(os.lstat(textfile).st_mode) and "aishell" in textfile.read_text()


def test_plan_out_over_a_regular_file_writes_it_whole(demo_db, home):
    target = home / "plan.json"
    target.write_text("an older plan\n")
    made = in_process("plan", "maintenance", "--type", "quick", "--out", str(target))
    assert made.returncode == 0, made.stderr
    assert stat.S_ISREG(os.lstat(target).st_mode) and json.loads(target.read_text())["signature"]
    assert in_process("apply", str(target), "--dry-run").returncode == 0


@pytest.mark.parametrize("kind", ["fifo", "zero", "link-to-fifo", "directory", "oversize"])
def test_apply_reads_only_a_regular_plan_file_of_bounded_size(demo_db, home, kind):
    path = home / "plan.json"
    _special(path, kind, home)
    applied = run_for(kind)("apply", str(path))
    assert applied.returncode == 2, applied.stderr
    line = one_line(applied.stderr)
    assert str(path) in line
    if kind != "directory":  # click names a directory itself
        assert ("not a regular file" in line) or ("over the limit" in line)


@pytest.mark.parametrize("kind", ["fifo", "zero", "link-to-fifo", "directory", "oversize"])
def test_a_key_file_that_is_not_a_regular_file_is_refused(demo_db, home, kind):
    plan = home / "plan.json"
    made = in_process("plan", "maintenance", "--type", "quick", "--out", str(plan))
    assert made.returncode == 0, made.stderr
    key = home / "plan-signing.key"
    key.unlink()
    _special(key, kind, home)
    if kind == "oversize":
        key.write_bytes(b"0" * (KEY_LIMIT + 1))
        key.chmod(0o600)
    done = run_for(kind)("apply", str(plan))
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "Signing key" in line and str(key) in line
    rotated = run_for(kind)("plan", "rotate-key")
    if kind == "oversize":  # a damaged regular key is what rotate-key replaces
        assert rotated.returncode == 0, rotated.stderr
        assert len(key.read_bytes()) == 65
    else:  # a FIFO, a link or a folder is left where it is, refused
        assert rotated.returncode == 2, rotated.stderr
        assert str(key) in one_line(rotated.stderr)
        assert not stat.S_ISREG(os.lstat(key).st_mode)
