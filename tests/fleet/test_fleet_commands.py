"""The fleet's commands end to end with one worker on Redis and a SQLite state store:
`aishell fleet run` waits and reports each target's run, a schedule served with
--fleet sends its job to the queue instead of running it, and a task delivered again
for a finished target changes nothing. Then the `fleet:` block's refusals."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text

from aishell import commands
from aishell.cli import cli
from aishell.commands.fleet import queue_schedule
from aishell.commands.tools import load_catalog
from aishell.config.models import load_config
from aishell.errors import ConfigError
from aishell.fleet.app import broker_url
from aishell.fleet.sending import sent_with
from aishell.state.store import StateStore, signed_store
from tests.fleet.builders import add_nightly_quick
from tests.fleet.queues import delete_queue, running_worker


@pytest.fixture
def one_worker(home: Path, demo_db: Path) -> Iterator[dict[str, Any]]:
    """Two SQLite targets tagged alike, a queue of the test's own on Redis, one worker."""
    unique = uuid.uuid4().hex[:8]
    shutil.copyfile(demo_db, home / "second.db")
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["demo"]["tags"] = ["pair"]
    data["targets"]["second"] = {"url": "sqlite:///second.db", "tags": ["pair"]}
    data["fleet"] = {
        "broker_url": "redis://127.0.0.1:6379/0",
        "queue": f"aishell-test-{unique}",
        "slot_wait_seconds": 0.2,
    }
    path.write_text(yaml.safe_dump(data))
    try:
        with running_worker(home):
            yield {"home": home}
    finally:
        delete_queue(load_config(home=home))


