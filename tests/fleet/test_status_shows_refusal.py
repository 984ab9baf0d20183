"""`aishell fleet status` (its table and --json) says, of each target's last run, what
`fleet show` says of it: its fleet task's last delivery refused (when, on which host,
why) while that refusal stands, null otherwise; the same `delivery_refused` field.

Before, `fleet status` showed such a run interrupted with its old error, and nothing of
the refusal that left nothing in the queue to resume it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from markupsafe import escape
from starlette.testclient import TestClient

from aishell import commands
from aishell.cli import cli
from aishell.commands.fleet import run_fleet_target
from aishell.errors import AishellError
from aishell.view.web import make_app
from tests.conftest import EditConfig
from tests.fleet.test_broker_faults import BROKERS, broker_at, fleet_home
from tests.fleet.test_refused_before_resume import carried, interrupted_fleet_run, worker_config


def test_fleet_status_shows_the_standing_refusal_of_a_target_s_last_run(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    """`fleet status` (table and --json) says what `fleet show` says of the last run of
    each target: its last delivery refused, while that stands; null otherwise."""
    config = fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    fleet_id, run_id = interrupted_fleet_run(config, "second")
    interrupted_fleet_run(config, "third")  # interrupted, never refused
    with pytest.raises(AishellError):
        run_fleet_target(worker_config(home, None), fleet_id, "second", carried(config))
    (shown,) = commands.fleet_summary(config, fleet_id)["runs"]
    assert shown["delivery_refused"] is not None, shown

    as_json = CliRunner().invoke(cli, ["--home", str(home), "fleet", "status", "--json"])
    rows = {row["target"]: row for row in json.loads(as_json.stdout)["targets"]}
    assert rows["second"]["last_run"]["run_id"] == run_id
    assert rows["second"]["last_run"]["status"] == "interrupted"
    assert rows["second"]["last_run"]["delivery_refused"] == shown["delivery_refused"]
    assert rows["third"]["last_run"]["delivery_refused"] is None
    assert rows["demo"]["last_run"] is None
    table = CliRunner().invoke(cli, ["--home", str(home), "fleet", "status"])
    flat = " ".join(table.output.replace("│", " ").split())
    assert "its last delivery was refused on" in flat, table.output
    assert "Unknown target" in flat and flat.count("its last delivery was refused") == 1
    # The web view's fleet page says it under the run's status too.
    view = TestClient(make_app(config, None), "http://127.0.0.1:8765", client=("127.0.0.1", 50000))
    page = view.get("/").text
    assert page.count("its last delivery was refused on") == 1, page
    assert str(escape(shown["delivery_refused"]["error"])) in page

    # Resumed where it is known: the refusal no longer stands.
    assert run_fleet_target(config, fleet_id, "second", carried(config)) == "completed"
    (row,) = [r for r in commands.fleet_status(config)["targets"] if r["target"] == "second"]
    assert row["last_run"]["status"] == "completed"
    assert row["last_run"]["delivery_refused"] is None
