"""A fleet's broker that refuses, never answers, or fails midway, and workers left idle.

- A broker that refuses the connection, or accepts it and never answers (RabbitMQ,
  Redis): `aishell fleet run` ends within the fleet's timeouts in one line naming the
  broker and what bounded the wait, exit code 1, nothing sent and no fleet job recorded.
- A broker that stops answering after a task of three went: the line names the fleet
  job and how many were sent; `aishell fleet resend` sends the tasks of the targets
  whose runs are not over, and each target is then run once, though its task came
  more than once.
- A schedule served with --fleet whose broker never answers ends its trigger so too,
  kept as a missed trigger with why.
- A target whose run cannot begin (its server refuses, the worker's config has it no
  more) is `not_started` with why, not left `queued` for `fleet run` to wait on; `fleet
  resend` tries it again.
- A worker whose broker never answers is one line, exit 1; one that loses its broker
  for good ends 1 once Celery gives up, for its service manager to restart it.
- `aishell fleet jobs` lists the newest fleet jobs with where their targets stand.
- `aishell doctor` names a broker that does not answer, with the fix.
- A worker left idle past the read timeout still takes its tasks (RabbitMQ, Redis).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.commands.fleet import queue_schedule, watch_fleet
from aishell.config.models import Config
from aishell.errors import EXIT_FAILED, BrokerUnreachable
from aishell.state.faults import sqlite_path
from aishell.state.store import StateStore
from tests.conftest import EditConfig
from tests.faultproxy import Proxy, Silent
from tests.fleet.builders import add_nightly_quick
from tests.fleet.queues import delete_queue, running_worker
from tests.helpers import closed_port

BROKERS = {"rabbitmq": ("amqp", 5672), "redis": ("redis", 6379)}
# The fleet's timeouts in these tests, and how long past them a send may take to end
# (a busy two-core machine, the interpreter's own start).
TIMEOUT = 1
SLACK = 8.0


def broker_at(kind: str, port: int) -> str:
    scheme, _ = BROKERS[kind]
    return f"amqp://guest@127.0.0.1:{port}//" if scheme == "amqp" else f"redis://127.0.0.1:{port}/0"


def fleet_home(edit_config: EditConfig, home: Path, demo_db: Path, url: str) -> Config:
    """Three SQLite demo targets tagged `trio`, the fleet on `url` with short timeouts and
    a queue of the test's own."""
    for name in ("second", "third"):
        shutil.copyfile(demo_db, home / f"{name}.db")
    return edit_config(
        {
            "targets": {
                "demo": {"tags": ["trio"]},
                "second": {"url": "sqlite:///second.db", "tags": ["trio"]},
                "third": {"url": "sqlite:///third.db", "tags": ["trio"]},
            },
            "fleet": {
                "broker_url": url,
                "queue": f"aishell-test-{uuid.uuid4().hex[:8]}",
                "connect_timeout_seconds": TIMEOUT,
                "read_timeout_seconds": TIMEOUT,
                "slot_wait_seconds": 0.2,
            },
        }
    )


def fleet_jobs_in(config: Config) -> int:
    StateStore(config.state_url).close()  # made, if no command has yet
    path = sqlite_path(config.state_url)
    assert path is not None
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM fleet_jobs").fetchone()[0])


@pytest.fixture
def silent() -> Iterator[Silent]:
    """A listener that accepts connections and never answers: a broker gone silent."""
    listener = Silent()
    yield listener
    listener.close()


