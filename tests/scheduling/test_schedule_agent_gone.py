"""A schedule whose agent is no longer installed (its package uninstalled since the
schedule was added) is flagged where a DBA looks before 2 a.m.: `schedule list` says
its triggers fail, and `aishell doctor` lists it as a problem with the fix."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.models import Config
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from tests.scheduling.test_schedules import add

GONE = "tidy_uninstalled"


def _left_by_a_removed_package(config: Config) -> None:
    """The row a package's schedule leaves once the package is gone: as `schedule add`
    stored it, its agent now unknown."""
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        store.add_schedule(
            name="tidy_nightly",
            cron="0 3 * * *",
            timezone="UTC",
            words=[GONE, "--table", "app_logs"],
            agent=GONE,
            job={"table": "app_logs"},
            target="demo",
            options={},
        )


def test_a_schedule_whose_agent_is_gone_is_flagged_in_the_list_and_by_doctor(
    demo_db: Path, config: Config
) -> None:
    add(config, "fine", "0 4 * * *", ["maintenance", "--type", "quick"])
    _left_by_a_removed_package(config)
    listed = CliRunner().invoke(cli, ["schedule", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    by_name = {s["name"]: s for s in json.loads(listed.stdout)["schedules"]}
    assert by_name["fine"]["agent_error"] is None
    said = by_name["tidy_nightly"]["agent_error"]
    assert said.startswith(f"schedule tidy_nightly runs the agent '{GONE}', which is not installed")
    assert said.endswith("each of its triggers fails")

    shown = CliRunner().invoke(cli, ["schedule", "list"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "fails: its agent is not installed" in shown.output

    doctor = CliRunner().invoke(cli, ["doctor", "--json"])
    problems = json.loads(doctor.stdout)["problems"]
    (problem,) = [p for p in problems if GONE in p["problem"]]
    assert problem["problem"] == said
    assert "aishell schedule remove tidy_nightly" in problem["fix"]
    assert doctor.exit_code != 0


def test_a_schedule_whose_target_is_gone_is_flagged_in_the_list_and_by_doctor(
    demo_db: Path, home: Path
) -> None:
    """Its target removed from the config since: every trigger would fail with
    "Unknown target"; the list and doctor say so before 2 a.m."""
    import yaml

    from aishell.config.models import load_config

    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["spare"] = dict(data["targets"][data["default_target"]])
    path.write_text(yaml.safe_dump(data))
    add(load_config(home=home), "spare_nightly", "0 4 * * *", ["maintenance", "--target", "spare"])
    del data["targets"]["spare"]
    path.write_text(yaml.safe_dump(data))

    listed = CliRunner().invoke(cli, ["schedule", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [schedule] = json.loads(listed.stdout)["schedules"]
    said = schedule["target_error"]
    assert said.startswith("schedule spare_nightly runs on target 'spare', which is not configured")
    shown = CliRunner().invoke(cli, ["schedule", "list"], env={"COLUMNS": "200"})
    assert "fails: its target is not configured" in shown.output
    doctor = CliRunner().invoke(cli, ["doctor", "--json"])
    (problem,) = [p for p in json.loads(doctor.stdout)["problems"] if "'spare'" in p["problem"]]
    assert problem["problem"] == said
    assert "aishell schedule remove spare_nightly" in problem["fix"]
    assert doctor.exit_code != 0
