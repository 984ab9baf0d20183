"""A key walk's batch in doubt is judged by a witness of its own transaction, never by the
old rows its key range holds at the resume: another session may write there meanwhile.

Made old after its commit: the run is killed after a batch committed and before the next
batch's checkpoint (the state store's lock held), and a kept row of the committed batch's
key range is made old; the resume must keep that batch (its archived rows, its count).
Made young after a lost commit: the batch's COMMIT never lands (held by a proxy on the
servers, by a reader on SQLite) and its rows are made young; the resume must undo it (cut
its archive bytes, not count it). With an archive file on MariaDB and SQLite, which keep
no word on the transaction, rows whose values are not those archived could as well be
new rows written under the keys of a batch that committed (test_batch_in_doubt_keys_
reused.py): the resume stops for a person, and cut back by hand as its line says, the
file gets the batch undone. Either way every row gone is archived once and counted.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import MetaData, create_engine, update
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import load_config
from tests.handlers.purge.test_exactly_once import (
    SECOND_BATCH,
    Site,
    held,
    point_at,
    resumed_in_full,
    sigkill,
    site,
)
from tests.handlers.purge.test_purge_faults import (
    Purge,
    StateLook,
    _commit_waits,
    _events,
    _kill,
    _no_process_left,  # noqa: F401
    aishell,
    commits_held,
    purge_on,
    rows_of,
    state_lock,
)

# Thirty keys a batch: a committed batch's key range holds kept rows to make old.
WIDE = {"batch_size": 30, "max_batch_size": 30}


def _dated(url: str, ids: list[int], at: datetime) -> None:
    """Another session gives these rows this date."""
    engine = create_engine(url)
    with engine.begin() as conn:
        events = _events(MetaData(), "events")
        conn.execute(update(events).where(events.c.id.in_(ids)).values(created_at=at))
    engine.dispose()


def _checked(
    config: Any, url: str, before: dict[int, Any], archived: list[int] | None, run_id: str
) -> set[int]:
    """The run completed; every row gone is archived once and counted; the ids gone."""
    run = commands.show_run(config, run_id)
    assert run["status"] == "completed", run["status"]
    gone = set(before) - set(rows_of(url))
    assert archived is None or sorted(archived) == sorted(gone), (
        f"gone, not archived: {sorted(gone - set(archived or ()))}; "
        f"archived, not gone: {sorted(set(archived or ()) - gone)}"
    )
    assert run["steps"][1]["output"]["rows_deleted"] == len(gone)
    return gone


# --- made old after the batch committed -----------------------------------------------------


def _killed_after_a_commit(purge: Purge) -> tuple[str, dict[str, Any]]:
    """The run killed with the batch its checkpoint holds as pending committed: with the
    store's lock held, the run commits that batch and stops at the next one's checkpoint."""
    look = StateLook(purge.home)
    # A pause between batches: the test takes the store's lock while a batch that
    # keeps rows is the pending one, however fast the engine purges (SQLite: 14 batches
    # in 70 ms).
    proc = aishell(purge.home, *purge.cli_args(**WIDE, sleep_ms=100))
    look.wait(lambda: bool(look.run_id()), proc, "a run")
    run_id = look.run_id() or ""

    def pending() -> bool:
        progress = look.progress(run_id)[0] or {}
        return progress.get("batches", 0) >= 2 and bool((progress.get("pending") or {}).get("rows"))

    while True:
        look.wait(pending, proc, "a batch that deleted rows checkpointed")
        with state_lock(purge.home):
            # The checkpoints stand still now: the pending batch is the last one's. Its
            # commit (its old rows gone), then a moment for the next batch to go as far
            # as it can (up to its checkpoint); the test asserts the commit after the kill.
            progress = look.progress(run_id)[0] or {}
            if not (progress.get("pending") or {}).get("rows") or not _kept_in(purge, progress):
                # The run checkpointed past that batch before the lock was held (a busy
                # machine), to one with no kept row in its range: the next one, then.
                continue
            doubt = _pending_rows(purge.before, progress)
            deadline = time.monotonic() + 30
            while set(doubt) & set(rows_of(purge.url)) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
            _kill(proc)
            return run_id, look.progress(run_id)[0] or {}


def _kept_in(purge: Purge, progress: dict[str, Any]) -> bool:
    """Whether the pending batch's key range holds a row the purge keeps (young)."""
    low, high = progress["last_key"], progress["pending"]["upper"]
    cutoff = datetime.fromisoformat(progress["cutoff"])
    return any(low < i <= high and at >= cutoff for i, at in purge.before.items())


def _pending_rows(before: dict[int, Any], progress: dict[str, Any]) -> list[int]:
    """The old rows of the batch the checkpoint holds as pending."""
    low, high = progress["last_key"], progress["pending"]["upper"]
    cutoff = datetime.fromisoformat(progress["cutoff"])
    return [i for i, at in before.items() if low < i <= high and at < cutoff]


