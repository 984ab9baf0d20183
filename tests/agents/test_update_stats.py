"""update_stats (--update-stats/--no-update-stats): maintenance without its statistics
steps; quick maintenance, which is nothing else, refused as empty."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import UsageError

STATISTICS = "update_table_statistics"


def tools(config: Config, job: dict) -> list[str]:
    preview = commands.plan_job(config, "maintenance", job)
    return [s.tool for s in preview.plan.steps]


def test_no_update_stats_leaves_out_every_statistics_step(config: Config, demo_db: Path) -> None:
    job = {"type": "standard", "tables": ["orders", "users"]}
    # Two small tables: one shared step of each.
    assert tools(config, job).count(STATISTICS) == 1
    without = tools(config, {**job, "update_stats": False})
    assert STATISTICS not in without
    assert without.count("analyze_table_fragmentation") == 1
    for kind in ("full", "standard"):
        assert STATISTICS not in tools(config, {"type": kind, "update_stats": False})
    assert without[-1] == "generate_maintenance_report"


def test_quick_maintenance_without_statistics_is_refused_as_empty(
    config: Config, demo_db: Path
) -> None:
    with pytest.raises(UsageError, match="Quick maintenance only refreshes statistics"):
        commands.plan_job(config, "maintenance", {"type": "quick", "update_stats": False})


def test_the_flag_on_the_command_line(demo_db: Path) -> None:
    runner = CliRunner()
    args = ["plan", "maintenance", "--type", "full", "--tables", "orders", "--json"]
    planned = runner.invoke(cli, [*args, "--no-update-stats"])
    assert planned.exit_code == 0, planned.output
    steps = [s["tool"] for s in json.loads(planned.stdout)["steps"]]
    assert STATISTICS not in steps and "optimize_table" in steps
    assert STATISTICS in [s["tool"] for s in json.loads(runner.invoke(cli, args).stdout)["steps"]]
    refused = runner.invoke(cli, ["run", "maintenance", "--type", "quick", "--no-update-stats"])
    assert refused.exit_code == 2
    assert refused.output.strip().splitlines() == [
        "Error: Quick maintenance only refreshes statistics, so --no-update-stats leaves it "
        "nothing to do; use --type standard or full, or drop --no-update-stats"
    ]
