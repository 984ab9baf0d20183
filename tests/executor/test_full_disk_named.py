"""A full disk anywhere aishell writes during a run names the file, the file system and
the free space, as a backup's always did, instead of "internal error": a purge's archive
file (then `aishell resume` after space is freed archives every row exactly once), a
plan file, a metrics text file.

Each disk is a tmpfs of the test's own (tests/helpers.tmpfs: a skip with the reason
where mounting is not permitted, a failure under AISHELL_REQUIRE_SERVICES=1), filled up
by the test. Time bound: each purge runs a few hundred rows in small batches, a few
seconds; each test allows 60 s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from aishell import commands
from aishell.errors import AishellError
from tests.handlers.backup.test_backup_faults import fill as fill_disk
from tests.handlers.purge.test_log_cleanup import SMALL, _database, fill, job, rows_of
from tests.helpers import one_step_plan, tmpfs, use_target

BOUND_SECONDS = 60


def _no_space(error: str, disk: Path, doing: str, path: Path) -> None:
    assert error.startswith(f"No space left on device: the file system at {disk} is full ("), error
    assert " bytes free) while " in error and f"{doing} {path}" in error, error
    assert "internal error" not in error


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_full_disk_under_the_archive_file_is_named_and_resume_archives_once(
    dialect, home, tmp_path
):
    with _database(dialect, home) as url, tmpfs(tmp_path / "small", "1m") as disk:
        fill(url)
        config = use_target(home, url)
        before = rows_of(url)
        archive = disk / "events.jsonl"
        fill_disk(disk)
        started = time.monotonic()
        result = commands.run_job(config, "log_cleanup", job(archive_to=f"file:{archive}", **SMALL))
        assert time.monotonic() - started < BOUND_SECONDS
        assert result.status == "failed"
        step = next(s for s in result.steps if s.tool == "delete_old_records")
        assert step.status == "failed"
        _no_space(step.error or "", disk, "archiving purged rows to", archive)
        assert f"`aishell resume {result.run_id}`" in (step.error or "")
        # The batch being archived never committed: every row is still there.
        assert rows_of(url) == before

        (disk / "filler").unlink()
        resumed = commands.resume_run(config, result.run_id)
        assert resumed.status == "completed", resumed.error
        after = rows_of(url)
        archived = [json.loads(line)["id"] for line in archive.read_text().splitlines()]
        gone = set(before) - set(after)
        assert gone and sorted(archived) == sorted(gone), "each deleted row archived once"


def test_a_full_disk_under_a_plan_file_is_named(home, demo_db, tmp_path):
    config = use_target(home, f"sqlite:///{demo_db}")
    plan = one_step_plan("maintenance", "db", "sqlite", "analyze_database_health", {})
    with tmpfs(tmp_path / "small", "64k") as disk:
        fill_disk(disk)
        out = disk / "plan.json"
        with pytest.raises(AishellError) as caught:
            commands.save_plan(config, plan, out)
        _no_space(str(caught.value), disk, "writing plan file", out)
        # Nothing half written is left.
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_a_full_disk_under_the_metrics_file_is_named(home, tmp_path, demo_db):
    config = use_target(home, f"sqlite:///{demo_db}")
    with tmpfs(tmp_path / "small", "64k") as disk:
        fill_disk(disk)
        out = disk / "aishell.prom"
        with pytest.raises(AishellError) as caught:
            commands.metrics(config, textfile=out)
        _no_space(str(caught.value), disk, "writing metrics file", out)
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