def test_fleet_run_waits_and_a_second_delivery_changes_nothing(one_worker: dict[str, Any]) -> None:
    home = one_worker["home"]
    out = CliRunner().invoke(
        cli,
        [
            "--home",
            str(home),
            "fleet",
            "run",
            "maintenance",
            "--type",
            "quick",
            "--targets",
            "tag:pair",
            "--wait-seconds",
            "90",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert [(r["target"], r["status"]) for r in summary["runs"]] == [
        ("demo", "completed"),
        ("second", "completed"),
    ]
    config = load_config(home=home)
    # The same task again, as a broker delivers it after a lost acknowledgement.
    again = commands.run_fleet_target(config, summary["fleet_id"], "demo")
    assert again == "completed"
    with StateStore(config.state_url) as store:
        assert len(store.list_runs(limit=10)) == 2
    shown = CliRunner().invoke(cli, ["--home", str(home), "fleet", "show", summary["fleet_id"]])
    assert "demo: completed" in shown.output and "second: completed" in shown.output


def test_a_schedule_served_with_fleet_sends_its_job_to_the_queue(
    one_worker: dict[str, Any],
) -> None:
    home = one_worker["home"]
    config = load_config(home=home)
    add_nightly_quick(config, "second")
    queue_schedule(config, "nightly", "cron", threading.Event())
    queue_schedule(config, "nightly", "recover", threading.Event())  # a worker's to resume
    with StateStore(config.state_url) as store:
        fleet_ids = [r[0] for r in store._conn.execute(text("SELECT fleet_id FROM fleet_jobs"))]
        store._conn.rollback()
    assert len(fleet_ids) == 1
    deadline = time.monotonic() + 60
    summary = commands.fleet_summary(config, fleet_ids[0])
    while summary["going_on"] and time.monotonic() < deadline:
        time.sleep(0.2)
        summary = commands.fleet_summary(config, fleet_ids[0])
    assert [(r["target"], r["status"]) for r in summary["runs"]] == [("second", "completed")]


def test_a_fleet_run_names_its_targets_and_checks_its_job_before_sending(
    home: Path, demo_db: Path
) -> None:
    config = load_config(home=home)
    with pytest.raises(Exception, match="no key 'colour'"):
        commands.fleet_run(config, "maintenance", {"colour": 1}, "demo")
    with pytest.raises(Exception, match="tag"):
        commands.fleet_run(config, "maintenance", {"type": "quick"}, "tag:nowhere")
    out = CliRunner().invoke(cli, ["--home", str(home), "fleet", "run", "maintenance"])
    assert out.exit_code == 2 and "--targets SELECTOR or --all-targets" in out.output
    for endless in ("nan", "inf"):
        args = ["fleet", "run", "maintenance", "--all-targets", "--wait-seconds", endless]
        out = CliRunner().invoke(cli, ["--home", str(home), *args])
        assert out.exit_code == 2 and "is not a finite number" in out.output, out.output


def test_the_broker_s_password_comes_from_its_variable_never_the_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["fleet"] = {"broker_url": "amqp://guest:secret@127.0.0.1:5672//"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="holds a password"):
        load_config(home=home)
    data["fleet"] = {"broker_url": "amqp://guest@127.0.0.1:5672//", "password_env": "BROKER_PW"}
    path.write_text(yaml.safe_dump(data))
    config = load_config(home=home)
    monkeypatch.delenv("BROKER_PW", raising=False)
    with pytest.raises(
        ConfigError, match=r"BROKER_PW \(fleet.password_env in .*\) is not set; export BROKER_PW "
    ):
        broker_url(config)
    monkeypatch.setenv("BROKER_PW", "p@ss/word")
    assert broker_url(config) == "amqp://guest:p%40ss%2Fword@127.0.0.1:5672//"
    data["fleet"] = {"broker_url": "http://127.0.0.1/"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="a broker is reached by"):
        load_config(home=home)


def test_a_fleet_log_cleanup_runs_its_job_as_given(one_worker: dict[str, Any]) -> None:
    """The job is checked before it is sent and kept as given: the worker's run checks it
    as `aishell run` does, once."""
    home = one_worker["home"]
    out = CliRunner().invoke(
        cli,
        [
            "--home", str(home), "fleet", "run", "log_cleanup", "--table", "app_logs",
            "--retention-days", "80", "--targets", "demo", "--wait-seconds", "90", "--json",
        ],
    )  # fmt: skip
    assert out.exit_code in (0, 3), out.output
    summary = json.loads(out.stdout)
    ((target, status),) = [(r["target"], r["status"]) for r in summary["runs"]]
    assert (target, status) in (("demo", "completed"), ("demo", "waiting_approval")), summary


def _held_for_a_person(home: Path, data: dict[str, Any]) -> list[str]:
    data["targets"]["demo"]["environment"] = "production"
    return ["log_cleanup", "--table", "app_logs", "--retention-days", "80"]


def _held_for_its_window(home: Path, data: dict[str, Any]) -> list[str]:
    # An hour half a day away: the window is shut while the test runs.
    hour = (datetime.now(UTC).hour + 12) % 24
    window = {"type": "maintenance_window", "allowed_hours": [hour], "timezone": "UTC"}
    agent = home / "config" / "agents" / "maintenance.yaml"
    agent_data = yaml.safe_load(agent.read_text())
    agent_data["maintenance_agent"]["safety_constraints"] = [window]
    agent.write_text(yaml.safe_dump(agent_data))
    return ["maintenance", "--type", "full"]


@pytest.mark.parametrize(
    ("held", "status"),
    [(_held_for_a_person, "waiting_approval"), (_held_for_its_window, "out_of_window")],
    ids=["approval", "window"],
)
def test_a_fleet_run_left_waiting_exits_3(
    home: Path, demo_db: Path, held: Callable[[Path, dict[str, Any]], list[str]], status: str
) -> None:
    """A worker asks nobody: a production target's purge waits for a person, a run
    outside its maintenance window for the window, and `fleet run` says so as `aishell
    run` does (exit 3), never exit 0 as if it were done, nor 1 as if it had failed."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    args = held(home, data)
    data["fleet"] = {
        "broker_url": "redis://127.0.0.1:6379/0",
        "queue": f"aishell-test-{uuid.uuid4().hex[:8]}",
    }
    path.write_text(yaml.safe_dump(data))
    try:
        with running_worker(home):
            out = CliRunner().invoke(
                cli,
                [
                    "--home", str(home), "fleet", "run", *args, "--targets", "demo",
                    "--wait-seconds", "90", "--json",
                ],
            )  # fmt: skip
    finally:
        delete_queue(load_config(home=home))
    summary = json.loads(out.stdout)
    assert [(r["target"], r["status"]) for r in summary.get("runs", [])] == [("demo", status)], (
        out.output
    )
    assert out.exit_code == 3, out.output


def test_a_dry_run_whose_worker_stopped_is_run_anew(home: Path, demo_db: Path) -> None:
    """A dry run is not resumed: delivered again while its run shows going (its worker
    killed), the target's dry run starts anew, and the fleet job keeps the new one."""
    import sqlite3

    config = load_config(home=home)
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job(
            "maintenance", {"type": "quick"}, {"dry_run": True}, "demo", ["demo"]
        )
    first = commands.run_job(
        config, "maintenance", {"type": "quick"}, "demo", fleet=(fleet_id, "demo"), dry_run=True
    )
    with sqlite3.connect(home / "state.db") as db:  # as its killed worker left it
        db.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (first.run_id,))

    carried = sent_with(load_catalog(config), config.agent("maintenance"), config.main.targets)
    assert commands.run_fleet_target(config, fleet_id, "demo", carried) == "completed"
    with StateStore(config.state_url) as store:
        kept = store.fleet_run_id(fleet_id, "demo")
    assert kept is not None and kept != first.run_id


def test_a_worker_stopped_mid_run_sends_its_task_back_and_ends(home: Path, demo_db: Path) -> None:
    """SIGTERM to a worker (one process, the solo pool) while its run goes: the run is
    interrupted, its task goes back to the queue, and the worker ends (a service
    manager's stop), rather than taking the task again itself and serving on."""
    import signal

    from tests.fleet.queues import running_worker

    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["fleet"] = {
        "broker_url": "redis://127.0.0.1:6379/0",
        "queue": f"aishell-test-{uuid.uuid4().hex[:8]}",
        "slot_wait_seconds": 0.2,
    }
    path.write_text(yaml.safe_dump(data))
    config = load_config(home=home)
    try:
        with running_worker(home) as worker:
            summary = commands.fleet_run(config, "maintenance", {"type": "full"}, "demo")
            fleet_id = summary["fleet_id"]
            deadline = time.monotonic() + 60
            while not commands.fleet_summary(config, fleet_id)["runs"][0].get("run_id"):
                assert time.monotonic() < deadline, "the worker never began the run"
                time.sleep(0.05)
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)  # ended, not serving on
            (run,) = commands.fleet_summary(config, fleet_id)["runs"]
            assert run["status"] in ("interrupted", "completed"), run
            log = (home / "worker.log").read_text()
            if run["status"] == "interrupted":  # the signal met the run, not its end
                assert "resumed next" in log, log[-2000:]
    finally:
        delete_queue(config)
