"""serve's own stop (SIGTERM) while a trigger waits for the database's run lock, held
by another run, is no failure of the trigger's run: nothing is stored as failed or
notified, and the trigger runs when serve starts again (within
scheduler.misfire_grace_seconds of when it was due); a run being taken back stays
interrupted, for the next trigger to finish."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config
from aishell.targets.engines import open_target
from aishell.targets.identity import database_identity
from aishell.targets.locks import run_lock_key
from tests.scheduling.test_scheduler_owns import notify_script
from tests.scheduling.test_schedules import add, due_now, scheduled_runs, serving, wait_for
from tests.scheduling.test_trigger_stopped_waiting_its_turn import QUICK, far_cron, settled


@contextmanager
def run_lock_held(config: Config, target: str = "demo") -> Iterator[None]:
    """The target database's run lock, held as another run holds it."""
    handle = open_target(config, target)
    try:
        with handle.connect() as conn:
            identity = database_identity(conn)
        lock = handle.try_lock(run_lock_key(identity))
        assert lock is not None, "the run lock is already held"
        try:
            yield
        finally:
            lock.release()
    finally:
        handle.close()


def test_a_trigger_waiting_for_the_run_lock_when_serve_stops_runs_when_it_starts_again(
    demo_db: Path, home: Path, edit_config
) -> None:
    command, received = notify_script(home)
    config = edit_config({"notifications": {"command": command}})
    add(config, "nightly", far_cron(), QUICK)
    due_now(config, "nightly")
    with run_lock_held(config), serving(config) as lines:
        wait_for(lambda: any("waiting for the database" in line for line in lines), "the wait")
    # serve's own stop is not the run's failure: nothing stored, nothing notified.
    assert scheduled_runs(config, "nightly") == [], lines
    assert not any("failed" in line for line in lines), lines
    assert any("nightly: stopped before its run began" in line for line in lines), lines
    assert not any("nightly: finished" in line for line in lines), lines
    assert not received.exists()
    # The lock is free now; the trigger, due a moment ago, runs as serve starts.
    with serving(config) as lines:
        wait_for(lambda: settled(config, "nightly"), "the trigger's run", 60)
    (run,) = scheduled_runs(config, "nightly")
    assert run["how"] == "cron" and run["status"] == "completed", lines
    # Once run, it is not run again by the next start.
    with serving(config):
        pass
    assert len(scheduled_runs(config, "nightly")) == 1


def _left_behind(config: Config, run_id: str) -> None:
    """The run stored running by a process that is gone, as a killed serve leaves it."""
    path = make_url(config.state_url).database
    assert path is not None
    with sqlite3.connect(path) as raw:
        raw.execute(
            "UPDATE runs SET status = 'running', pid_started = '1' WHERE run_id = ?", (run_id,)
        )
    raw.close()


def test_taking_back_a_run_that_waits_for_the_run_lock_when_serve_stops_is_no_failure(
    demo_db: Path, config: Config
) -> None:
    add(config, "nightly", far_cron(), QUICK)
    first = commands.run_schedule(config, "nightly", "run-now")
    assert first is not None
    _left_behind(config, first.run_id)
    with run_lock_held(config), serving(config) as lines:
        wait_for(lambda: any("waiting for the database" in line for line in lines), "the wait")
    assert not any("failed" in line for line in lines), lines
    (left,) = scheduled_runs(config, "nightly")
    assert left["run_id"] == first.run_id and left["status"] == "interrupted"
    # The next run of the schedule finishes it first.
    again = commands.run_schedule(config, "nightly", "run-now")
    assert again is not None and again.status == "completed"
    assert commands.show_run(config, first.run_id)["status"] == "completed"
