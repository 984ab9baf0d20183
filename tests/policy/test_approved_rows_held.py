"""A purge runs on an approval given for the rows older than the cutoff it was shown,
and deletes no more than those (with the approvals' slack) however many rows grow old,
or are written with old dates, while it runs: past them it stops, checkpointed, and
waits for a person's yes to that very step, naming what it was approved for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.policy.approvers import NonInteractive, PreApproved
from aishell.state.store import StateStore
from tests.handlers.purge.test_log_cleanup import _database, fill, job, rows_of
from tests.helpers import use_target

ROWS = 3_000
# Each fifth row made older than the cutoff once the purge has begun: about 400 rows
# no one approved (a third of the rows are old already; 47% of the table in all, under
# the default max_share of 50%).
_AGED = {
    "sqlite": "UPDATE events SET created_at = datetime(created_at, '-40 days') WHERE id % 5 = 0",
    "postgresql": "UPDATE events SET created_at = created_at - INTERVAL '40' DAY WHERE id % 5 = 0",
    "mysql": "UPDATE events SET created_at = created_at - INTERVAL 40 DAY WHERE id % 5 = 0",
}


def _aged_after_first_batch(monkeypatch: pytest.MonkeyPatch, url: str, dialect: str) -> None:
    """Another session ages rows as soon as the purge's first batch is checkpointed."""
    original = StateStore.save_progress
    done: list[bool] = []

    def save_progress(self: StateStore, run_id: str, index: int, progress: Any) -> None:
        original(self, run_id, index, progress)
        if not done:
            done.append(True)
            engine = create_engine(url)
            with engine.begin() as conn:
                conn.execute(text(_AGED[dialect]))
            engine.dispose()

    monkeypatch.setattr(StateStore, "save_progress", save_progress)


# SQLite's rows older than the cutoff are counted; the servers' are estimated.
@pytest.mark.parametrize("dialect", ["sqlite"])
def test_rows_grown_old_while_an_approved_purge_runs_wait_for_a_yes(
    dialect: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        config = use_target(home, url)
        small = job(batch_size=20, max_batch_size=50)
        first = commands.run_job(
            config, "log_cleanup", small, approver=NonInteractive(), safety_level="strict"
        )
        assert first.status == "waiting_approval", first.error
        approved = first.steps[1].estimate["rows_this_run"]
        commands.decide_steps(config, first.run_id, "approved")
        _aged_after_first_batch(monkeypatch, url, dialect)
        resumed = commands.resume_run(config, first.run_id, approver=NonInteractive())
        monkeypatch.undo()
        purge = resumed.steps[1]
        deleted = ROWS - len(rows_of(url))
        assert resumed.status == "waiting_approval", (resumed.status, purge.error)
        assert deleted <= approved * 1.05 + 10, (deleted, approved)
        assert f"it was approved for {approved:,} rows older than the cutoff" in str(purge.error)
        assert f"aishell approve {first.run_id} --step N" in str(purge.error)
        # A yes to that very step, for the rows left as it counted them: the purge goes
        # on from its checkpoint and ends with every old row gone.
        commands.decide_steps(config, first.run_id, "approved", step=1)
        done = commands.resume_run(config, first.run_id, approver=NonInteractive())
        assert done.status == "completed", [(s.step_id, s.status, s.error) for s in done.steps]
        assert done.steps[2].output["older_rows"] == 0


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_a_yes_by_flag_covers_the_rows_it_was_given_for_and_no_more(
    dialect: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--yes` approves the purge as its question showed it; rows grown old while it
    runs are no rows the flag approved, and no flag passes the stop."""
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        config = use_target(home, url)
        _aged_after_first_batch(monkeypatch, url, dialect)
        run = commands.run_job(
            config,
            "log_cleanup",
            job(batch_size=20, max_batch_size=50),
            approver=PreApproved(),
            safety_level="strict",
        )
        monkeypatch.undo()
        purge = run.steps[1]
        assert run.status == "waiting_approval", (run.status, purge.error)
        approved = purge.estimate["rows_this_run"]
        assert ROWS - len(rows_of(url)) <= approved * 1.05 + 10
        assert purge.approval is not None and purge.approval["how"] == "--yes"
        again = commands.resume_run(config, run.run_id, approver=PreApproved())
        assert again.status == "waiting_approval", again.steps[1].error


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_yes_to_an_estimate_is_held_by_the_share_limit_alone(
    dialect: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statistics' "about" is no count: an estimate's error would stop a nightly
    purge a flag approved, so rows grown old meanwhile go, as far as max_share lets."""
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        config = use_target(home, url)
        _aged_after_first_batch(monkeypatch, url, dialect)
        run = commands.run_job(
            config,
            "log_cleanup",
            job(batch_size=20, max_batch_size=50),
            approver=PreApproved(),
            safety_level="strict",
        )
        monkeypatch.undo()
        purge = run.steps[1]
        assert purge.estimate["estimated"] is True
        assert run.status == "completed", (run.status, purge.error)
        assert ROWS - len(rows_of(url)) <= ROWS // 2
        assert run.steps[2].output["older_rows"] == 0
