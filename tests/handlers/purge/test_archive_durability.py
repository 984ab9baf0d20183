"""What a purge writes stays exactly as its batches' transactions say, on the real
servers: a table whose engine keeps no transactions (MariaDB's MyISAM, Aria, MEMORY) is
refused as the purged or the archive table, when the job is planned and at every start;
an unlogged PostgreSQL archive table is refused, an unlogged purged table is purged. An
archive file on a disk that fills up halfway through a batch's bytes is cut back to the
batch's start, and the resume after space is freed goes on; a file whose bytes are not
the run's, at the same inode and length, is refused.

Time bound: each purge runs a few thousand rows in small batches, a few seconds.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, text

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.errors import TargetError
from aishell.state.store import StateStore
from tests.handlers.backup.test_backup_faults import fill as fill_disk
from tests.handlers.purge.test_log_cleanup import (
    SMALL,
    _batches_done,
    _database,
    _events,
    fill,
    job,
    rows_of,
)
from tests.helpers import tmpfs, use_target

# tmpfs hands out space a page at a time.
PAGE = 4096


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))
    engine.dispose()


def _with_archive_table(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        _events(MetaData(), "events_archive").create(conn)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def logs(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[Config, str]]:
    with _database(request.param, home) as url:
        fill(url)
        yield use_target(home, url), url


@pytest.fixture
def mysql_logs(home: Path) -> Iterator[tuple[Config, str]]:
    with _database("mysql", home) as url:
        fill(url)
        yield use_target(home, url), url


@pytest.fixture
def pg_logs(home: Path) -> Iterator[tuple[Config, str]]:
    with _database("postgresql", home) as url:
        fill(url)
        yield use_target(home, url), url


def _stopped(config: Config, home: Path, job_: dict[str, Any]) -> str:
    """A purge stopped (`aishell stop`) after a few batches: resumable. Its run id."""
    done: dict[str, Any] = {}

    def purge() -> None:
        done["result"] = commands.run_job(load_config(home=home), "log_cleanup", job_)

    worker = threading.Thread(target=purge)
    worker.start()
    deadline = time.monotonic() + 60
    while _batches_done(home) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    run_id = str(commands.list_runs(config, limit=1)[0]["run_id"])
    commands.stop_run(config, run_id)
    worker.join(60)
    assert done["result"].status == "interrupted", done["result"].error
    return run_id


def _purge_step(result: Any) -> Any:
    return next(s for s in result.steps if s.tool == "delete_old_records")


# --- tables whose writes a rollback does not undo, or a crash undoes -------------------


@pytest.mark.parametrize(
    ("which", "engine"),
    [("purged", "MyISAM"), ("archive", "MyISAM"), ("archive", "Aria"), ("archive", "MEMORY")],
)
def test_a_table_whose_engine_keeps_no_transactions_is_refused_when_planned(
    mysql_logs, which, engine
):
    config, url = mysql_logs
    _with_archive_table(url)
    table = "events" if which == "purged" else "events_archive"
    _execute(url, f"ALTER TABLE {table} ENGINE={engine}")
    before = rows_of(url)

    with pytest.raises(TargetError) as refused:
        commands.run_job(config, "log_cleanup", job(archive_to="table:events_archive"))

    said = str(refused.value)
    assert f"{table} " in said and f"its engine {engine} keeps no transactions" in said, said
    assert "\n" not in said
    assert rows_of(url) == before
    assert commands.list_runs(config) == []  # refused before a run began


def test_a_purged_table_without_transactions_is_refused_without_an_archive(mysql_logs):
    """Refused before a row goes: the first batch would delete rows no rollback brings
    back."""
    config, url = mysql_logs
    _execute(url, "ALTER TABLE events ENGINE=Aria")
    before = rows_of(url)
    try:
        result = commands.run_job(config, "log_cleanup", job(**SMALL))
    except TargetError as refused:
        said = str(refused)
    else:
        assert result.status == "failed"
        said = _purge_step(result).error or ""
    assert "table events cannot be purged: its engine Aria keeps no transactions" in said
    assert "\n" not in said
    assert rows_of(url) == before


def test_an_engine_changed_while_the_purge_stopped_is_refused_on_resume(mysql_logs, home):
    config, url = mysql_logs
    _with_archive_table(url)
    run_id = _stopped(config, home, job(archive_to="table:events_archive", sleep_ms=20, **SMALL))
    _execute(url, "ALTER TABLE events_archive ENGINE=MyISAM")
    before = rows_of(url)

    result = commands.resume_run(config, run_id)

    assert result.status != "completed"
    said = _purge_step(result).error or ""
    assert "archive table events_archive cannot hold a purge's copies" in said, said
    assert rows_of(url) == before


def test_an_unlogged_archive_table_is_refused(pg_logs):
    config, url = pg_logs
    _with_archive_table(url)
    _execute(url, "ALTER TABLE events_archive SET UNLOGGED")
    before = rows_of(url)

    with pytest.raises(TargetError) as refused:
        commands.run_job(config, "log_cleanup", job(archive_to="table:events_archive"))

    said = str(refused.value)
    assert said.startswith("archive table events_archive is unlogged: a server crash"), said
    assert rows_of(url) == before


def test_an_unlogged_purged_table_is_purged(pg_logs):
    """Its rows are gone after a crash whatever the purge does: nothing of the purge's
    to keep."""
    config, url = pg_logs
    _with_archive_table(url)
    _execute(url, "ALTER TABLE events SET UNLOGGED")
    before = rows_of(url)

    result = commands.run_job(config, "log_cleanup", job(archive_to="table:events_archive"))

    assert result.status == "completed", result.error
    gone = set(before) - set(rows_of(url))
    assert gone and set(rows_of(url, "events_archive")) == gone


# --- the archive file ---------------------------------------------------------------


def _progress(home: Path, run_id: str) -> dict[str, Any]:
    with StateStore(f"sqlite:///{home / 'state.db'}") as store:
        return dict(store.get_progress(run_id, 1) or {})


def _whole_lines(data: bytes) -> list[int]:
    """The ids of the file's rows; every line is whole."""
    assert not data or data.endswith(b"\n"), f"a torn line at the end: {data[-80:]!r}"
    return [json.loads(line)["id"] for line in data.splitlines()]


