"""Files by what they are, not by their path: a purge's archive is a new regular file of
its own, outside aishell's folders, written again only by the run that made it; on
SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config import Config
from aishell.errors import UsageError
from aishell.state import StateStore
from tests.helpers import digest, use_target
from tests.test_log_cleanup import _purge_and_die, fill, rows_of

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
    lines = [line for line in text.strip().splitlines() if line.strip()]
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