@pytest.mark.parametrize("kind", sorted(BROKERS))
@pytest.mark.parametrize("fault", ["refused", "silent"])
def test_a_broker_that_refuses_or_never_answers_ends_the_send_with_nothing_sent(
    edit_config: EditConfig, home: Path, demo_db: Path, silent: Silent, kind: str, fault: str
) -> None:
    port = silent.port if fault == "silent" else closed_port()
    config = fleet_home(edit_config, home, demo_db, broker_at(kind, port))
    started = time.monotonic()
    out = CliRunner().invoke(
        cli, ["fleet", "run", "maintenance", "--type", "quick", "--targets", "tag:trio"]
    )
    took = time.monotonic() - started
    assert out.exit_code == EXIT_FAILED, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.output, out.output
    assert f"The fleet's broker {broker_at(kind, port)}" in lines[0]
    assert lines[0].endswith("nothing was sent")
    if fault == "silent":
        # RabbitMQ's handshake is bounded by the connect timeout, Redis's first command
        # by the read timeout.
        setting = "connect" if kind == "rabbitmq" else "read"
        assert f"did not answer within 1 s (fleet.{setting}_timeout_seconds)" in lines[0]
    else:
        assert "refused" in lines[0].lower()
    assert took < TIMEOUT + SLACK
    assert fleet_jobs_in(config) == 0


def test_a_schedule_sent_to_a_silent_broker_ends_within_the_timeouts(
    edit_config: EditConfig, home: Path, demo_db: Path, silent: Silent
) -> None:
    # Before the timeouts, a schedule served with --fleet hung here for good, and with
    # it every later trigger on its target.
    config = fleet_home(edit_config, home, demo_db, broker_at("redis", silent.port))
    add_nightly_quick(config, "second")
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable, match="did not answer within 1 s"):
        queue_schedule(config, "nightly", "cron", threading.Event())
    assert time.monotonic() - started < TIMEOUT + SLACK
    assert fleet_jobs_in(config) == 0
    # Kept as a missed trigger, with why: `schedule list` shows it, notifiers hear it.
    with StateStore(config.state_url) as store:
        (missed,) = store.schedule_alerts()["nightly"]
    assert missed["kind"] == "missed" and "did not answer within 1 s" in missed["error"]


def test_doctor_names_a_broker_that_does_not_answer_and_passes_one_that_does(
    edit_config: EditConfig, home: Path, demo_db: Path, silent: Silent
) -> None:
    config = fleet_home(edit_config, home, demo_db, broker_at("redis", silent.port))
    report = commands.doctor(config, targets=["demo"])
    said = [p for p in report["problems"] if "broker" in p["problem"]]
    assert len(said) == 1, report["problems"]
    assert "did not answer within 1 s (fleet.read_timeout_seconds)" in said[0]["problem"]
    assert said[0]["problem"].endswith("fleet jobs cannot be sent or run")
    assert "fleet.broker_url" in said[0]["fix"]
    config = edit_config({"fleet": {"broker_url": broker_at("redis", BROKERS["redis"][1])}})
    report = commands.doctor(config, targets=["demo"])
    assert [p for p in report["problems"] if "broker" in p["problem"]] == []


@pytest.fixture
def redis_proxy() -> Iterator[Proxy]:
    proxy = Proxy(BROKERS["redis"][1])
    yield proxy
    proxy.close()