def test_a_disk_full_halfway_through_a_batch_leaves_none_of_it_and_resume_goes_on(
    logs, home, tmp_path
):
    config, url = logs
    before = rows_of(url)
    with tmpfs(tmp_path / "small", "1m") as disk:
        archive = disk / "events.jsonl"
        fill_disk(disk)
        # One page free: the batch that passes it gets part of its bytes on disk.
        filler = disk / "filler"
        os.truncate(filler, filler.stat().st_size - PAGE)

        result = commands.run_job(config, "log_cleanup", job(archive_to=f"file:{archive}", **SMALL))

        assert result.status == "failed"
        assert "No space left on device" in (_purge_step(result).error or "")
        progress = _progress(home, result.run_id)
        data = archive.read_bytes()
        assert len(data) == progress["archive_offset"], "the failed batch's part is cut off"
        archived = _whole_lines(data)
        assert sorted(archived) == sorted(set(before) - set(rows_of(url)))

        filler.unlink()
        resumed = commands.resume_run(config, result.run_id)

        assert resumed.status == "completed", resumed.error
        gone = set(before) - set(rows_of(url))
        assert gone and sorted(_whole_lines(archive.read_bytes())) == sorted(gone)


def test_an_archive_file_whose_bytes_are_not_the_runs_is_refused_at_the_same_inode(home):
    """Another file at the same inode number (ext4 reuses them) and of the same length
    is told apart by the digest of the bytes the run checkpointed; here the run's own
    file is written over in place, which keeps both for certain."""
    with _database("sqlite", home) as url:
        fill(url)
        config = use_target(home, url)
        archive = home / "archive" / "events.jsonl"
        run_id = _stopped(config, home, job(archive_to=f"file:{archive}", sleep_ms=20, **SMALL))
        length = archive.stat().st_size
        inode = archive.stat().st_ino
        with archive.open("r+b") as file:
            file.write(b"Z" * length)
        assert (archive.stat().st_ino, archive.stat().st_size) == (inode, length)
        before = rows_of(url)

        result = commands.resume_run(config, run_id)

        assert result.status != "completed"
        said = _purge_step(result).error or ""
        assert f"archive file {archive} was replaced or changed" in said, said
        assert "\n" not in said
        assert rows_of(url) == before
        assert archive.read_bytes() == b"Z" * length  # every byte stays
