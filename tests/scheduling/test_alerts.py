"""Monitoring: each alert rule fires through a command notifier and a webhook (a real HTTP
server on 127.0.0.1) exactly once per occurrence, and resolves once when its condition
ends; `aishell alerts check` says by its exit code whether one fires; `schedule serve`
evaluates the rules on its own; the log's JSON lines carry the run and step.

The state each rule reads is built through the StateStore API (a real run that fails,
waits or runs slowly would take long); the time the rules are evaluated at is given, so
that "an hour later" takes no hour."""

from __future__ import annotations

import io
import json
import logging
import shlex
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.cli.logs import ROOT, attached, line_formatter, serve_log
from aishell.config.models import Config, load_config
from aishell.errors import ConfigError
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from aishell.units import stamp
from tests.conftest import EditConfig
from tests.helpers import reached

TOKEN = "hook-s3cret-token"
NOTIFY_SCRIPT = """
import sys
with open(sys.argv[1], "a") as out:
    out.write(sys.stdin.read().replace("\\n", " ") + "\\n")
"""


@dataclass
class Sinks:
    """What the command notifier wrote (one JSON per line) and the webhook was POSTed."""

    command_file: Path
    posts: list[dict[str, Any]] = field(default_factory=list)
    failing: bool = False  # the webhook answers 500 and keeps nothing

    def commanded(self) -> list[dict[str, Any]]:
        if not self.command_file.exists():
            return []
        return [json.loads(line) for line in self.command_file.read_text().splitlines()]


