"""`aishell agents show NAME`: one agent whole, as this home runs it: its job keys, the
defaults its config file sets, its capabilities and constraints, the tools it may plan
with the catalog's risk (and a site's tools that join its plans), and its schedules."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from tests.registry.test_registry import catalog, tool

JOINING = tool(
    name="look_after_stats",
    planned={
        "maintenance": {
            "after": "update_table_statistics",
            "types": ["standard"],
            "rationale": "Look at {table}",
        }
    },
)


def _site(home: Path) -> None:
    """fragmentation_threshold 12 in the home's maintenance file; a site tool that joins
    the agent's standard plans; a nightly schedule of it."""
    agent_file = home / "config" / "agents" / "maintenance.yaml"
    data = yaml.safe_load(agent_file.read_text())
    data["maintenance_agent"]["default_config"]["fragmentation_threshold"] = 12
    agent_file.write_text(yaml.safe_dump(data))
    folder = catalog(home, JOINING, folder="site_tools")
    main = home / "config" / "aishell.yaml"
    config = yaml.safe_load(main.read_text())
    config["catalog_paths"] = [str(folder)]
    main.write_text(yaml.safe_dump(config))
    words = ["--cron", "0 2 * * *", "--", "maintenance", "--type", "standard"]
    added = CliRunner().invoke(cli, ["schedule", "add", "nightly", *words])
    assert added.exit_code == 0, added.output


def test_an_agent_is_shown_as_this_home_runs_it(home: Path) -> None:
    _site(home)
    result = CliRunner().invoke(cli, ["agents", "show", "maintenance", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["package"] == "aishell"
    assert shown["config"]["file"] == str(home / "config" / "agents" / "maintenance.yaml")
    assert shown["config"]["default_config"]["fragmentation_threshold"] == 12
    assert {c["type"] for c in shown["config"]["safety_constraints"]} == {"max_table_size"}
    registry = commands.load_catalog(load_config(home=home))
    spec = commands.agent_spec("maintenance")
    assert [(t["name"], t["risk_level"]) for t in shown["tools"]] == [
        (name, registry.get(name).risk_level.value) for name in spec.tools
    ]
    (joining,) = shown["joining_tools"]
    assert (joining["name"], joining["after"], joining["types"]) == (
        "look_after_stats",
        "update_table_statistics",
        ["standard"],
    )
    (schedule,) = shown["schedules"]
    assert (schedule["name"], schedule["cron"], schedule["job"]["type"]) == (
        "nightly",
        "0 2 * * *",
        "standard",
    )
    assert schedule["next_run"]

    human = CliRunner().invoke(cli, ["agents", "show", "maintenance"])
    assert human.exit_code == 0, human.output
    assert "fragmentation_threshold 12" in human.output
    assert "look_after_stats (joins after update_table_statistics)" in human.output
    assert "schedule nightly: 0 2 * * * (UTC), next " in human.output


def test_an_agent_is_named_as_runs_name_it_and_an_unknown_one_is_one_line(home: Path) -> None:
    dashed = CliRunner().invoke(cli, ["agents", "show", "log-cleanup", "--json"])
    assert dashed.exit_code == 0, dashed.output
    shown = json.loads(dashed.stdout)
    assert shown["name"] == "log_cleanup"
    assert shown["schedules"] == [] and shown["joining_tools"] == []
    unknown = CliRunner().invoke(cli, ["agents", "show", "nightly"])
    assert unknown.exit_code == 2
    assert unknown.output == (
        "Error: Unknown agent 'nightly'; agents are: backup, log_cleanup, maintenance\n"
    )


def test_a_schedule_changed_in_the_store_is_shown_refused(home: Path) -> None:
    """As `schedule list` shows it: serve runs none of its triggers, so it has no next
    run; its JSON names the field."""
    from tests.scheduling.test_schedule_sealed import written

    _site(home)
    written(load_config(home=home), "nightly", "cron", "* * * * *")
    result = CliRunner().invoke(cli, ["agents", "show", "maintenance", "--json"])
    (schedule,) = json.loads(result.stdout)["schedules"]
    assert schedule["next_run"] is None
    assert "nightly's cron does not match its signature" in (schedule.get("seal_error") or "")
    human = CliRunner().invoke(cli, ["agents", "show", "maintenance"])
    assert "schedule nightly: * * * * * (UTC), never: changed outside aishell" in human.output
