"""Adding a built-in tool by the recipe of docs/architecture.md: the YAML file and the
handler are the whole diff, and the tool then runs where its definition asks the agent
to plan it (`planned:`). The recipe's code is taken from the doc itself, so the doc
cannot drift."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO

SECTION = (REPO / "docs" / "architecture.md").read_text().split("## Adding a built-in tool")[1]
# Each numbered step: a path in backticks, then the code block that goes there.
STEP = re.compile(
    r"^\d\. [^`\n]*`(?P<path>[\w/.]+)`[^\n]*\n\n```\w+\n(?P<code>.*?)```", re.M | re.S
)
IGNORED = shutil.ignore_patterns("__pycache__", "_bundled", "*.pyc")


def _git(checkout: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def _checkout(root: Path) -> Path:
    """A committed copy of the parts of the repository a run uses."""
    checkout = root / "checkout"
    for part in ("aishell", "tools", "config"):
        shutil.copytree(REPO / part, checkout / part, ignore=IGNORED)
    _git(checkout, "init", "-q")
    _git(checkout, "add", "-A")
    _git(checkout, "commit", "-q", "-m", "before")
    return checkout


def _follow_the_recipe(checkout: Path) -> list[str]:
    steps = [(m.group("path"), m.group("code")) for m in STEP.finditer(SECTION)]
    assert len(steps) == 2, steps
    for path, code in steps:
        assert not (checkout / path).exists(), f"{path} is meant to be new"
        (checkout / path).write_text(code)
    return [path for path, _ in steps]


def _aishell(checkout: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "AISHELL_HOME": str(home),
        "NO_COLOR": "1",
    }
    env.pop("AISHELL_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "aishell", *args],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def test_a_tool_added_by_the_recipe_runs_in_the_agents_plan(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    definition, handler = _follow_the_recipe(checkout)

    # The whole change: two new files, nothing else touched.
    status = sorted(_git(checkout, "status", "--porcelain", "--untracked-files=all").splitlines())
    assert status == sorted([f"?? {definition}", f"?? {handler}"])

    home = tmp_path / "home"
    shutil.copytree(checkout / "config", home / "config")
    assert _aishell(checkout, home, "demo").returncode == 0
    shown = _aishell(checkout, home, "tools", "show", "count_table_indexes")
    assert shown.returncode == 0, shown.stderr
    assert "sqlite_master" in shown.stdout

    done = _aishell(checkout, home, "run", "maintenance", "--type", "standard", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    counted = {
        s["params"]["table"]: s["output"]["index_count"]
        for s in result["steps"]
        if s["tool"] == "count_table_indexes"
    }
    assert all(s["status"] == "succeeded" for s in result["steps"])
    # Each right after its table's statistics step, as its definition asks.
    steps = result["steps"]
    # (The demo's small tables share the statistics step: one planned step per table
    # follows it.)
    statistics: dict[str, Any] = {}
    for before, step in itertools.pairwise(steps):
        if before["tool"] == "update_table_statistics":
            statistics = before
        if step["tool"] == "count_table_indexes":
            assert before["tool"] in ("update_table_statistics", "count_table_indexes")
            named = statistics["params"].get("tables") or [statistics["params"].get("table")]
            assert step["params"]["table"] in named
            assert step["rationale"] == f"Count the indexes of {step['params']['table']}"
    with sqlite3.connect(home / "demo.db") as conn:
        expected = {
            table: count
            for table, count in conn.execute(
                "SELECT m.name, (SELECT count(*) FROM sqlite_master i "
                "WHERE i.type = 'index' AND i.tbl_name = m.name) "
                "FROM sqlite_master m WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'"
            )
        }
    assert counted == expected
    assert any(count > 0 for count in counted.values())
    # The report, the last step, comes after the new tool's steps.
    assert result["steps"][-1]["tool"] == "generate_maintenance_report"
    assert result["report"]["summary"].startswith("standard maintenance")
