"""What a backup does as its dump streams, and at its end: the sha256 taken on the way is
the file's, the rows of a PostgreSQL dump are counted in its snapshot meanwhile (and that
count is cancelled when the dump fails), a dump that fails midway leaves no file and no
record, and a finished file and its manifest are on disk, renamed, before the run says
so."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from aishell import commands
from aishell.errors import StepInterrupted
from aishell.handlers.backup import dumps, snapcounts
from tests.helpers import use_target
from tests.services import engine


def test_a_server_backup_s_streamed_sha256_is_the_sha256_of_its_file(server_config):
    with engine(server_config.main.targets["db"].url).connect() as conn:
        conn.execute(text("CREATE TABLE streamed (id INTEGER PRIMARY KEY, v VARCHAR(60))"))
        for start in range(0, 3000, 500):
            values = ", ".join(
                f"({i}, 'row {i} of the streamed table')" for i in range(start, start + 500)
            )
            conn.execute(text(f"INSERT INTO streamed VALUES {values}"))
        conn.commit()
    result = commands.run_job(server_config, "backup", {"type": "full", "verify": False})
    assert result.status == "completed", result.error
    output = result.steps[1].output
    path = Path(output["backup_path"])
    data = path.read_bytes()
    manifest = json.loads(Path(f"{path}.manifest.json").read_text())
    assert output["sha256"] == manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["tables"] == {"streamed": 3000}
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


@contextmanager
def count_held_back(pg_url: str) -> Iterator[tuple[Connection, dict, int]]:
    """A snapshot's session whose count of a table waits behind another session's lock:
    the session, its tables' trees and its backend's pid."""
    with engine(pg_url).connect() as setup:
        setup.execute(text("CREATE TABLE held (id integer)"))
    # In transactions, as the snapshot's session is.
    holder = create_engine(pg_url).connect()
    snap = create_engine(pg_url).connect()
    try:
        holder.begin()
        holder.execute(text("LOCK TABLE held IN ACCESS EXCLUSIVE MODE"))
        snap.begin()
        pid = snap.execute(text("SELECT pg_backend_pid()")).scalar_one()
        yield snap, snapcounts.table_trees(snap), pid
    finally:
        holder.rollback()
        holder.close()
        snap.close()


def wait_until_it_waits(pg_url: str, pid: int) -> None:
    with engine(pg_url).connect() as look:
        while not look.execute(
            text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :p"),
            {"p": pid},
        ).scalar_one():
            look.execute(text("SELECT pg_sleep(0.05)"))


def waits_for_a_lock(pg_url: str, pid: int) -> bool:
    with engine(pg_url).connect() as look:
        return (
            look.execute(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
            ).scalar_one()
            == "Lock"
        )


def counters_left() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "aishell-row-counts"]


def test_a_count_in_the_snapshot_is_cancelled_when_the_dump_fails(pg_url):
    ctx = SimpleNamespace(should_stop=lambda: False, deadline=None)
    with count_held_back(pg_url) as (snap, trees, pid):
        with (
            pytest.raises(RuntimeError, match="the dump failed"),
            snapcounts.counting(snap, trees, {}, ctx),
        ):
            wait_until_it_waits(pg_url, pid)  # no lock_timeout here: it would wait on
            raise RuntimeError("the dump failed")
        assert counters_left() == []
        snap.rollback()
        assert not waits_for_a_lock(pg_url, pid)


def test_a_count_still_going_after_the_dump_stops_with_the_run(pg_url):
    stop = threading.Event()
    ctx = SimpleNamespace(should_stop=stop.is_set, deadline=None)
    with count_held_back(pg_url) as (snap, trees, pid):
        stopped = pytest.raises(StepInterrupted, match="the run was asked to stop")
        with stopped, snapcounts.counting(snap, trees, {}, ctx):
            wait_until_it_waits(pg_url, pid)
            stop.set()  # the dump is done; the count is not
        assert counters_left() == []
        snap.rollback()
        assert not waits_for_a_lock(pg_url, pid)


def test_a_postgresql_dump_that_fails_leaves_no_file_and_no_record(home, pg_url, monkeypatch):
    config = use_target(home, pg_url)
    with engine(pg_url).connect() as conn:
        conn.execute(text("CREATE TABLE t (id integer)"))
        conn.execute(text("INSERT INTO t SELECT generate_series(1, 1000)"))
        conn.commit()
    real = dumps._pg_dump

    def failing(partial, _snapshot, *args):
        # pg_dump refuses a snapshot no session exported, while the rows are counted.
        return real(partial, "00000000-0000000F-1", *args)

    monkeypatch.setattr(dumps, "_pg_dump", failing)
    result = commands.run_job(config, "backup", {"type": "full", "verify": False})
    assert result.status == "failed" and "pg_dump failed" in (result.steps[1].error or "")
    folder = config.backup_dir / "db"
    assert not folder.exists() or list(folder.iterdir()) == []
    assert commands.list_backups(config) == []
    assert not any(t.name == "aishell-row-counts" for t in threading.enumerate())


def test_a_finished_file_is_synced_renamed_and_its_folder_synced_before_the_run_ends(
    config, demo_db, monkeypatch
):
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_replace(source, destination, **kwargs) -> None:
        events.append(("rename", str(destination)))
        replace(source, destination, **kwargs)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    result = commands.run_job(config, "backup", {"type": "full", "verify": False})
    monkeypatch.undo()
    assert result.status == "completed", result.error
    path = Path(result.steps[1].output["backup_path"])
    for final in (path, Path(f"{path}.manifest.json")):
        renamed = events.index(("rename", str(final)))
        assert events[renamed - 1] == ("fsync", f"{final}.partial")
        assert events[renamed + 1] == ("fsync", str(final.parent))
