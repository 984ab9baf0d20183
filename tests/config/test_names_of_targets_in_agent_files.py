"""A target named in an agent's file (a purge's replicas) or by an alert must be a
configured target: a typo is refused when the file is read, one line naming the file and
the key, exit 2, before a plan is shown, not half-way through a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.models import load_config
from aishell.errors import ConfigError

LOG_CLEANUP = Path("config") / "agents" / "log_cleanup.yaml"


def _replicas(home: Path, names: list[str]) -> Path:
    path = home / LOG_CLEANUP
    data = yaml.safe_load(path.read_text())
    data["log_cleanup_agent"]["purge"]["replicas"] = names
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_replica_that_is_no_target_is_refused_at_load(demo_db: Path, home: Path, command: str):
    path = _replicas(home, ["demo", "nope"])
    args = [command, "log-cleanup", "--table", "app_logs", "--retention-days", "30"]
    done = CliRunner().invoke(cli, [*args, "--yes"] if command == "run" else args)
    assert done.exit_code == 2, done.output
    assert done.output.splitlines() == [
        f"Error: {path}: log_cleanup_agent.purge.replicas.1: 'nope' is not a target; "
        "targets are: demo"
    ]


def test_replicas_that_are_targets_load(home: Path):
    _replicas(home, ["demo"])
    assert load_config(home=home).agent("log_cleanup").purge.replicas == ["demo"]


def test_an_empty_replica_name_is_no_target(home: Path):
    _replicas(home, [""])
    with pytest.raises(ConfigError, match=r"replicas.0: '' is not a target"):
        load_config(home=home).agent("log_cleanup")


def test_an_alert_on_a_target_that_is_not_configured_is_refused_at_load(home: Path):
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["monitoring"] = {"alerts": [{"condition": "run_failed", "targets": ["demo", "dmeo"]}]}
    path.write_text(yaml.safe_dump(data))
    done = CliRunner().invoke(cli, ["alerts", "check"])
    assert done.exit_code == 2, done.output
    assert done.output.splitlines() == [
        f"Error: {path}: monitoring.alerts.0.targets.1: 'dmeo' is not a target; targets are: demo"
    ]
