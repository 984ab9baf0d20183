"""A blank text setting in an agent's file (a purge's date column, a tool a safety
constraint names) is refused when the file is read, in one line naming the file and the
key, exit 2: never taken as a name no column or tool has, which failed only when a run
came to use it ("Table 'app_logs' has no column ''"), or matched nothing at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.models import load_config

AGENTS = Path("config") / "agents"
BLANK = "input is blank; give a value or leave it out"


def _edit(home: Path, agent: str, key: str, value: Any) -> Path:
    path = home / AGENTS / f"{agent}.yaml"
    data = yaml.safe_load(path.read_text())
    section = data[f"{agent}_agent"]
    *parents, last = key.split(".")
    for part in parents:
        section = section.setdefault(part, {})
    section[last] = value
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("blank", ["", "   "])
@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_blank_date_column_is_refused_when_the_file_is_read(
    demo_db: Path, home: Path, command: str, blank: str
):
    path = _edit(home, "log_cleanup", "purge.date_column", blank)
    args = [command, "log-cleanup", "--table", "app_logs", "--retention-days", "30"]
    done = CliRunner().invoke(cli, [*args, "--yes"] if command == "run" else args)
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert line.startswith(f"Error: {path}: log_cleanup_agent.purge.date_column: {BLANK}"), line


CONSTRAINTS = [
    ({"type": "max_table_size", "max_rows": 10, "tools": [""]}, "tools.0"),
    ({"type": "purge_limits", "tools": ["delete_old_records", " "]}, "tools.1"),
    ({"type": "backup_required", "before_operations": [""]}, "before_operations.0"),
]


@pytest.mark.parametrize(("constraint", "key"), CONSTRAINTS)
def test_a_blank_tool_in_a_safety_constraint_is_refused(demo_db: Path, home: Path, constraint, key):
    path = _edit(home, "maintenance", "safety_constraints", [constraint])
    done = CliRunner().invoke(cli, ["plan", "maintenance", "--type", "quick"])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert line.startswith(
        f"Error: {path}: maintenance_agent.safety_constraints.0.{key}: {BLANK}"
    ), line


def test_text_that_is_not_blank_loads(home: Path):
    _edit(home, "log_cleanup", "purge.date_column", "logged_at")
    assert load_config(home=home).agent("log_cleanup").purge.date_column == "logged_at"
