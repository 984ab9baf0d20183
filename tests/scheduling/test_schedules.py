"""Schedules: kept across restarts, missed triggers coalesced, never two at once, never a
prompt, notifications that cannot fail a run, and run-now the same as the trigger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from click.testing import CliRunner
from sqlalchemy import create_engine

from aishell import commands
from aishell.cli import cli
from aishell.cli.schedules import job_from_words
from aishell.config.models import Config
from aishell.errors import TargetLocked, UsageError
from aishell.scheduling import serve as scheduling
from aishell.scheduling.jobstore import SignedJobStore
from aishell.scheduling.nextruns import next_runs
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from tests.helpers import logged

SLOW_PURGE = [
    "log-cleanup",
    "--table",
    "app_logs",
    "--retention-days",
    "100",
    "--max-batch-size",
    "20",
    "--sleep-ms",
    "30",
]


def add(config: Config, name: str, cron: str, words: list[str], tz: str = "UTC") -> dict:
    agent, job, target, options = job_from_words(tuple(words))
    return commands.add_schedule(config, name, cron, tz, words, agent, job, target, options)


@contextmanager
def serving(config: Config) -> Iterator[list[str]]:
    """`aishell schedule serve` on a thread; stopped (as by SIGTERM) on leaving."""
    stop = threading.Event()
    with logged() as lines:
        thread = threading.Thread(target=commands.serve_schedules, args=(config, stop))
        thread.start()
        try:
            wait_for(lambda: any(line.startswith("serving") for line in lines), "serve to start")
            yield lines
        finally:
            stop.set()
            thread.join(60)
            assert not thread.is_alive()


def wait_for(condition: Any, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def scheduled_runs(config: Config, name: str) -> list[dict[str, Any]]:
    with StateStore(config.state_url) as store:
        return store.schedule_runs(name, limit=100)


def signed_jobs(config: Config) -> SignedJobStore:
    """The schedules' job table as serve reads and writes it: signed with the home's key
    (made on first use, as `schedule add` makes it)."""
    return SignedJobStore(
        load_key(config.home),
        engine=create_engine(config.state_url),
        tablename=scheduling.JOB_TABLE,
        removes=False,
    )


def job_store_next_run(config: Config, name: str, when: datetime) -> None:
    """As if the scheduler had been down since `when`: set the job's next fire time in
    its table, without starting a scheduler (which would process the job itself)."""
    store = signed_jobs(config)
    store.start(BackgroundScheduler(timezone=UTC), "default")
    job = store.lookup_job(name)
    assert job is not None
    job.next_run_time = when
    store.update_job(job)
    store.shutdown()


def test_a_schedule_survives_a_restart_with_its_next_run(demo_db, config):
    add(config, "nightly", "0 2 * * *", ["maintenance", "--type", "quick"], "Europe/Berlin")
    expected = scheduling.next_fire("0 2 * * *", "Europe/Berlin")
    assert expected is not None and expected.hour == 2
    with serving(config) as lines:
        assert any("schedule nightly: added" in line for line in lines)
    held = next_runs(config)["nightly"]
    assert held == expected
    with serving(config) as lines:
        assert not any("nightly: added" in line for line in lines)  # kept, not re-added
    (listed,) = commands.list_schedules(config)
    assert listed["next_run"] == expected and listed["words"] == ["maintenance", "--type", "quick"]


def stored_before(config: Config, name: str, cron: str, tz: str = "UTC") -> None:
    """A schedule as an aishell from before --cron meant crontab stored it: the row as
    written then (no check), and its job with APScheduler's own cron trigger; both signed
    with the home's key (a row unsigned is refused before its cron is read)."""
    agent, job, target, options = job_from_words(("maintenance", "--type", "quick"))
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        store.add_schedule(
            name=name,
            cron=cron,
            timezone=tz,
            words=["maintenance", "--type", "quick"],
            agent=agent,
            job=job,
            target=config.target(target)[0],
            options=options,
        )
    fields = cron.split()
    if len(fields) == 5:
        old = CronTrigger.from_crontab(cron, timezone=tz)
    else:
        second, minute, hour, day, month, weekday = fields
        old = CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=weekday,
            timezone=tz,
        )
    scheduler = BackgroundScheduler(
        jobstores={"default": signed_jobs(config)},
        timezone=UTC,
    )
    scheduler.start(paused=True)
    scheduler.add_job("aishell.scheduling.serve:fire", old, args=[name], id=name, name=name)
    scheduler.shutdown()


