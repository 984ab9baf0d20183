"""Serve's take-back as it starts resumes, unattended, a run a killed serve left behind:
at whatever time serve comes back, which is no time of the schedule's. It is held to
scheduler.misfire_grace_seconds as a trigger is: a run that began longer ago than that
is marked interrupted and said in the log, not resumed; a person's `aishell resume`
goes on with it (a trigger, in time itself, still resumes what it finds).

Before, a run begun at 02:00 was resumed by a serve restarted at 14:00, hours past
any time a trigger of it could have started."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path

from aishell import commands
from aishell.scheduling import serve as scheduling
from tests.conftest import EditConfig
from tests.scheduling.test_scheduler_owns import SLOWER_PURGE, start_serve, stored_status
from tests.scheduling.test_schedules import add, due_now, scheduled_runs, wait_for

# The shortest grace the config takes with a second to spare: serve's take-back finds
# the killed run begun longer ago than that with the test hardly waiting for it.
GRACE = 2


def test_a_run_left_longer_ago_than_the_grace_is_not_resumed_unattended(
    demo_db: Path, edit_config: EditConfig, home: Path
) -> None:
    """Bound: the purge is about 20 s, cut as it runs; the test well under 90 s."""
    config = edit_config()
    add(config, "purge", "0 3 * * *", SLOWER_PURGE)
    due_now(config, "purge")
    serve = start_serve(home)
    try:
        wait_for(lambda: scheduled_runs(config, "purge"), "the scheduled run to start")
        (run,) = scheduled_runs(config, "purge")
        run_id = run["run_id"]
        began = datetime.fromisoformat(run["started_at"])
        wait_for(
            lambda: any(
                s["status"] == "running" for s in commands.show_run(config, run_id)["steps"]
            ),
            "a step to be running",
        )
    finally:
        serve.send_signal(signal.SIGKILL)  # as the OOM killer or a power cut ends it
        serve.communicate(timeout=30)
    config = edit_config({"scheduler": {"misfire_grace_seconds": GRACE}})
    time.sleep(max(0.0, GRACE + 1 - (datetime.now(UTC) - began).total_seconds()))
    assert stored_status(config, run_id) == "running"
    at_kill = commands.show_run(config, run_id)["steps"]

    serve = start_serve(home)  # no trigger is due: only the take-back runs
    try:
        wait_for(lambda: stored_status(config, run_id) == "interrupted", "it to be marked", 60)
        time.sleep(2)  # a resume, if one began, would have changed its steps by now
    finally:
        serve.send_signal(signal.SIGTERM)
        output, _ = serve.communicate(timeout=scheduling.STOP_SECONDS + 10)
    assert f"run {run_id} was left running by pid" in output, output
    taken = commands.show_run(config, run_id)
    assert taken["status"] == "interrupted", output
    assert "run_resumed" not in [e["kind"] for e in taken["events"]]
    assert [s["attempts"] for s in taken["steps"]] == [s["attempts"] for s in at_kill]
    said = f"schedule purge: run {run_id} began at"
    (line,) = [line for line in output.splitlines() if said in line]
    assert "more than scheduler.misfire_grace_seconds (2 s) ago" in line
    assert f"`aishell resume {run_id}`" in line

    # A person's resume goes on with it.
    resumed = commands.resume_run(config, run_id)
    assert resumed.status == "completed"
