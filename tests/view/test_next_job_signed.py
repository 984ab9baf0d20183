"""The fleet's next-job column (web view, `fleet status` and its --json) reads schedules
with the home's key, as `schedule list` does: a schedule whose row was written into the
store since it was added (serve runs none of its triggers) is shown refused, naming the
field, never as the target's next run.

Before, the column read the store without the key: a schedule loosened or pointed
elsewhere in the store was shown as the target's next job, at its time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from tests.conftest import EditConfig
from tests.fleet.builders import build_fleet, fleet_config
from tests.fleet.test_web import client
from tests.scheduling.test_schedule_sealed import LOOSENED, written

REFUSED = "never: changed outside aishell"


@pytest.fixture
def fleet(edit_config: EditConfig, home: Path, demo_template: Path) -> Config:
    config = fleet_config(edit_config, home, demo_template)
    build_fleet(config)
    return config


def test_a_changed_schedule_is_shown_refused_not_due(fleet: Config) -> None:
    before = {r["target"]: r for r in commands.fleet_status(fleet)["targets"]}["alpha"]
    assert before["next_job"].get("refused") is None and before["next_job"]["at"]
    assert REFUSED not in client(fleet).get("/").text
    written(fleet, "nightly-alpha", "options", json.dumps(LOOSENED))

    rows = {r["target"]: r for r in commands.fleet_status(fleet)["targets"]}
    job = rows["alpha"]["next_job"]
    assert job["schedule"] == "nightly-alpha" and job["at"] is None
    assert "schedule nightly-alpha's options does not match its signature" in job["refused"]

    page = client(fleet).get("/").text
    row = next(line for line in page.splitlines() if "nightly-alpha" in line)
    assert REFUSED in row and " at " not in row.split("nightly-alpha")[1]

    runner = CliRunner()
    shown = runner.invoke(cli, ["fleet", "status"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert "nightly-alpha never: changed outside" in shown.output
    as_json = runner.invoke(cli, ["fleet", "status", "--json"])
    alpha = {r["target"]: r for r in json.loads(as_json.stdout)["targets"]}["alpha"]
    assert alpha["next_job"]["at"] is None and alpha["next_job"]["refused"]


def test_a_refused_schedule_outranks_a_signed_one_on_its_target(fleet: Config) -> None:
    """Another schedule of the target, signed, does not hide the refused one."""
    from tests.fleet.builders import add_nightly_quick

    add_nightly_quick(fleet, "alpha")
    written(fleet, "nightly", "cron", "* * * * *")
    rows = {r["target"]: r for r in commands.fleet_status(fleet)["targets"]}
    job = rows["alpha"]["next_job"]
    assert job["schedule"] == "nightly" and "nightly's cron" in (job.get("refused") or "")