def test_a_schedule_stored_with_apschedulers_weekdays_runs_on_crontabs(demo_db, config):
    """`0 3 * * 0` was stored with a job for Mondays (APScheduler's weekday 0): the list
    shows the Sunday at once, and serve replaces the job so that it fires on Sunday."""
    stored_before(config, "weekly", "0 3 * * 0", "Europe/Berlin")
    sunday = scheduling.next_fire("0 3 * * 0", "Europe/Berlin")
    assert sunday is not None and sunday.isoweekday() == 7 and sunday.hour == 3
    # What the old job holds is a Monday, and is not what the list shows.
    store = signed_jobs(config)
    store.start(BackgroundScheduler(timezone=UTC), "default")
    (old,) = store.get_all_jobs()
    store.shutdown()
    assert old.next_run_time.isoweekday() == 1
    assert next_runs(config) == {}
    (listed,) = commands.list_schedules(config)
    assert listed["next_run"] == sunday and listed["cron_error"] is None
    with serving(config) as lines:
        assert any("schedule weekly: changed, next run" in line for line in lines), lines
    assert next_runs(config)["weekly"] == sunday
    (listed,) = commands.list_schedules(config)
    assert listed["next_run"] == sunday


def test_a_stored_six_field_schedule_is_not_served_and_says_why(demo_db, config):
    """Seconds first, as aishell once took it: crontab has no such form, so the
    schedule never fires with a meaning it no longer has; list and serve say so."""
    stored_before(config, "old", "0 0 2 * * *")
    add(config, "nightly", "0 2 * * *", ["maintenance", "--type", "quick"])
    listed = {s["name"]: s for s in commands.list_schedules(config)}
    assert listed["old"]["next_run"] is None
    assert "crontab has no seconds" in listed["old"]["cron_error"]
    assert listed["nightly"]["cron_error"] is None and listed["nightly"]["next_run"] is not None
    result = CliRunner().invoke(cli, ["schedule", "list"])
    assert result.exit_code == 0 and "not crontab's" in result.output, result.output
    with serving(config) as lines:
        time.sleep(2.5 * scheduling.RECONCILE_SECONDS)  # reconciled again: said once
    said = [line for line in lines if line.startswith("schedule old:")]
    assert len(said) == 1 and "not served" in said[0] and "no seconds" in said[0], lines
    assert set(next_runs(config)) == {"nightly"}
    assert scheduled_runs(config, "old") == []


def test_a_trigger_missed_while_down_runs_once_on_start(demo_db, config):
    # Keep clear of a minute's turn, so no fresh trigger comes while the test looks (one
    # due after the schedule was added would run at the first serve's start).
    into_minute = datetime.now(UTC).second
    if into_minute > 40:
        time.sleep(61 - into_minute)
    add(config, "minutely", "* * * * *", ["maintenance", "--type", "quick"])
    with serving(config):
        pass
    # Down for three minutes: three triggers missed.
    job_store_next_run(config, "minutely", datetime.now(UTC) - timedelta(minutes=3))
    with serving(config) as lines:
        wait_for(lambda: any("minutely: finished" in line for line in lines), "the run")
    runs = scheduled_runs(config, "minutely")
    assert len(runs) == 1 and runs[0]["how"] == "cron" and runs[0]["status"] == "completed"
    assert next_runs(config)["minutely"] > datetime.now(UTC)


def test_a_trigger_missed_beyond_the_grace_time_is_reported_not_run(demo_db, edit_config, webhook):
    config = edit_config(
        {"scheduler": {"misfire_grace_seconds": 60}, "notifications": {"webhook": webhook}}
    )
    # Twelve hours from now, whenever the test runs: down for two hours, the schedule
    # missed only the trigger set below, none of its own within the grace time.
    hour = (datetime.now(UTC).hour + 12) % 24
    add(config, "nightly", f"0 {hour} * * *", ["maintenance", "--type", "quick"])
    with serving(config):
        pass
    job_store_next_run(config, "nightly", datetime.now(UTC) - timedelta(hours=2))
    with serving(config) as lines:
        wait_for(lambda: any("nightly: missed its run" in line for line in lines), "missed")
        wait_for(lambda: _Hook.received, "the notification")  # sent after the line
    assert scheduled_runs(config, "nightly") == []
    (listed,) = commands.list_schedules(config)
    assert listed["alert"]["kind"] == "missed"
    (posted,) = _Hook.received
    assert posted["schedule"] == "nightly" and posted["status"] == "missed"


