"""A tool a safety constraint names (purge_limits.tools, max_table_size.tools,
backup_required.before_operations) must be one of the catalog's: a misspelt one holds no
step to the constraint, so its check is off for the tool meant (a purge of nearly every
row ran unasked). It is refused in one line naming the file and the key, by every
command that loads the agent (exit 2, before anything runs) and by the doctor."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.models import PurgeLimits, load_config
from aishell.errors import ConfigError
from tests.conftest import REPO, EditConfig
from tests.helpers import read_yaml, write_yaml

BUSINESS_HOURS = {"type": "business_hours", "hours": [9]}
# Each misspelt name, in the constraint of its kind; the key and the name meant.
TYPOS: list[tuple[dict[str, Any], str, str, str]] = [
    (
        {"type": "purge_limits", "min_retention_days": 7, "tools": ["delete_old_record"]},
        "tools.0",
        "delete_old_record",
        "delete_old_records",
    ),
    (
        {
            "type": "max_table_size",
            "max_rows": 10,
            "tools": ["vacuum_full_table", "optimise_table"],
        },
        "tools.1",
        "optimise_table",
        "optimize_table",
    ),
    (
        {"type": "backup_required", "before_operations": ["optimise_table"]},
        "before_operations.0",
        "optimise_table",
        "optimize_table",
    ),
]


def _refusal(path: Path, key: str, tool: str, meant: str, at: int = 1) -> str:
    return (
        f"{path}: log_cleanup_agent.safety_constraints.{at}.{key}: no tool named '{tool}' in "
        f"the catalog, so the constraint would hold no step; did you mean '{meant}'?"
    )


def _constrain(home: Path, *constraints: dict[str, Any]) -> Path:
    path = home / "config" / "agents" / "log_cleanup.yaml"
    data = read_yaml(path)
    data["log_cleanup_agent"]["safety_constraints"] = list(constraints)
    write_yaml(path, data)
    return path


@pytest.mark.parametrize(("constraint", "key", "tool", "meant"), TYPOS)
def test_a_misspelt_tool_in_a_constraint_is_refused_naming_the_file_and_the_key(
    home: Path, constraint: dict[str, Any], key: str, tool: str, meant: str
) -> None:
    path = _constrain(home, BUSINESS_HOURS, constraint)
    with pytest.raises(ConfigError) as refused:
        load_config(home=home).agent("log_cleanup")
    assert str(refused.value) == _refusal(path, key, tool, meant)


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM app_logs").fetchone()[0])


PURGE = ["log-cleanup", "--table", "app_logs", "--retention-days", "1"]


@pytest.mark.parametrize(
    "command",
    [
        ["run", *PURGE, "--non-interactive"],
        ["plan", *PURGE],
        ["apply", "{plan}", "--non-interactive"],
        ["schedule", "add", "pr_typo_nightly", "--cron", "0 2 * * *", "--", *PURGE],
        ["ask", "--non-interactive", "purge app_logs rows older than 1 day"],
        ["agents", "show", "log-cleanup"],
    ],
)
def test_every_command_that_loads_the_agent_refuses_it_and_nothing_is_deleted(
    demo_db: Path, home: Path, tmp_path: Path, command: list[str]
) -> None:
    saved = tmp_path / "plan.json"
    made = CliRunner().invoke(cli, ["plan", *PURGE, "--out", str(saved)])
    assert made.exit_code == 0, made.output
    before = _rows(demo_db)
    constraint, key, tool, meant = TYPOS[0]
    path = _constrain(home, constraint)
    args = [str(saved) if each == "{plan}" else each for each in command]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 2, done.output
    assert done.output.splitlines() == [f"Error: {_refusal(path, key, tool, meant, at=0)}"]
    assert _rows(demo_db) == before


def test_the_doctor_names_the_misspelt_tool(home: Path) -> None:
    constraint, key, tool, meant = TYPOS[2]
    path = _constrain(home, BUSINESS_HOURS, constraint)
    done = CliRunner().invoke(cli, ["doctor", "--json"])
    problems = json.loads(done.stdout)["problems"]
    assert {
        "problem": _refusal(path, key, tool, meant),
        "fix": "correct the key it names in that file",
    }.items() <= problems[0].items(), problems
    assert len([p for p in problems if p["problem"].startswith(str(path))]) == 1


def test_a_tool_of_the_sites_own_folder_may_be_named(home: Path, edit_config: EditConfig) -> None:
    """The catalog the names are held to is the whole of it: catalog_paths too."""
    site = home / "site_tools"
    site.mkdir()
    shutil.copy(REPO / "tests" / "site_tools" / "slow_append.yaml", site)
    named = read_yaml(site / "slow_append.yaml")["name"]
    config = edit_config(
        {"catalog_paths": ["site_tools"]},
        log_cleanup={"safety_constraints": [{"type": "purge_limits", "tools": [named]}]},
    )
    [limits] = config.agent("log_cleanup").constraints
    assert isinstance(limits, PurgeLimits) and limits.tools == [named]
    # Without the site's folder, the same name is none of the catalog's.
    edit_config({"catalog_paths": []})
    with pytest.raises(ConfigError, match=rf"tools.0: no tool named '{named}' in the catalog"):
        load_config(home=home).agent("log_cleanup")


def test_the_shipped_agent_files_name_only_the_catalogs_tools(home: Path) -> None:
    config = load_config(home=home)
    for agent in ("backup", "log_cleanup", "maintenance"):
        config.agent(agent)
