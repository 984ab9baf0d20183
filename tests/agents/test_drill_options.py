"""A restore drill proves the newest backup and takes none: an option about the backup
it would take, its validation or its cleanup is refused in one line naming each, not
dropped unsaid (`--type drill --cleanup` deleted nothing, and said nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (["--cleanup"], "--cleanup: run the drill without it, or give it"),
        (["--quick"], "--quick: run the drill without it"),
        (["--no-verify"], "--no-verify: run the drill without it"),
        (["--lock-wait", "30s"], "--lock-wait: run the drill without it"),
        (["--cleanup", "--quick"], "--quick, --cleanup: run the drill without them"),
    ],
    ids=["cleanup", "quick", "no-verify", "lock-wait", "two"],
)
def test_an_option_a_drill_would_drop_is_refused(
    config: Config, demo_db: Path, given: list[str], named: str
) -> None:
    done = CliRunner().invoke(cli, ["run", "backup", "--type", "drill", *given, "--dry-run"])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert line.startswith("Error: --type drill proves the newest backup"), line
    assert named in line, line
    assert commands.list_runs(config) == []


def test_a_drill_alone_is_planned(config: Config, demo_db: Path) -> None:
    plan = commands.make_plan(config, "backup", {"type": "drill"})
    assert [s.tool for s in plan.steps] == ["find_last_backup", "validate_backup"]