def test_a_run_past_its_limit_is_reported_stuck(demo_db, edit_config, webhook):
    config = edit_config(
        {"scheduler": {"stuck_after_seconds": 1}, "notifications": {"webhook": webhook}}
    )
    slower = [*SLOW_PURGE[:-1], "150"]  # about 15 s: past the limit of 1 s
    add(config, "purge", "0 3 * * *", slower)
    due_now(config, "purge")
    with serving(config) as lines:
        wait_for(lambda: any("purge: stuck" in line for line in lines), "a stuck report")
        wait_for(lambda: _Hook.received, "the notification")  # sent after the line
        (listed,) = commands.list_schedules(config)
        assert listed["alert"]["kind"] == "stuck"
    stuck = [p for p in _Hook.received if p["status"] == "stuck"]
    assert len(stuck) == 1 and stuck[0]["run_id"] == scheduled_runs(config, "purge")[0]["run_id"]


def test_metrics_of_the_last_runs_and_schedules(demo_db, config, home):
    add(config, "quick", "0 2 * * *", ["maintenance", "--type", "quick"])
    commands.run_schedule(config, "quick")
    commands.run_job(config, "log_cleanup", {"table": "app_logs", "retention_days": 100})
    text = commands.metrics(config, home / "aishell.prom")
    status = 'aishell_last_run_status{agent="maintenance",status="completed",target="demo"}'
    assert f"{status} 1.0" in text
    purged = [line for line in text.splitlines() if line.startswith("aishell_last_run_rows_purged")]
    assert purged and float(purged[0].split()[-1]) > 0
    # Only a run with a step that deletes rows has a count of them.
    assert all('agent="log_cleanup"' in line for line in purged)
    assert 'aishell_schedule_next_run_time_seconds{schedule="quick",target="demo"}' in text
    assert (home / "aishell.prom").read_text() == text
    result = CliRunner().invoke(cli, ["metrics"])
    assert result.exit_code == 0 and "aishell_last_run_duration_seconds" in result.output


def test_a_dry_run_is_not_the_agent_s_last_run(demo_db, config, home):
    """A preview changed nothing: the metrics' last backup run is the real one, and the
    fleet's status says a dry run is one."""
    commands.run_job(config, "backup", {"type": "full"}, dry_run=True)
    text = commands.metrics(config, home / "aishell.prom")
    assert 'agent="backup"' not in text
    done = commands.run_job(config, "backup", {"type": "full"})
    commands.run_job(config, "backup", {"type": "full"}, dry_run=True)
    text = commands.metrics(config, home / "aishell.prom")
    started = [
        line
        for line in text.splitlines()
        if line.startswith('aishell_last_run_start_time_seconds{agent="backup"')
    ]
    [line] = started
    full = commands.show_run(config, done.run_id)
    assert float(line.split()[-1]) == datetime.fromisoformat(full["created_at"]).timestamp()
    shown = CliRunner().invoke(cli, ["fleet", "status"])
    assert shown.exit_code == 0, shown.output
    assert "(dry run)" in shown.output


def test_overlapping_triggers_of_one_schedule_give_one_run(demo_db, config, monkeypatch):
    add(config, "purge", "* * * * *", SLOW_PURGE)
    # A trigger every second (crontab's finest is a minute), so that the next trigger
    # comes while a run still goes on, without waiting for minutes to turn.
    monkeypatch.setattr(scheduling, "trigger", lambda _cron, _zone: IntervalTrigger(seconds=1))
    with serving(config) as lines:
        wait_for(
            lambda: any("still running; this trigger is skipped" in line for line in lines),
            "a skipped trigger",
        )
    runs = scheduled_runs(config, "purge")
    assert len(runs) == 1
    # Stopping the scheduler stopped the run resumably.
    assert runs[0]["status"] in ("interrupted", "completed")


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def due_now(config: Config, name: str) -> None:
    """Serve once so the scheduler knows the schedule, then make it due."""
    with serving(config):
        pass
    job_store_next_run(config, name, datetime.now(UTC) - timedelta(seconds=1))