@pytest.mark.parametrize(
    ("dialect", "archive"),
    [
        ("postgresql", "file"),
        ("postgresql", "table"),
        ("postgresql", None),
        ("mysql", "file"),
        ("mysql", "table"),
        ("sqlite", "file"),
        ("sqlite", "table"),
    ],
)
def test_a_committed_batch_whose_range_gets_an_old_row_keeps_its_archive_and_count(
    home: Path, dialect: str, archive: str | None
) -> None:
    walk = {"walk": "keys"} if dialect == "postgresql" else {}
    with purge_on(dialect, archive, home, **walk) as purge:
        run_id, progress = _killed_after_a_commit(purge)
        low, high = progress["last_key"], progress["pending"]["upper"]
        cutoff = datetime.fromisoformat(progress["cutoff"])
        in_range = {i: at for i, at in purge.before.items() if low < i <= high}
        left = rows_of(purge.url)
        assert not {i for i, at in in_range.items() if at < cutoff} & set(left), "not committed"
        kept = sorted(i for i in in_range if i in left)
        assert kept, "no kept row in the batch's range"
        _dated(purge.url, kept[:1], datetime.now() - timedelta(days=400))
        commands.resume_run(purge.config, run_id)
        archived = purge.archived_ids() if archive else None
        gone = _checked(purge.config, purge.url, purge.before, archived, run_id)
        old = {i for i, at in purge.before.items() if at < cutoff}
        assert old <= gone <= old | {kept[0]}


# --- made young after the batch's COMMIT was lost ------------------------------------------


@pytest.fixture
def keys_walk(home: Path) -> None:
    path = home / "config" / "agents" / "log_cleanup.yaml"
    data = yaml.safe_load(path.read_text())
    data["log_cleanup_agent"]["purge"]["walk"] = "keys"
    path.write_text(yaml.safe_dump(data))


def _made_young(url: str, before: dict[int, Any], progress: dict[str, Any]) -> list[int]:
    """The pending batch's old rows, made young by another session."""
    doubt = _pending_rows(before, progress)
    assert doubt and set(doubt) <= set(rows_of(url)), "the batch in doubt committed"
    young = datetime.now()
    _dated(url, doubt, young)
    before.update(dict.fromkeys(doubt, young))
    return doubt


@pytest.mark.parametrize("archive", ["file", "table"])
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_lost_commit_whose_rows_are_made_young_is_undone(
    home: Path, keys_walk: None, dialect: str, archive: str
) -> None:
    with site(home, dialect, archive) as s:
        proc, run_id = held(s, b"COMMIT", SECOND_BATCH, "a batch's COMMIT held")
        sigkill(proc)
        s.proxy.cut()  # the held COMMIT never lands: the server rolls the batch back
        progress = StateLook(home).progress(run_id)[0] or {}
        deadline = time.monotonic() + 30
        while not set(_pending_rows(s.before, progress)) <= set(rows_of(s.url)):
            assert time.monotonic() < deadline, "the batch was not rolled back"
            time.sleep(0.1)
        young = _made_young(s.url, s.before, progress)
        if archive == "file" and dialect == "mysql":
            point_at(s.home, s.url)
            _cut_as_told(_config(s), run_id, s.archive_file, progress)
        resumed_in_full(s, run_id)
        gone = _checked(_config(s), s.url, s.before, s.archived(), run_id)
        assert not gone & set(young)


def _cut_as_told(config: Any, run_id: str, archive: Path, progress: dict[str, Any]) -> None:
    """The resume stops, the batch's rows not as archived; a person judges that it did
    not commit and cuts the archive file back as the stop's line says."""
    commands.resume_run(config, run_id)
    error = commands.show_run(config, run_id)["steps"][1]["error"] or ""
    start = progress["pending"]["archive_from"]
    assert "with other values than archived" in error, error
    assert f"truncate -s {start} {archive}" in error, error
    os.truncate(archive, start)


def _config(s: Site) -> Any:
    return load_config(home=s.home)


@pytest.mark.parametrize("archive", ["file", "table"])
def test_a_lost_commit_on_sqlite_whose_rows_are_made_young_is_undone(
    home: Path, archive: str
) -> None:
    with purge_on("sqlite", archive, home) as purge:
        look = StateLook(home)
        database = str(make_url(purge.url).database)
        proc = None
        run_id = ""
        for _ in range(100):
            with commits_held(database) as reader:
                if proc is None:
                    proc = aishell(home, *purge.cli_args(**WIDE))
                    look.wait(lambda: bool(look.run_id()), proc, "a run")
                    run_id = look.run_id() or ""
                until = time.monotonic() + 1
                while time.monotonic() < until and not _commit_waits(purge, look, run_id, reader):
                    time.sleep(0.02)
                batches = (look.progress(run_id)[0] or {}).get("batches", 0)
                if batches >= 2 and _commit_waits(purge, look, run_id, reader):
                    _kill(proc)
                    break
        else:
            pytest.fail("no batch was caught waiting for its commit")
        progress = look.progress(run_id)[0] or {}
        young = _made_young(purge.url, purge.before, progress)
        if archive == "file":
            _cut_as_told(purge.config, run_id, purge.archive_file, progress)
        commands.resume_run(purge.config, run_id)
        gone = _checked(purge.config, purge.url, purge.before, purge.archived_ids(), run_id)
        assert not gone & set(young)
