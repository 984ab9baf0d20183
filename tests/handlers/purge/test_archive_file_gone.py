"""A run's archive file removed between its runs. While its checkpoint says no batch has
archived a row into it (the run was killed before its first batch, the file empty), the
resume makes it again and archives each row once; another file put in its place is
refused in one line that says it may be removed. Once rows are in it, the resume
refuses the missing file, naming it, and deletes nothing.

Time bound: a SIGKILLed run on 600 rows and its resume, a few seconds each."""

from __future__ import annotations

import os

import pytest

from aishell import commands
from tests.handlers.purge.test_purge_faults import (
    Purge,
    StateLook,
    _kill,
    _no_process_left,  # noqa: F401
    _resume_and_check,
    aishell,
    first_batch_held,
    purge_on,
    rows_of,
)


def _killed_before_its_first_batch(purge: Purge) -> str:
    """A run SIGKILLed while its first batch waits on a lock held here, its archive file
    made and checkpointed, empty: its run id."""
    look = StateLook(purge.home)
    with first_batch_held(purge):
        proc = aishell(purge.home, *purge.cli_args())

        def file_made() -> bool:
            run_id = look.run_id()
            progress = look.progress(run_id)[0] if run_id else None
            return bool(progress and progress.get("archive_file_id"))

        look.wait(file_made, proc, "the archive file's checkpoint")
        _kill(proc)
    assert purge.archive_file.stat().st_size == 0
    return look.run_id() or ""


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_empty_archive_file_removed_before_any_batch_is_made_again(home, dialect):
    with purge_on(dialect, "file", home) as purge:
        run_id = _killed_before_its_first_batch(purge)
        purge.archive_file.unlink()
        _resume_and_check(purge, run_id)


def test_another_file_in_the_place_of_the_empty_one_is_refused_saying_it_may_go(home):
    with purge_on("sqlite", "file", home) as purge:
        run_id = _killed_before_its_first_batch(purge)
        other = purge.archive_file.with_name("other.jsonl")
        other.write_bytes(b"")  # made while the run's file still holds its inode
        os.replace(other, purge.archive_file)
        result = commands.resume_run(purge.config, run_id)
        said = result.steps[1].error or ""
        assert result.status == "failed", said
        assert f"archive file {purge.archive_file} was replaced" in said, said
        assert "remove it (no row of this purge's is in it yet) or put back" in said, said
        assert "\n" not in said
        assert rows_of(purge.url) == purge.before
        purge.archive_file.unlink()
        _resume_and_check(purge, run_id)


def test_an_archive_file_removed_once_rows_went_into_it_is_refused(home):
    with purge_on("sqlite", "file", home) as purge:
        proc = aishell(home, *purge.cli_args(sleep_ms=50))
        look = StateLook(home)

        def archived() -> bool:
            run_id = look.run_id()
            return bool(run_id and (look.progress(run_id)[0] or {}).get("batches", 0) >= 2)

        look.wait(archived, proc, "two batches")
        _kill(proc)
        run_id = look.run_id() or ""
        purge.archive_file.unlink()
        left = rows_of(purge.url)
        result = commands.resume_run(purge.config, run_id)
        said = result.steps[1].error or ""
        assert result.status == "failed", said
        assert f"archive file {purge.archive_file} is gone; put back the file" in said, said
        assert not purge.archive_file.exists()
        assert rows_of(purge.url) == left
