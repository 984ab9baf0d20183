"""The scheduler owns its runs: a run left running by a serve that was killed is taken
back (marked interrupted, resumed) before new work; a trigger that cannot start is a
failed run that the notifiers hear of; schedules on one database run in turn; a notify
command ends with its children; and serve stops within its bound on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config
from aishell.scheduling import notify
from aishell.scheduling import serve as scheduling
from aishell.scheduling.leadership import LEASE
from aishell.state.store import StateStore
from tests.helpers import closed_port, logged, query, use_target
from tests.scheduling.test_schedules import (
    SLOW_PURGE,
    add,
    due_now,
    job_store_next_run,
    scheduled_runs,
    serving,
    wait_for,
)

SLOWER_PURGE = [*SLOW_PURGE[:-1], "60"]  # about 20 s on the small demo


def notify_script(folder: Path) -> tuple[str, Path]:
    """A notify command that appends what it is sent to a file, one JSON per line."""
    received = folder / "notified.jsonl"
    script = folder / "notify.py"
    script.write_text(
        "import sys\n"
        f"with open({str(received)!r}, 'a') as out:\n"
        "    out.write(sys.stdin.read().strip() + '\\n')\n"
    )
    return f"{sys.executable} {script}", received


def start_serve(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aishell", "schedule", "serve"],
        env={**os.environ, "AISHELL_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stored_status(config: Config, run_id: str) -> str:
    """The status as stored, not as shown (a shown run whose process is gone is
    interrupted whatever its row says)."""
    path = make_url(config.state_url).database
    assert path is not None
    ((status,),) = query(Path(path), "SELECT status FROM runs WHERE run_id = ?", run_id)
    return str(status)


def test_a_run_left_by_a_killed_serve_is_taken_back_before_new_work(demo_db, config, home):
    """Bound: the purge is about 20 s; the whole test well under 90 s."""
    add(config, "purge", "0 3 * * *", SLOWER_PURGE)
    (before,) = query(demo_db, "SELECT count(*) FROM app_logs")[0]
    due_now(config, "purge")
    serve = start_serve(home)
    wait_for(lambda: scheduled_runs(config, "purge"), "the scheduled run to start")
    (run,) = scheduled_runs(config, "purge")
    run_id = run["run_id"]

    def purging() -> bool:
        steps = commands.show_run(config, run_id)["steps"]
        return any(s["status"] == "running" and s["index"] > 0 for s in steps)

    wait_for(purging, "a step after the first to be running")
    time.sleep(1)
    serve.send_signal(signal.SIGKILL)
    serve.communicate(timeout=30)
    at_kill = {s["index"]: s["status"] for s in commands.show_run(config, run_id)["steps"]}
    assert stored_status(config, run_id) == "running"  # what the killed serve left
    # The schedule is due again when serve comes back: the left run goes first.
    job_store_next_run(config, "purge", datetime.now(UTC) - timedelta(seconds=1))
    serve = start_serve(home)
    try:
        wait_for(lambda: len(scheduled_runs(config, "purge")) == 2, "the new run", 90)
        wait_for(lambda: scheduled_runs(config, "purge")[0]["status"] != "running", "it", 60)
    finally:
        serve.send_signal(signal.SIGTERM)
        output, _ = serve.communicate(timeout=scheduling.STOP_SECONDS + 10)
    assert f"run {run_id} was left running by pid" in output, output
    # The resumed run's outcome is logged, and the take-back's job by the schedule's name.
    assert f"schedule purge: run {run_id} completed" in output, output
    assert "recover:" not in output, output
    taken = commands.show_run(config, run_id)
    assert taken["status"] == "completed", output
    kinds = [e["kind"] for e in taken["events"]]
    assert kinds.index("run_interrupted") < kinds.index("run_resumed")
    for step in taken["steps"]:
        assert step["status"] in ("succeeded", "skipped"), step
        # Nothing done before the kill was done again; the step cut short went on from
        # its checkpoint, as the same attempt.
        assert step["attempts"] == (1 if step["status"] == "succeeded" else 0), step
    assert "running" in at_kill.values()
    purge = taken["steps"][1]["output"]
    assert purge["resumed"] and purge["complete"], purge
    # Every row deleted is counted once, across the kill.
    (left,) = query(demo_db, "SELECT count(*) FROM app_logs")[0]
    assert purge["rows_deleted"] == before - left > 0, purge
    (old,) = query(demo_db, "SELECT count(*) FROM app_logs WHERE created_at < ?", purge["cutoff"])[
        0
    ]
    assert old == 0
    newest = scheduled_runs(config, "purge")[0]
    assert newest["run_id"] != run_id and newest["started_at"] >= taken["finished_at"]


def test_a_trigger_that_cannot_reach_its_target_is_a_failed_run_notified(
    demo_db, home, edit_config
):
    """Bound: a refused connection is immediate; the test takes a few seconds."""
    use_target(home, f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test")
    command, received = notify_script(home)
    config = edit_config({"notifications": {"command": command}})
    add(config, "nightly", "0 2 * * *", ["maintenance", "--type", "quick", "--target", "db"])
    due_now(config, "nightly")
    with serving(config) as lines:
        wait_for(lambda: any("failed before it started" in line for line in lines), "the trigger")
        wait_for(received.exists, "the notification")
    (run,) = scheduled_runs(config, "nightly")
    assert run["status"] == "failed" and run["how"] == "cron"
    stored = commands.show_run(config, run["run_id"])
    assert stored["error"] and "\n" not in stored["error"] and "127.0.0.1" in stored["error"]
    (message,) = [json.loads(line) for line in received.read_text().splitlines()]
    assert message["run_id"] == run["run_id"] and message["status"] == "failed"
    assert message["error"] == stored["error"]
    assert not any("Traceback" in line for line in lines), lines


def test_two_schedules_on_one_database_due_together_run_one_after_the_other(demo_db, config):
    """Bound: both runs take about 10 s together."""
    add(config, "purge", "0 3 * * *", SLOW_PURGE)
    add(config, "quick", "0 3 * * *", ["maintenance", "--type", "quick"])
    with serving(config):
        pass
    due = datetime.now(UTC) - timedelta(seconds=1)
    job_store_next_run(config, "purge", due)
    job_store_next_run(config, "quick", due)
    with serving(config) as lines:
        wait_for(lambda: sum(" finished" in line for line in lines) >= 2, "both triggers", 120)
    (first,) = scheduled_runs(config, "purge")
    (second,) = scheduled_runs(config, "quick")
    assert first["status"] == second["status"] == "completed", lines
    ordered = sorted([first, second], key=lambda r: r["started_at"])
    assert ordered[1]["started_at"] >= ordered[0]["finished_at"], ordered


def test_a_notify_command_is_ended_with_its_children_at_the_timeout(home, config):
    """Bound: the timeout is 1 s; the command and its `sleep 1000` end within 5 s."""
    pid_file = home / "child.pid"
    script = home / "lingers.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '1000'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(1000)\n"
    )
    settings = config.main.notifications.model_copy(
        update={"command": f"{sys.executable} {script}", "timeout_seconds": 1.0}
    )
    started = time.monotonic()
    failures = notify.send(settings, {"status": "failed", "run_id": "r1"})
    assert time.monotonic() - started < 5
    assert failures and "ran longer than 1 s" in failures[0]
    child = int(pid_file.read_text())
    wait_for(lambda: not _alive(child), "the child to end", 5)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_sigterm_ends_serve_within_its_bound(demo_db, config, home):
    """Bound: scheduling.STOP_SECONDS (20 s) after SIGTERM, plus start-up slack."""
    add(config, "purge", "0 3 * * *", SLOWER_PURGE)
    due_now(config, "purge")
    serve = start_serve(home)
    wait_for(lambda: scheduled_runs(config, "purge"), "the scheduled run to start")
    time.sleep(1)
    serve.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    output, _ = serve.communicate(timeout=scheduling.STOP_SECONDS + 30)
    assert time.monotonic() - sent < scheduling.STOP_SECONDS + 5, output
    assert serve.returncode == 0 and "stopped" in output, output


def test_serve_does_not_wait_past_its_bound_for_a_trigger_that_ignores_stop(
    demo_db, config, monkeypatch: pytest.MonkeyPatch
):
    """Bound: STOP_SECONDS set to 2 s here; serve returns within 5 s of the stop."""
    monkeypatch.setattr(scheduling, "STOP_SECONDS", 2.0)
    add(config, "quick", "0 3 * * *", ["maintenance", "--type", "quick"])
    due_now(config, "quick")
    release, running = threading.Event(), threading.Event()

    def deaf(*_args: Any) -> None:
        running.set()
        release.wait(60)  # a step that never looks at the stop request

    stop = threading.Event()
    left: list[list[str]] = []
    thread = threading.Thread(target=lambda: left.append(scheduling.serve(config, deaf, stop)))
    with logged() as lines:
        thread.start()
        try:
            assert running.wait(30), lines
            stop.set()
            stopped = time.monotonic()
            thread.join(10)
            assert not thread.is_alive() and time.monotonic() - stopped < 5
            assert left == [["quick (cron)"]], lines
            assert any("still running after 2 s" in line for line in lines), lines
        finally:
            release.set()
            thread.join(10)
    with StateStore(config.state_url) as store:
        assert store.lock_holder(LEASE) is None


def test_a_missed_trigger_is_logged_and_notified_as_missed_never_started(
    demo_db, home, edit_config
):
    """Bound: a few seconds; the missed trigger is reported on start."""
    command, received = notify_script(home)
    config = edit_config(
        {"scheduler": {"misfire_grace_seconds": 60}, "notifications": {"command": command}}
    )
    hour = (datetime.now(UTC).hour + 12) % 24  # no trigger of its own while the test runs
    add(config, "nightly", f"0 {hour} * * *", ["maintenance", "--type", "quick"])
    with serving(config):
        pass
    job_store_next_run(config, "nightly", datetime.now(UTC) - timedelta(hours=2))
    with serving(config) as lines:
        wait_for(lambda: any("nightly: missed its run" in line for line in lines), "missed")
        wait_for(received.exists, "the notification")
        time.sleep(1)
    assert not any("nightly: started" in line for line in lines), lines
    (message,) = [json.loads(line) for line in received.read_text().splitlines()]
    assert message["schedule"] == "nightly" and message["status"] == "missed"
    # When it was due, in UTC, as aishell writes every time (not Python's str()).
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", message["due"]), message
    assert scheduled_runs(config, "nightly") == []


def test_a_run_whose_pid_was_reused_is_taken_as_left_behind(demo_db, config):
    """A stored running run names a live pid (this process) with another start time:
    that process is not the run's, so the run is left behind; with this process's own
    start time it is not."""
    add(config, "quick", "0 3 * * *", ["maintenance", "--type", "quick"])
    result = commands.run_schedule(config, "quick", "run-now")
    assert result is not None
    mine = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    path = make_url(config.state_url).database
    assert path is not None
    for started, left in ((mine, []), ("1", [result.run_id])):
        with sqlite3.connect(path) as raw:  # as a killed process would have left the row
            raw.execute(
                "UPDATE runs SET status = 'running', pid = ?, pid_started = ? WHERE run_id = ?",
                (os.getpid(), started, result.run_id),
            )
        raw.close()
        with StateStore(config.state_url) as store:
            assert [run["run_id"] for run in store.orphaned_runs()] == left


def test_schedule_list_shows_a_run_whose_process_is_gone_as_interrupted(demo_db, config):
    """As `runs list` shows it: a run stored running by a process that is gone (a
    killed serve) is interrupted in `schedule list` too, and one whose process lives
    is running."""
    add(config, "quick", "0 3 * * *", ["maintenance", "--type", "quick"])
    result = commands.run_schedule(config, "quick", "run-now")
    assert result is not None
    mine = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    path = make_url(config.state_url).database
    assert path is not None
    for started, shown in ((mine, "running"), ("1", "interrupted")):
        with sqlite3.connect(path) as raw:  # as a killed process would have left the row
            raw.execute(
                "UPDATE runs SET status = 'running', pid = ?, pid_started = ? WHERE run_id = ?",
                (os.getpid(), started, result.run_id),
            )
        raw.close()
        [listed] = commands.list_schedules(config)
        assert listed["last_run"]["run_id"] == result.run_id
        assert listed["last_run"]["status"] == shown


def test_a_notify_command_whose_child_left_its_session_ends_at_the_timeout(home, config):
    """A child in a session of its own outlives the command's group and holds its
    output open: send ends at the timeout (1 s) while that child still sleeps, not
    when it ends."""
    pid_file = home / "child.pid"
    script = home / "leaves.py"
    script.write_text(
        "import subprocess, time\n"
        "child = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(1000)\n"
    )
    settings = config.main.notifications.model_copy(
        update={"command": f"{sys.executable} {script}", "timeout_seconds": 1.0}
    )
    try:
        failures = notify.send(settings, {"status": "failed", "run_id": "r1"})
        assert failures and "ran longer than 1 s" in failures[0]
        assert _alive(int(pid_file.read_text())), "send waited for the child to end"
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