@pytest.fixture
def sinks(home: Path) -> Iterator[tuple[Sinks, str, str]]:
    """The sinks, the notify command line and the webhook URL (its token in the path)."""
    found = Sinks(home / "commanded.jsonl")

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not found.failing:
                found.posts.append(json.loads(body))
            self.send_response(500 if found.failing else 204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = home / "notify.py"
    script.write_text(NOTIFY_SCRIPT)
    command = shlex.join([sys.executable, str(script), str(found.command_file)])
    try:
        yield found, command, f"http://127.0.0.1:{server.server_address[1]}/hook/{TOKEN}"
    finally:
        server.shutdown()
        server.server_close()


def monitoring(
    edit_config: EditConfig, sinks: tuple[Sinks, str, str], rule: dict[str, Any], **more: Any
) -> Config:
    _, command, webhook = sinks
    return edit_config(
        {
            "notifications": {"command": command, "webhook": webhook},
            "monitoring": {"enabled": True, "alerts": [rule], **more},
        }
    )


def new_run(store: StateStore, run_id: str, steps: int = 1) -> None:
    store.create_run(
        run_id=run_id,
        agent="maintenance",
        target="demo",
        dialect="sqlite",
        job={"type": "quick"},
        plan={},
        plan_hash="0" * 64,
        tool_fingerprints={},
        dry_run=False,
        safety_level="strict",
        step_rows=[
            {
                "index": i,
                "step_id": f"step_{i}",
                "tool": "analyze_database_health",
                "risk_level": "safe",
                "params": {},
            }
            for i in range(steps)
        ],
    )


# Each rule: its config, the state that makes it fire (given the store and the time the
# first check runs at), what ends it, its subject, and when to check again.
Make = Callable[[StateStore, datetime], None]
End = Callable[[StateStore], None]


def _failed(store: StateStore, _now: datetime) -> None:
    new_run(store, "runfailed01")
    store.set_step_status("runfailed01", 0, "failed", "disk full")
    store.finish_run("runfailed01", "failed", "step 0 failed: disk full")


def _failed_ends(store: StateStore) -> None:
    store.set_step_status("runfailed01", 0, "succeeded")
    store.finish_run("runfailed01", "completed")


def _slow(store: StateStore, _now: datetime) -> None:
    new_run(store, "runslow0001", steps=2)
    store.step_finished("runslow0001", 0, "succeeded")
    store.step_started("runslow0001", 1, {}, [], 1)


def _slow_ends(store: StateStore) -> None:
    store.step_finished("runslow0001", 1, "succeeded")
    store.finish_run("runslow0001", "completed")


def _waiting(store: StateStore, _now: datetime) -> None:
    new_run(store, "runwaiting1")
    store.set_step_status("runwaiting1", 0, "waiting_approval")
    store.finish_run("runwaiting1", "waiting_approval")


def _waiting_ends(store: StateStore) -> None:
    store.set_step_status("runwaiting1", 0, "denied")
    store.finish_run("runwaiting1", "denied")


# Files that are there: a verified backup whose file is gone proves nothing.
_OLD_BACKUP, _UNPROVEN_BACKUP = str(Path(__file__)), str(Path(__file__).with_name("__init__.py"))


def _stale(store: StateStore, now: datetime) -> None:
    # The demo target's file, reached by a run: its backups' age is that database's.
    home = Path(store.location).parent
    sqlite3.connect(home / "demo.db").close()
    of = {"database_identity": reached(load_config(home=home), store, "demo")}
    old = stamp(now - timedelta(hours=48))
    store.record_backup(
        target="demo",
        kind="full",
        path=_OLD_BACKUP,
        created_at=old,
        verified_at=old,
        manifest=of,
    )
    # A newer backup that no restore has proven does not count.
    store.record_backup(target="demo", kind="full", path=_UNPROVEN_BACKUP, manifest=of)


def _stale_ends(store: StateStore) -> None:
    store.backup_verified(_UNPROVEN_BACKUP, {"ok": True, "problems": []}, True)


def _missed(store: StateStore, now: datetime) -> None:
    store.add_schedule(
        name="nightly",
        cron="0 2 * * *",
        timezone="UTC",
        words=["maintenance"],
        agent="maintenance",
        job={"type": "quick"},
        target="demo",
        options={},
    )
    # Made two days ago: at least one 02:00 has come and gone without a run.
    path = Path(store.location)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schedules SET created_at = ?", (stamp(now - timedelta(days=2)),))


def _missed_ends(store: StateStore) -> None:
    new_run(store, "runnightly1")
    store.record_schedule_run("runnightly1", "nightly", "cron")


H = timedelta(hours=1)
RULES: dict[str, tuple[dict[str, Any], Make, End, str, timedelta]] = {
    "run_failed": (
        {"condition": "errors_encountered > 0"}, _failed, _failed_ends, "runfailed01", 0 * H
    ),
    "step_slow": (
        {"condition": "execution_time > 1800"}, _slow, _slow_ends, "runslow0001/1", H
    ),
    "approval_waiting": (
        {"condition": "approval_wait > 3600"}, _waiting, _waiting_ends, "runwaiting1", 2 * H
    ),
    "backup_stale": (
        {"condition": "backup_age_hours > 24", "targets": ["demo"]}, _stale, _stale_ends, "demo",
        0 * H,
    ),
    "schedule_missed": (
        {"condition": "schedule_missed"}, _missed, _missed_ends, "nightly", 0 * H
    ),
}  # fmt: skip


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_fires_once_through_both_notifiers_and_resolves_once(
    rule: str, edit_config: EditConfig, sinks: tuple[Sinks, str, str]
) -> None:
    condition, make, end, subject, later = RULES[rule]
    config = monitoring(edit_config, sinks, {**condition, "action": "create_incident"})
    found, _, _ = sinks
    now = datetime.now(UTC)
    # With the home's key, as a run records and verifies a backup: a row it did not
    # sign counts as no backup (state/backups.py: sealed).
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        make(store, now)
    at = now + later

    first = commands.check_alerts(config, now=at)
    assert [(a["rule"], a["subject"]) for a in first["firing"]] == [(rule, subject)]
    assert first["failures"] == []
    for received in (found.commanded(), found.posts):
        ((message,),) = [received]
        assert message["kind"] == "alert" and message["status"] == "firing"
        assert (message["rule"], message["subject"]) == (rule, subject)
        assert message["action"] == "create_incident" and message["summary"]

    again = commands.check_alerts(config, now=at + timedelta(seconds=30))
    assert [a["subject"] for a in again["firing"]] == [subject] and again["sent"] == []
    assert len(found.commanded()) == len(found.posts) == 1

    with StateStore(config.state_url, key=load_key(config.home)) as store:
        end(store)
    ended = commands.check_alerts(config, now=at + timedelta(seconds=60))
    assert ended["firing"] == [] and [m["status"] for m in ended["sent"]] == ["resolved"]
    for received in (found.commanded(), found.posts):
        assert [(m["status"], m["subject"]) for m in received] == [
            ("firing", subject),
            ("resolved", subject),
        ]
        assert received[1]["resolved_at"] is not None

    quiet = commands.check_alerts(config, now=at + timedelta(seconds=90))
    assert quiet == {"firing": [], "sent": [], "failures": []}
    assert len(found.commanded()) == len(found.posts) == 2
    with StateStore(config.state_url) as store:
        assert TOKEN not in json.dumps(store.list_alerts(), default=str)


def test_a_message_no_notifier_took_is_sent_at_the_next_evaluation(
    edit_config: EditConfig, sinks: tuple[Sinks, str, str]
) -> None:
    config = monitoring(edit_config, sinks, {"condition": "run_failed"})
    config = edit_config({"notifications": {"command": None}})  # the webhook alone
    found = sinks[0]
    with StateStore(config.state_url) as store:
        _failed(store, datetime.now(UTC))
    found.failing = True
    first = commands.check_alerts(config)
    assert first["sent"] == [] and len(first["failures"]) == 1
    assert "HTTP Error 500" in first["failures"][0] and TOKEN not in first["failures"][0]
    found.failing = False
    second = commands.check_alerts(config)
    assert [m["status"] for m in second["sent"]] == ["firing"] and second["failures"] == []
    assert [m["status"] for m in found.posts] == ["firing"]
    assert commands.check_alerts(config)["sent"] == []


def test_a_failed_run_resolves_when_a_later_run_of_its_job_completes(
    edit_config: EditConfig, sinks: tuple[Sinks, str, str]
) -> None:
    config = monitoring(edit_config, sinks, {"condition": "run_failed"})
    with StateStore(config.state_url) as store:
        _failed(store, datetime.now(UTC))
    assert [a["subject"] for a in commands.check_alerts(config)["firing"]] == ["runfailed01"]
    time.sleep(0.01)  # the next night's run starts later, to the millisecond
    with StateStore(config.state_url) as store:
        new_run(store, "runnext0001")
        store.finish_run("runnext0001", "completed")
    ended = commands.check_alerts(config)
    assert ended["firing"] == [] and [m["subject"] for m in ended["sent"]] == ["runfailed01"]
    assert [m["status"] for m in sinks[0].posts] == ["firing", "resolved"]


def test_below_its_limit_a_rule_is_quiet(
    edit_config: EditConfig, sinks: tuple[Sinks, str, str]
) -> None:
    config = monitoring(edit_config, sinks, {"condition": "execution_time > 1800"})
    now = datetime.now(UTC)
    with StateStore(config.state_url) as store:
        _slow(store, now)
    assert commands.check_alerts(config, now=now + timedelta(minutes=10))["firing"] == []
    assert sinks[0].posts == []


def test_alerts_check_exits_1_while_an_alert_fires_and_0_when_none(
    edit_config: EditConfig, sinks: tuple[Sinks, str, str]
) -> None:
    config = monitoring(edit_config, sinks, {"condition": "run_failed"})
    runner = CliRunner()
    quiet = runner.invoke(cli, ["alerts", "check"])
    assert (quiet.exit_code, quiet.stdout) == (0, "No alert is firing.\n")
    with StateStore(config.state_url) as store:
        _failed(store, datetime.now(UTC))
    firing = runner.invoke(cli, ["alerts", "check", "--json", "--log-format", "json"])
    assert firing.exit_code == 1, firing.output
    (alert,) = json.loads(firing.stdout)["firing"]
    assert (alert["rule"], alert["run_id"]) == ("run_failed", "runfailed01")
    lines = [json.loads(line) for line in firing.stderr.splitlines()]
    assert any(line.get("run_id") == "runfailed01" for line in lines)
    assert TOKEN not in firing.stderr


def test_alerts_check_without_rules_is_a_configuration_error(config: Config) -> None:
    with pytest.raises(ConfigError, match="monitoring.enabled: true"):
        commands.check_alerts(config)
    result = CliRunner().invoke(cli, ["alerts", "check"])
    assert result.exit_code == 2 and "monitoring has no rules" in result.stderr


def test_the_tutorials_block_loads_and_an_unknown_condition_names_the_known(
    edit_config: EditConfig,
) -> None:
    tutorial = {
        "enabled": True,
        "metrics": ["execution_time", "tables_processed", "indexes_rebuilt", "errors_encountered"],
        "alerts": [
            {"condition": "execution_time > 1800", "action": "notify_admin"},
            {"condition": "errors_encountered > 0", "action": "create_incident"},
        ],
    }
    rules = edit_config({"monitoring": tutorial}).main.monitoring.alerts
    assert [(r.rule, r.limit) for r in rules] == [("step_slow", 1800), ("run_failed", 0)]
    with pytest.raises(ConfigError, match=r"unknown condition 'cpu > 90'.*execution_time > N"):
        edit_config({"monitoring": {"alerts": [{"condition": "cpu > 90"}]}})
    with pytest.raises(ConfigError, match=r"needs a limit: approval_wait > N"):
        edit_config({"monitoring": {"alerts": [{"condition": "approval_wait"}]}})


def test_json_log_lines_carry_time_level_logger_message_and_the_run(
    edit_config: EditConfig, sinks: tuple[Sinks, str, str]
) -> None:
    config = monitoring(edit_config, sinks, {"condition": "execution_time > 60"})
    now = datetime.now(UTC)
    with StateStore(config.state_url) as store:
        _slow(store, now)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(line_formatter("json"))
    with attached(ROOT, handler, logging.INFO):
        commands.check_alerts(config, now=now + timedelta(minutes=5))
        logging.getLogger("aishell.test").info("plain line\x1b[2J")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    fired, plain = lines
    assert {"time", "level", "logger", "message"} <= set(fired)
    assert (fired["run_id"], fired["step"], fired["level"]) == ("runslow0001", 1, "warning")
    assert fired["logger"] == "aishell.scheduling.alerts"
    assert datetime.fromisoformat(fired["time"]).utcoffset() == timedelta(0)
    assert len(fired["time"]) == len(stamp())  # to the millisecond, as units.stamp writes
    assert "run_id" not in plain and plain["message"] == "plain line\x1b[2J"
    assert "\x1b" not in out.getvalue()  # escaped in the line itself


def test_the_log_format_comes_from_the_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AISHELL_LOG_FORMAT", "json")
    record = logging.LogRecord("aishell.x", logging.INFO, __file__, 1, "hello", None, None)
    assert json.loads(line_formatter().format(record))["message"] == "hello"
    monkeypatch.setenv("AISHELL_LOG_FORMAT", "xml")
    result = CliRunner().invoke(cli, ["alerts", "check"])
    assert result.exit_code == 2 and "use text or json" in result.stderr


def test_the_schedulers_log_takes_the_same_json_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AISHELL_LOG_FORMAT", "json")
    with serve_log():
        logging.getLogger("aishell.scheduling.serve").info(
            "schedule %s: run %s completed", "nightly", "abc123", extra={"run_id": "abc123"}
        )
    (line,) = capsys.readouterr().out.splitlines()
    found = json.loads(line)
    assert (found["logger"], found["level"], found["run_id"]) == (
        "aishell.scheduling.serve",
        "info",
        "abc123",
    )
    assert found["message"] == "schedule nightly: run abc123 completed"


def test_schedule_serve_evaluates_the_rules_on_its_interval(
    edit_config: EditConfig, sinks: tuple[Sinks, str, str]
) -> None:
    config = monitoring(edit_config, sinks, {"condition": "run_failed"}, interval_seconds=1)
    with StateStore(config.state_url) as store:
        _failed(store, datetime.now(UTC))
    stop = threading.Event()
    thread = threading.Thread(target=commands.serve_schedules, args=(config, stop))
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not sinks[0].posts and time.monotonic() < deadline:
            time.sleep(0.05)
        with StateStore(config.state_url) as store:
            _failed_ends(store)
        while len(sinks[0].posts) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    assert [m["status"] for m in sinks[0].posts] == ["firing", "resolved"]
    assert [m["status"] for m in sinks[0].commanded()] == ["firing", "resolved"]


def test_schedule_serve_takes_the_log_format_as_a_flag(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AISHELL_LOG_FORMAT", raising=False)
    with serve_log("json"):
        logging.getLogger("aishell.scheduling.serve").info("serving")
    assert json.loads(capsys.readouterr().out)["message"] == "serving"
    refused = CliRunner().invoke(cli, ["schedule", "serve", "--log-format", "xml"])
    assert refused.exit_code == 2 and "use text or json" in refused.stderr
