"""A server that stops answering in the middle of a purge's batch, its COMMIT sent: the
run's time limit (`--max-run-time`) ends the run, interrupted (exit code 4), however
long the server stays silent; `aishell resume` at the answering server then deletes,
archives and counts each old row once.

A TCP proxy the test owns keeps the second batch's COMMIT from the server and then
freezes: nothing more reaches either side, a cancel request included. The run lock's
lease would meet the frozen server too, and stop the run as a lost lock: its round trip
is put off here, so that the time limit is what ends the run. Every wait is bounded by
HANG seconds (a hang detector, never a timing assertion)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from aishell import commands
from aishell.config.models import load_config
from aishell.errors import EXIT_DENIED
from aishell.executor import stopping
from tests.handlers.purge.test_exactly_once import (
    HANG,
    SECOND_BATCH,
    assert_exactly_once,
    resumed_in_full,
    run_in_process,
    site,
)

RUN_LIMIT = 15  # the plan and first batch of a busy machine fit well within it


def _short_reads(home: Path) -> None:
    """A cancel the frozen server never answers is given up after a few seconds (a
    second was too short for a busy machine's reads before the freeze)."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"].update(read_timeout_seconds=2, connect_timeout_seconds=2)
    path.write_text(yaml.safe_dump(data))


def _run(home: Path, *args: str) -> tuple[int, str]:
    """The command through its CLI in this process (where the lease's round trip is put
    off), bounded by HANG seconds."""
    done: list[tuple[int, str]] = []
    worker = threading.Thread(target=lambda: done.append(run_in_process(home, *args)))
    worker.start()
    worker.join(HANG)
    assert done, f"the run did not end within {HANG}s"
    return done[0]


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
@pytest.mark.parametrize("archive", ["file", "table"])
def test_the_run_time_limit_ends_a_purge_whose_commit_a_frozen_server_never_answers(
    home, dialect, archive, monkeypatch
):
    monkeypatch.setattr(stopping, "LOCK_CHECK_SECONDS", 3600.0)
    with site(home, dialect, archive) as s:
        _short_reads(home)
        s.proxy.freeze_once_held(b"COMMIT", after=SECOND_BATCH, wait=HANG)
        code, out = _run(home, *s.args(), "--max-run-time", f"{RUN_LIMIT}s")
        assert s.proxy.silent.is_set(), f"the batch's COMMIT was never held: {out}"
        assert code == EXIT_DENIED, out
        (run,) = commands.list_runs(load_config(home=home), limit=1)
        run = commands.show_run(load_config(home=home), run["run_id"])
        assert run["status"] == "interrupted", run["error"]
        limit = f"interrupted by the run-time limit of {RUN_LIMIT} s (--max-run-time)"
        assert run["error"].startswith(limit), run["error"]
        resumed_in_full(s, run["run_id"])
        assert_exactly_once(s, run["run_id"])
