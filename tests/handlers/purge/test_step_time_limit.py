"""A purge held to its step's time limit (the agent's max_execution_time), which the
executor enforces only by cancelling a statement in flight: the walk ends before it, as
at its run time, the step succeeded with `complete: false`, each row it deleted archived
once. A purge that paused between batches when the limit came went on to its end, and
its step was then failed for the time limit, its rows deleted all the same.

Time bound: a 3 s limit on a purge that would take over 11 s; a few seconds."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from aishell import commands
from tests.handlers.purge.test_purge_faults import purge_on, rows_of


@pytest.mark.parametrize("dialect", ["sqlite", "mysql"])
def test_a_purge_ends_cleanly_before_its_step_time_limit(home, edit_config, dialect):
    with purge_on(dialect, "file", home, walk="keys") as purge:
        config = edit_config(log_cleanup={"default_config": {"max_execution_time": 3}})
        # Ten keys a batch and 400 ms between batches: about 28 batches, over 11 s.
        result = commands.run_job(config, "log_cleanup", purge.job(sleep_ms=400))
        step = result.steps[1]
        assert step.status == "succeeded", step.error
        output = step.output
        assert not output["complete"]
        assert output["stopped_by"] == "close to the step's time limit (max_execution_time)"
        cutoff = datetime.fromisoformat(result.steps[0].output["cutoff"])
        gone = set(purge.before) - set(rows_of(purge.url))
        assert gone and gone < {i for i, at in purge.before.items() if at < cutoff}
        archived = [json.loads(line)["id"] for line in purge.archive_file.read_text().splitlines()]
        assert sorted(archived) == sorted(gone)
        assert output["rows_deleted"] == len(gone)


# A pause between batches far longer than the run may take.
LONG_PAUSE_MS = 60_000


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_run_s_time_limit_ends_a_purge_pausing_between_batches(home, edit_config, dialect):
    """The run's limit came during an hour-long sleep_ms: the purge waited the pause out
    before it looked. It now stops within its look at the stop, checkpointed."""
    with purge_on(dialect, "file", home, walk="keys") as purge:
        config = edit_config()
        began = time.monotonic()
        result = commands.run_job(
            config, "log_cleanup", purge.job(sleep_ms=LONG_PAUSE_MS), max_run_seconds=3
        )
        took = time.monotonic() - began
        assert result.status == "interrupted", result.error
        assert "run-time limit of 3 s" in (result.error or ""), result.error
        assert took < LONG_PAUSE_MS / 1000, took
        gone = set(purge.before) - set(rows_of(purge.url))
        archived = [json.loads(line)["id"] for line in purge.archive_file.read_text().splitlines()]
        assert gone and sorted(archived) == sorted(gone)