def test_a_risky_scheduled_step_waits_for_approval_and_notifies(demo_db, edit_config, webhook):
    received = demo_db.parent / "notified.json"
    command = f"{sys.executable} -c \"import sys; open('{received}', 'w').write(sys.stdin.read())\""
    config = edit_config({"notifications": {"webhook": webhook, "command": command}})
    # A retention under 7 days needs a person's yes.
    words = ["log-cleanup", "--table", "app_logs", "--retention-days", "3"]
    add(config, "purge", "0 3 * * *", words)
    due_now(config, "purge")
    with serving(config) as lines:
        wait_for(lambda: any("purge: finished" in line for line in lines), "the run")
    (run,) = scheduled_runs(config, "purge")
    assert run["status"] == "waiting_approval" and run["how"] == "cron"
    (posted,) = _Hook.received
    assert posted["status"] == "waiting_approval" and posted["run_id"] == run["run_id"]
    assert posted["waiting_for_approval"] == ["step_1"]
    # Its retention is under the purge's limit: a yes by the step's number alone passes it.
    assert posted["approve_with"] == f"aishell approve {run['run_id']} --step 1"
    assert json.loads(received.read_text()) == posted


def test_a_failing_notifier_never_fails_the_run(demo_db, edit_config):
    config = edit_config(
        {"notifications": {"webhook": "http://127.0.0.1:9/nothing", "on": ["completed"]}}
    )
    add(config, "quick", "0 2 * * *", ["maintenance", "--type", "quick"])
    result = commands.run_schedule(config, "quick")
    assert result.status == "completed"
    events = commands.show_run(config, result.run_id)["events"]
    (failed,) = [e for e in events if e["kind"] == "notify_failed"]
    assert "notify webhook failed" in failed["data"]["failures"][0]


def test_run_now_runs_the_same_job_as_the_trigger(demo_db, config):
    add(config, "quick", "0 2 * * *", ["maintenance", "--type", "quick"])
    now = commands.run_schedule(config, "quick", "run-now")
    due_now(config, "quick")
    with serving(config) as lines:
        wait_for(lambda: any("quick: finished" in line for line in lines), "the run")
    runs = scheduled_runs(config, "quick")
    assert [r["how"] for r in runs] == ["cron", "run-now"]
    triggered = commands.show_run(config, runs[0]["run_id"])
    assert commands.show_run(config, now.run_id)["job"] == triggered["job"]
    assert triggered["plan_hash"] == now.plan_hash


def test_a_second_scheduler_on_the_same_store_refuses_naming_the_first(demo_db, config):
    with serving(config), pytest.raises(TargetLocked, match=f"pid {os.getpid()} on"):
        commands.serve_schedules(config, threading.Event())


