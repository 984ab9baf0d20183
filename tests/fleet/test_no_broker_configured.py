"""A home whose config names no fleet broker has no fleet: `worker` and `fleet run`
refuse in one line saying what to add, instead of serving or filling the default queue
of whatever broker answers on this machine (shared with anyone's fleet)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from aishell.cli import cli


@pytest.mark.parametrize(
    "args",
    [
        ["worker"],
        ["fleet", "run", "maintenance", "--all-targets"],
    ],
)
def test_no_fleet_block_is_refused_in_one_line(home: Path, demo_db: Path, args: list[str]):
    config = home / "config" / "aishell.yaml"
    data = yaml.safe_load(config.read_text())
    assert "fleet" not in data
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 2, done.output
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert len(lines) == 1, done.output
    assert "no fleet broker is configured; add `fleet: {broker_url: " in lines[0]
    assert "Traceback" not in done.output
