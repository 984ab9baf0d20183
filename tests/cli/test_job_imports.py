"""A job planned by the rules imports nothing of the model planner (its prompt, its
validator, the Ollama client): each costs every job's start, and only `--planner llm`,
`ask` and `planner check` use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import fresh_interpreter

MODEL_PLANNER = ("aishell.planners", "ollama")

# Run in a fresh interpreter: this test process has imported the planner already.
PROBE = """
import json, sys
from aishell.cli import cli
code = 0
try:
    cli(sys.argv[2:], prog_name="aishell")
except SystemExit as exc:
    code = exc.code
wanted = tuple(json.loads(sys.argv[1]))
print(json.dumps([code, sorted(m for m in sys.modules if m.startswith(wanted))]))
"""


def _imported(home: Path, *args: str) -> tuple[int, list[str]]:
    done = fresh_interpreter(PROBE, json.dumps(MODEL_PLANNER), "--home", str(home), *args)
    assert done.returncode == 0, done.stderr
    code, found = json.loads(done.stdout.strip().splitlines()[-1])
    return code, found


@pytest.mark.parametrize(
    "args",
    [
        ["run", "maintenance", "--type", "quick", "--json"],
        ["plan", "maintenance", "--type", "full", "--json"],
        ["run", "log-cleanup", "--table", "app_logs", "--dry-run", "--json"],
    ],
    ids=["run", "plan", "log cleanup dry run"],
)
def test_a_job_planned_by_the_rules_imports_no_model_planner(
    home: Path, demo_db: Path, args: list[str]
) -> None:
    code, found = _imported(home, *args)
    assert code == 0 and found == [], (code, found)


def test_the_probe_sees_the_model_planner_where_it_is_used(home: Path, demo_db: Path) -> None:
    """`planner check` asks a server that is not there (its exit says so), through the
    model planner's client."""
    code, found = _imported(home, "planner", "check", "--json")
    assert code != 0 and "aishell.planners.ollama" in found, (code, found)