def test_schedule_words_are_checked_when_added(demo_db, config):
    runner = CliRunner()
    cases = {
        ("--cron", "0 2 * *", "--", "maintenance"): "4 field(s); give five fields",
        ("--cron", "0 0 2 * * *", "--", "maintenance"): "crontab has no seconds",
        ("--cron", "0 3 * * 8", "--", "maintenance"): "day of week 8 is out of range",
        ("--cron", "0 2 * * *", "--", "maintenance", "--yes"): "never approves in advance",
        ("--cron", "0 2 * * *", "--", "vacuum"): "Unknown job 'vacuum'",
        ("--cron", "0 2 * * *", "--", "maintenance", "--type", "huge"): "Invalid value",
        ("--cron", "0 2 * * *", "--", "maintenance", "--target", "nope"): "Unknown target 'nope'",
        ("--cron", "0 2 * * *", "--timezone", "Mars/Base", "--", "maintenance"): "time zone",
        # A folder of the zone database, and a name too long for a file: not zones either.
        ("--cron", "0 2 * * *", "--timezone", "America", "--", "maintenance"): "time zone",
        ("--cron", "0 2 * * *", "--timezone", "Etc", "--", "maintenance"): "time zone",
        ("--cron", "0 2 * * *", "--timezone", "x" * 300, "--", "maintenance"): "time zone",
        ("--cron", "*/90 * * * *", "--", "maintenance"): "past the width of 0-59",
        ("--cron", "0 2 * * *"): "Give the job after --",
    }
    for args, message in cases.items():
        result = runner.invoke(cli, ["schedule", "add", "x", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and result.output.count("\n") == 1, (args, result.output)
    assert commands.list_schedules(config) == []
    with pytest.raises(UsageError, match="exists"):
        add(config, "twice", "0 2 * * *", ["maintenance"])
        add(config, "twice", "0 2 * * *", ["maintenance"])


def test_sigterm_stops_serve_and_the_next_trigger_resumes_the_run_first(demo_db, config, home):
    add(config, "purge", "0 3 * * *", SLOW_PURGE)
    due_now(config, "purge")
    env = {**os.environ, "AISHELL_HOME": str(home)}
    serve = subprocess.Popen(
        [sys.executable, "-m", "aishell", "schedule", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(lambda: scheduled_runs(config, "purge"), "the scheduled run to start")
    time.sleep(1)
    serve.send_signal(signal.SIGTERM)
    output, _ = serve.communicate(timeout=60)
    assert serve.returncode == 0, output
    assert "SIGTERM received" in output and "stopped" in output
    runs = scheduled_runs(config, "purge")
    assert len(runs) == 1, (runs, output)
    (run,) = runs
    assert run["status"] == "interrupted", output
    # The next run of the schedule finishes that one first.
    with logged() as lines:
        commands.run_schedule(config, "purge", "run-now")
    assert f"resuming unfinished run {run['run_id']} first" in lines[0]
    assert commands.show_run(config, run["run_id"])["status"] == "completed"


def test_pause_resume_and_remove_reach_a_serving_scheduler(demo_db, config):
    add(config, "nightly", "0 2 * * *", ["maintenance", "--type", "quick"])
    with serving(config) as lines:
        commands.pause_schedule(config, "nightly", True)
        wait_for(lambda: "schedule nightly: paused" in lines, "the pause")
        assert commands.list_schedules(config)[0]["next_run"] is None
        commands.pause_schedule(config, "nightly", False)
        wait_for(lambda: "schedule nightly: resumed" in lines, "the resume")
        assert next_runs(config)["nightly"] == scheduling.next_fire("0 2 * * *", "UTC")
        commands.remove_schedule(config, "nightly")
        wait_for(lambda: "schedule nightly: removed" in lines, "the removal")
    assert next_runs(config) == {}
    assert commands.list_schedules(config) == []


def test_a_relative_archive_file_is_fixed_where_the_schedule_is_added(
    demo_db, config, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    words = ["log-cleanup", "--table", "app_logs", "--archive-to", "file:old/app_logs.jsonl"]
    add(config, "purge", "0 3 * * *", words)
    (listed,) = commands.list_schedules(config)
    assert listed["job"]["archive_to"] == f"file:{tmp_path / 'old' / 'app_logs.jsonl'}"


def test_a_run_waiting_for_approval_is_notified_again_not_started_again(
    demo_db, edit_config, webhook
):
    config = edit_config({"notifications": {"webhook": webhook}})
    add(
        config,
        "purge",
        "0 3 * * *",
        ["log-cleanup", "--table", "app_logs", "--retention-days", "3"],
    )
    due_now(config, "purge")
    with serving(config) as lines:
        wait_for(lambda: any("purge: finished" in line for line in lines), "the first run")
    due_now(config, "purge")
    with serving(config) as lines:
        wait_for(lambda: any("not started again" in line for line in lines), "the second trigger")
    (run,) = scheduled_runs(config, "purge")
    assert run["status"] == "waiting_approval"
    assert [p["run_id"] for p in _Hook.received] == [run["run_id"], run["run_id"]]
    # A person's run-now still runs.
    again = commands.run_schedule(config, "purge", "run-now")
    assert again is not None and again.run_id != run["run_id"]


def test_a_trigger_due_while_nothing_serves_is_listed_as_overdue(demo_db, config):
    add(config, "nightly", "0 2 * * *", ["maintenance", "--type", "quick"])
    due_now(config, "nightly")
    result = CliRunner().invoke(cli, ["schedule", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "overdue since" in result.output
