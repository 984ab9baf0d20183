"""A fleet job's `file:` archive is the file named where the job was given: `fleet_run`
through the API keeps its path absolute, resolved in the sender's folder, not in each
worker's. A schedule stored with a relative path (before `schedule add` fixed paths)
and served with `--fleet` is refused in one line, kept as the schedule's alert; nothing
is sent.

Before, the fleet job kept the path as given, and a worker wrote the rows it purged
into a file relative to its own folder."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from aishell import commands
from aishell.commands.fleet import queue_schedule
from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.state.store import StateStore
from tests.conftest import EditConfig
from tests.fleet.queues import delete_queue
from tests.fleet.test_broker_faults import BROKERS, broker_at, fleet_home, fleet_jobs_in
from tests.scheduling.test_schedule_archive_where_added import JOB, stored_with_relative_archive


def _fleet(edit_config: EditConfig, home: Path, demo_db: Path) -> Config:
    return fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))


@pytest.mark.parametrize("archive", ["file:old/app_logs.jsonl", "file:./old/../app_logs.jsonl"])
def test_a_relative_archive_is_fixed_where_the_fleet_job_is_given(
    edit_config: EditConfig,
    home: Path,
    demo_db: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    archive: str,
) -> None:
    config = _fleet(edit_config, home, demo_db)
    given = tmp_path_factory.mktemp("given")
    (given / "old").mkdir()
    monkeypatch.chdir(given)
    try:
        sent = commands.fleet_run(config, "log_cleanup", {**JOB, "archive_to": archive}, "demo")
    finally:
        delete_queue(config)
    with StateStore(config.state_url) as store:
        kept = store.get_fleet_job(sent["fleet_id"])
    assert kept is not None
    named = Path(archive.removeprefix("file:"))
    assert kept["job"]["archive_to"] == f"file:{(given / named).resolve()}"
    # A table archive and the job's other values are kept as given.
    with_table = {**JOB, "archive_to": "table:app_logs_old"}
    try:
        sent = commands.fleet_run(config, "log_cleanup", with_table, "demo")
    finally:
        delete_queue(config)
    with StateStore(config.state_url) as store:
        kept = store.get_fleet_job(sent["fleet_id"])
    assert kept is not None and kept["job"] == with_table


def test_a_stored_schedule_with_a_relative_archive_is_not_sent_to_the_queue(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    config = _fleet(edit_config, home, demo_db)
    stored_with_relative_archive(config, "demo")
    try:
        with pytest.raises(UsageError) as refused:
            queue_schedule(config, "purge", "cron", threading.Event())
    finally:
        delete_queue(config)
    said = str(refused.value)
    assert said.startswith("schedule purge archives to --archive-to 'file:old/app_logs.jsonl'")
    assert "\n" not in said
    assert fleet_jobs_in(config) == 0
    with StateStore(config.state_url) as store:
        (alert,) = store.schedule_alerts()["purge"]
    assert said in str(alert)
