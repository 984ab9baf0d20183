"""An empty value is never taken for a left-out option: `--target "$T"` with T unset
must not run on the default target. Every text or path value a command takes is refused
when empty (one line naming the option, exit 2) unless its own default is the empty
string; the library tells an empty name from none as well."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.home import find_home, named_config
from aishell.config.models import Config
from aishell.errors import ConfigError, UsageError
from tests.helpers import digest, query


def _refused(*args: str) -> str:
    done = CliRunner().invoke(cli, list(args))
    assert done.exit_code == 2, done.output
    return done.output


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["run", "maintenance", "--type", "quick", "--target", "", "--yes"], "--target"),
        (["plan", "maintenance", "--type", "quick", "--target", ""], "--target"),
        (["run", "backup", "--target", "", "--yes"], "--target"),
        (["targets", "check", ""], "[NAME]"),
        (["backups", "list", "--target", ""], "--target"),
        (["plan", "log-cleanup", "--table", "app_logs", "--date-column", ""], "--date-column"),
        (["plan", "log-cleanup", "--table", "", "--date-column", "created_at"], "--table"),
        (["--home", "", "runs", "list"], "--home"),
        (["--config", "", "runs", "list"], "--config"),
        (["plan", "maintenance", "--out", ""], "--out"),
        (["targets", "add", "x", "--service", "", "--no-check"], "--service"),
        (["approve", "x", "--reason", ""], "--reason"),
        (["schedule", "add", "s", "--cron", "0 2 * * *", "--timezone", ""], "--timezone"),
    ],
)
def test_an_empty_value_is_refused_naming_the_option(demo_db: Path, args: list[str], option: str):
    before = digest(demo_db)
    out = _refused(*args)
    assert out.splitlines() == [f"Error: Invalid value for '{option}': the value is empty"]
    assert digest(demo_db) == before
    assert not (demo_db.parent / "state.db").exists() or not query(
        demo_db.parent / "state.db", "SELECT run_id FROM runs"
    )


def test_a_schedule_whose_job_names_an_empty_target_is_not_stored_as_the_default(
    demo_db: Path,
):
    out = _refused(
        "schedule", "add", "s", "--cron", "0 2 * * *", "--", "maintenance", "--target", ""
    )
    assert out.strip() == "Error: Job words: Invalid value for '--target': the value is empty"
    listed = CliRunner().invoke(cli, ["schedule", "list", "--json"])
    assert json.loads(listed.output)["schedules"] == []


def test_an_empty_value_with_json_is_the_error_object(demo_db: Path):
    done = CliRunner().invoke(cli, ["backups", "list", "--target", "", "--json"])
    assert done.exit_code == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "usage_error" and "'--target': the value is empty" in error["message"]


def test_a_description_may_be_empty_as_its_default_is(home: Path):
    done = CliRunner().invoke(
        cli, ["targets", "add", "lab", "sqlite:///lab.db", "--description", "", "--no-check"]
    )
    assert done.exit_code == 0, done.output


def test_the_library_tells_an_empty_name_from_none(config: Config, monkeypatch):
    assert config.target(None)[0] == config.main.default_target
    with pytest.raises(ConfigError, match="Unknown target ''"):
        config.target("")
    monkeypatch.setenv("AISHELL_CONFIG", "/nowhere/aishell.yaml")
    with pytest.raises(UsageError, match="empty"):
        named_config("")
    with pytest.raises(UsageError, match="empty"):
        find_home("")
