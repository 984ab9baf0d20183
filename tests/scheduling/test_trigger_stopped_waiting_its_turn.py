"""A trigger waiting its turn on its target (another schedule's run goes on there)
when serve stops (SIGTERM) or is killed (SIGKILL) is not lost: the scheduler had moved
its next fire time on, and the same write marked it due; so it runs when serve starts
again, within scheduler.misfire_grace_seconds of when it was due, or is reported missed
past it. The log never says a trigger finished that did not run."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from aishell.config.models import Config
from aishell.scheduling import serve as scheduling
from aishell.scheduling.nextruns import next_runs
from tests.scheduling.test_scheduler_owns import SLOWER_PURGE, notify_script, start_serve
from tests.scheduling.test_schedules import (
    SLOW_PURGE,
    add,
    due_now,
    job_store_next_run,
    scheduled_runs,
    serving,
    signed_jobs,
    wait_for,
)

QUICK = ["maintenance", "--type", "quick"]
# At least 100 s however fast the machine (its batches sleep 0.3 s each): it cannot end,
# and hand the target to the waiting trigger, before the test stops serve.
HELD_PURGE = [*SLOW_PURGE[:-1], "300"]


def far_cron() -> str:
    """A daily time twelve hours away: no trigger of its own while the test runs."""
    return f"0 {(datetime.now(UTC).hour + 12) % 24} * * *"


def settled(config: Config, name: str) -> bool:
    """The schedule's last run ended (not running)."""
    runs = scheduled_runs(config, name)
    return bool(runs) and runs[0]["status"] not in ("running",)


def _waiting_its_turn(config: Config) -> None:
    """`slow` runs; then `quick`, on the same target, comes due and waits for its turn
    (its trigger taken: the scheduler moved its next fire time on)."""
    wait_for(lambda: scheduled_runs(config, "slow"), "the slow run to start", 60)
    job_store_next_run(config, "quick", datetime.now(UTC) - timedelta(seconds=1))
    wait_for(lambda: next_runs(config)["quick"] > datetime.now(UTC), "quick's trigger", 30)


def test_a_trigger_waiting_its_turn_when_serve_stops_runs_when_it_starts_again(
    demo_db: Path, config: Config
) -> None:
    """Bound: the slow purge is stopped within a batch; the test under a minute."""
    add(config, "slow", far_cron(), HELD_PURGE)
    add(config, "quick", far_cron(), QUICK)
    due_now(config, "slow")
    with serving(config) as lines:
        _waiting_its_turn(config)
    assert scheduled_runs(config, "quick") == []
    assert any("quick: stopped before its run began" in line for line in lines), lines
    assert not any("quick: finished" in line for line in lines), lines
    with serving(config) as lines:
        wait_for(lambda: settled(config, "quick"), "quick's run", 60)
    (run,) = scheduled_runs(config, "quick")
    assert run["how"] == "cron" and run["status"] == "completed", lines
    # The slow trigger's run began: it is not started again (its next trigger resumes it).
    assert len(scheduled_runs(config, "slow")) == 1


def test_a_trigger_waiting_its_turn_when_serve_is_killed_runs_when_it_starts_again(
    demo_db: Path, config: Config, home: Path
) -> None:
    """Bound: the purge is about 20 s, killed midway and taken back; under 90 s."""
    add(config, "slow", far_cron(), SLOWER_PURGE)
    add(config, "quick", far_cron(), QUICK)
    due_now(config, "slow")
    serve = start_serve(home)
    try:
        _waiting_its_turn(config)
    finally:
        serve.send_signal(signal.SIGKILL)
        serve.communicate(timeout=30)
    assert scheduled_runs(config, "quick") == []
    serve = start_serve(home)
    try:
        wait_for(lambda: settled(config, "quick"), "quick's run", 90)
    finally:
        serve.send_signal(signal.SIGTERM)
        output, _ = serve.communicate(timeout=scheduling.STOP_SECONDS + 10)
    (run,) = scheduled_runs(config, "quick")
    assert run["how"] == "cron" and run["status"] == "completed", output
    # The slow run the killed serve left was taken back first, before quick's turn.
    (slow,) = scheduled_runs(config, "slow")
    assert slow["status"] == "completed" and slow["finished_at"] <= run["started_at"], output


def _due_long_ago(config: Config, name: str, hours: int) -> None:
    """The job's row as a serve that ended hours ago left it: the trigger due then, not run."""
    store = signed_jobs(config)
    store.start(BackgroundScheduler(timezone=UTC), "default")
    job = store.lookup_job(name)
    assert job is not None
    job.kwargs = {**job.kwargs, "due": datetime.now(UTC) - timedelta(hours=hours)}
    store.update_job(job)
    store.shutdown()


def test_a_trigger_stopped_before_its_run_and_past_the_grace_is_reported_missed(
    demo_db: Path, home: Path, edit_config
) -> None:
    command, received = notify_script(home)
    config = edit_config(
        {"scheduler": {"misfire_grace_seconds": 60}, "notifications": {"command": command}}
    )
    add(config, "nightly", far_cron(), QUICK)
    with serving(config):
        pass
    _due_long_ago(config, "nightly", 2)
    with serving(config) as lines:
        wait_for(lambda: any("nightly: missed its run" in line for line in lines), "missed")
        wait_for(received.exists, "the notification")
    assert scheduled_runs(config, "nightly") == []
    (message,) = [json.loads(line) for line in received.read_text().splitlines()]
    assert message["schedule"] == "nightly" and message["status"] == "missed"
    # Reported once: the next start has nothing left to report.
    with serving(config) as lines:
        pass
    assert not any("missed" in line for line in lines), lines
