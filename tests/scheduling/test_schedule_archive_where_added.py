"""A schedule's `file:` archive is the file named where the schedule was added, however
the job was given (the command's words, or a job through `commands.add_schedule`): the
scheduler that later runs it in another folder writes there, not into its own folder.
A schedule stored with a relative path (before paths were fixed when added) names no
one file and is refused in one line; nothing is purged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from tests.helpers import digest, query

OLD = "SELECT count(*) FROM app_logs WHERE created_at < datetime('now', '-100 days')"
JOB = {"table": "app_logs", "retention_days": 100, "archive_to": "file:old/app_logs.jsonl"}


def stored_with_relative_archive(config: Config, target: str | None) -> None:
    """The schedule `purge` of JOB, its archive's path relative, as `schedule add`
    stored it before it made paths absolute."""
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        store.add_schedule(
            name="purge",
            cron="@daily",
            timezone="UTC",
            words=[],
            agent="log_cleanup",
            job=dict(JOB),
            target=target,
            options={},
        )


def _folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two working folders, each with an `old` folder the archive could go into."""
    added, elsewhere = tmp_path_factory.mktemp("added"), tmp_path_factory.mktemp("elsewhere")
    for folder in (added, elsewhere):
        (folder / "old").mkdir()
    return added, elsewhere


@pytest.mark.parametrize("given", ["job", "words"])
def test_a_relative_archive_is_written_where_the_schedule_was_added(
    demo_db: Path,
    config: Config,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    given: str,
) -> None:
    added, elsewhere = _folders(tmp_path_factory)
    monkeypatch.chdir(added)
    if given == "words":
        from aishell.cli.schedules import job_from_words

        words = ("log-cleanup", "--table", "app_logs", "--retention-days", "100")
        agent, job, _, _ = job_from_words((*words, "--archive-to", JOB["archive_to"]))
    else:
        agent, job = "log_cleanup", dict(JOB)
    commands.add_schedule(config, "purge", "@daily", "UTC", [], agent, job, None, {})
    (listed,) = commands.list_schedules(config)
    assert listed["job"]["archive_to"] == f"file:{added / 'old' / 'app_logs.jsonl'}"

    old = query(demo_db, OLD)[0][0]
    assert old > 0
    monkeypatch.chdir(elsewhere)
    result = commands.run_schedule(config, "purge", "run-now")
    assert result is not None and result.status == "completed", result and result.error
    assert query(demo_db, OLD)[0][0] == 0
    archived = (added / "old" / "app_logs.jsonl").read_text().splitlines()
    assert len(archived) == old and all(json.loads(line) for line in archived)
    assert list((elsewhere / "old").iterdir()) == []


def test_a_schedule_stored_with_a_relative_archive_is_refused_not_run_in_another_folder(
    demo_db: Path,
    config: Config,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, elsewhere = _folders(tmp_path_factory)
    stored_with_relative_archive(config, config.main.default_target)
    monkeypatch.chdir(elsewhere)
    before = digest(demo_db)
    with pytest.raises(UsageError) as refused:
        commands.run_schedule(config, "purge", "run-now")
    said = str(refused.value)
    assert said.startswith("schedule purge archives to --archive-to 'file:old/app_logs.jsonl'")
    assert "add it again" in said and "\n" not in said
    assert commands.run_schedule(config, "purge", "cron") is None
    (failed,) = commands.list_runs(config)
    assert failed["status"] == "failed"
    assert digest(demo_db) == before and list((elsewhere / "old").iterdir()) == []