def test_a_send_failed_midway_names_what_went_and_resend_sends_the_rest(
    edit_config: EditConfig,
    home: Path,
    demo_db: Path,
    redis_proxy: Proxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kombu.messaging import Producer

    config = fleet_home(edit_config, home, demo_db, broker_at("redis", redis_proxy.port))
    publish, published = Producer.publish, []

    def freeze_before_the_second(producer: Producer, *args: Any, **kwargs: Any) -> Any:
        # The broker stops answering once one task has gone: the network's fault, made
        # by the proxy, at the moment the test picks.
        published.append(1)
        if len(published) == 2:
            redis_proxy.freeze()
        return publish(producer, *args, **kwargs)

    monkeypatch.setattr(Producer, "publish", freeze_before_the_second)
    with pytest.raises(BrokerUnreachable) as failed:
        commands.fleet_run(config, "maintenance", {"type": "quick"}, "tag:trio")
    monkeypatch.setattr(Producer, "publish", publish)
    line = str(failed.value)
    assert "did not answer within 1 s (fleet.read_timeout_seconds) while sending" in line
    fleet_id = line.split("tasks of fleet job ")[1].split(" ")[0]
    assert f"1 of the 3 tasks of fleet job {fleet_id} were sent" in line
    assert f"`aishell fleet resend {fleet_id}` sends the rest" in line

    config = edit_config({"fleet": {"broker_url": broker_at("redis", BROKERS["redis"][1])}})
    try:
        resent = CliRunner().invoke(cli, ["fleet", "resend", fleet_id, "--no-wait", "--json"])
        assert resent.exit_code == 0, resent.output
        assert json.loads(resent.stdout)["resent"] == ["demo", "second", "third"]
        with running_worker(home):
            summary = commands.fleet_resend(config, fleet_id, wait_seconds=90)
        # The first target's task came three times (sent, sent again twice): one run.
        assert [(r["target"], r["status"]) for r in summary["runs"]] == [
            ("demo", "completed"),
            ("second", "completed"),
            ("third", "completed"),
        ]
        with StateStore(config.state_url) as store:
            assert sorted(r["target"] for r in store.list_runs(limit=10)) == [
                "demo",
                "second",
                "third",
            ]
        again = CliRunner().invoke(cli, ["fleet", "resend", fleet_id, "--no-wait"])
        assert again.exit_code == 0 and "none: every target's run is over" in again.output
    finally:
        delete_queue(config)


def test_a_target_whose_run_cannot_begin_is_not_started_with_why_and_resent(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    # Its task used to fail in the worker's log alone: the target stayed "queued" and
    # `fleet run` waited for it the whole of --wait-seconds.
    fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    down = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nowhere"
    config = edit_config({"targets": {"down": {"url": down, "tags": ["trio"]}}})
    try:
        with running_worker(home):
            started = time.monotonic()
            out = CliRunner().invoke(
                cli,
                [
                    *("fleet", "run", "maintenance", "--type", "quick", "--targets", "tag:trio"),
                    *("--wait-seconds", "60"),
                ],
            )
            assert time.monotonic() - started < 50
            assert out.exit_code == EXIT_FAILED, out.output
            assert "down: not_started (run - on " in out.output
            assert "Cannot connect to target 'down'" in out.output
            fleet_id = out.output.split("fleet job ")[1].split(":")[0]
            summary = commands.fleet_summary(config, fleet_id)
            assert summary["counts"] == {"completed": 3, "not_started": 1}
            assert summary["going_on"] == 0
            # Listed with the newest fleet jobs, as it stands.
            (listed,) = commands.list_fleet_jobs(config)["fleet_jobs"]
            assert (listed["fleet_id"], listed["counts"]) == (fleet_id, summary["counts"])
            shown = CliRunner().invoke(cli, ["fleet", "jobs"])
            assert f"{fleet_id}  " in shown.output
            assert "maintenance on 4 targets (tag:trio): 3 completed, 1 not_started" in shown.output
        # Sent again with no worker to take it: queued, not the earlier delivery's word.
        sent = commands.fleet_resend(config, fleet_id)
        assert sent["resent"] == ["down"]
        assert (sent["counts"], sent["going_on"]) == ({"completed": 3, "queued": 1}, 1)
        with running_worker(home):
            again = watch_fleet(config, fleet_id, 60, None)
        # Tried again: still down, and said so by this delivery.
        (row,) = [r for r in again["runs"] if r["target"] == "down"]
        assert row["status"] == "not_started" and row["run_id"] is None
    finally:
        delete_queue(config)


def test_a_target_the_worker_does_not_know_is_not_started_with_why(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    # The job was sent from a config that has the target; the worker's has it no more.
    config = fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    try:
        sent = commands.fleet_run(config, "maintenance", {"type": "quick"}, "tag:trio")
        path = home / "config" / "aishell.yaml"
        data = yaml.safe_load(path.read_text())
        del data["targets"]["third"]
        path.write_text(yaml.safe_dump(data))
        with running_worker(home):
            summary = watch_fleet(config, sent["fleet_id"], 60, None)
        rows = {r["target"]: (r["status"], r["error"]) for r in summary["runs"]}
        assert rows["demo"] == rows["second"] == ("completed", None)
        assert rows["third"][0] == "not_started" and "third" in rows["third"][1]
    finally:
        delete_queue(config)


@pytest.mark.parametrize("kind", sorted(BROKERS))
def test_a_worker_whose_broker_never_answers_is_one_line_and_exit_1(
    edit_config: EditConfig, home: Path, demo_db: Path, silent: Silent, kind: str
) -> None:
    # Against a broker that refuses at once, the worker's own start and exit: what a
    # busy machine adds to both runs alike.
    fleet_home(edit_config, home, demo_db, broker_at(kind, closed_port()))
    refused, took_refused = _worker_once(home)
    assert refused.returncode == EXIT_FAILED, refused.stderr
    fleet_home(edit_config, home, demo_db, broker_at(kind, silent.port))
    worker, took = _worker_once(home)
    assert worker.returncode == EXIT_FAILED, worker.stderr
    lines = worker.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not answer within 1 s" in lines[0], worker.stderr
    assert lines[0].endswith("the worker did not start")
    # Bounded by the timeouts, not by Celery's retries (which wait for good).
    assert took < took_refused + TIMEOUT + SLACK


def _worker_once(home: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    worker = subprocess.run(
        [sys.executable, "-m", "aishell", "worker"],
        env={**os.environ, "AISHELL_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=90,
    )
    return worker, time.monotonic() - started


def test_a_worker_that_loses_its_broker_ends_1_for_its_service_manager_to_restart(
    edit_config: EditConfig, home: Path, demo_db: Path, redis_proxy: Proxy
) -> None:
    # Celery gives up after its retries; its exit code was dropped, so a worker that
    # had lost its broker for good ended 0 and a service restarted on failure stayed
    # down.
    fleet_home(edit_config, home, demo_db, broker_at("redis", redis_proxy.port))
    try:
        with running_worker(home) as worker:
            wait_until_ready(home)
            redis_proxy.freeze()
            redis_proxy.cut()
            assert worker.wait(90) == EXIT_FAILED
        log = (home / "worker.log").read_text()
        assert "The worker stopped on an error (Celery's exit code 1)" in log
    finally:
        delete_queue(edit_config({"fleet": {"broker_url": broker_at("redis", 6379)}}))


def wait_until_ready(home: Path) -> None:
    deadline = time.monotonic() + 60
    while "ready." not in (home / "worker.log").read_text():
        assert time.monotonic() < deadline, (home / "worker.log").read_text()
        time.sleep(0.1)


@pytest.mark.parametrize("kind", sorted(BROKERS))
def test_a_worker_idle_past_the_read_timeout_still_takes_its_tasks(
    edit_config: EditConfig, home: Path, demo_db: Path, kind: str
) -> None:
    config = fleet_home(edit_config, home, demo_db, broker_at(kind, BROKERS[kind][1]))
    os.environ["AISHELL_TEST_BROKER_PASSWORD"] = "guest"
    if kind == "rabbitmq":
        config = edit_config({"fleet": {"password_env": "AISHELL_TEST_BROKER_PASSWORD"}})
    try:
        with running_worker(home):
            # Idle, past the read timeout three times, from when it took its queue (its
            # start alone, on a busy machine, may take longer than the sleep).
            wait_until_ready(home)
            time.sleep(3 * TIMEOUT + 0.5)
            summary = commands.fleet_run(
                config, "maintenance", {"type": "quick"}, "demo", wait_seconds=90
            )
        assert [(r["target"], r["status"]) for r in summary["runs"]] == [("demo", "completed")]
    finally:
        delete_queue(config)
        os.environ.pop("AISHELL_TEST_BROKER_PASSWORD", None)
