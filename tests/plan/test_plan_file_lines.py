"""A saved plan, or a drafted one, that is refused is refused in one line of a bounded
length that names what is wrong: the file, the key it holds twice, the tool missing and
how many steps use it; never a name or a list echoed whole."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.config.resources import bundled_catalog_dir
from aishell.errors import PlanError
from aishell.planners.vet import CatalogView, vet_answer
from aishell.registry import load_registry
from aishell.state import signing
from tests.helpers import query
from tests.plan.test_signed_plans import resign

# Far above any message's length, far below a name or a list echoed whole.
LINE_LIMIT = 2_000
PURGE = {"table": "app_logs", "date_column": "created_at", "retention_days": 400}


def _rows(demo_db: Path) -> int:
    return int(query(demo_db, "SELECT count(*) FROM app_logs")[0][0])


def _refused_line(result: Any) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output[:500]
    assert len(lines[0]) < LINE_LIMIT, len(lines[0])
    return lines[0]


# --- a key twice --------------------------------------------------------------------


def test_a_key_twice_in_a_saved_plan_is_refused_naming_the_file_and_key(
    config: Config, demo_db: Path
) -> None:
    """The finding: `"retention_days": 1.0` before the signed 400 applied; json.loads kept
    the last, so the signature still matched, and a reader of the file sees 1."""
    out = demo_db.parent / "plan.json"
    commands.plan_job(config, "log_cleanup", PURGE, out=out)
    text = out.read_text()
    # The last one: the purge step's own params (the job and the preview have it too).
    at = text.rindex('"retention_days": 400')
    assert at > text.index('"steps": [')
    out.write_text(f'{text[:at]}"retention_days": 1.0,\n      {text[at:]}')
    rows = _rows(demo_db)

    line = _refused_line(CliRunner().invoke(cli, ["apply", str(out), "--yes"]))

    assert line == (
        f"Error: Plan file {out} holds the key 'retention_days' twice in one object; aishell "
        "writes each key once: save the plan again (aishell plan ... --out)"
    )
    assert _rows(demo_db) == rows and commands.list_runs(config) == []


def test_a_key_twice_anywhere_is_refused_even_where_both_values_agree(
    config: Config, demo_db: Path
) -> None:
    out = demo_db.parent / "plan.json"
    commands.plan_job(config, "maintenance", {"type": "quick"}, out=out)
    text = out.read_text()
    agent = text.index('"agent": ')
    out.write_text(f'{text[:agent]}"agent": "maintenance",\n  {text[agent:]}')
    with pytest.raises(PlanError, match=f"^Plan file {out} holds the key 'agent' twice"):
        commands.load_plan_file(out)


# --- the file named ------------------------------------------------------------------


def test_a_plan_file_whose_hash_does_not_match_is_named(config: Config, demo_db: Path) -> None:
    out = demo_db.parent / "plan.json"
    commands.plan_job(config, "log_cleanup", PURGE, out=out)
    data = json.loads(out.read_text())
    data["steps"][-1]["params"]["retention_days"] = 1
    out.write_text(json.dumps(data))

    line = _refused_line(CliRunner().invoke(cli, ["apply", str(out)]))

    assert line == (
        f"Error: Plan file {out}: plan hash does not match its contents; the plan was edited"
    )


# --- names of any length -------------------------------------------------------------


def _vetted(answer: dict[str, Any]) -> Any:
    """A model's answer vetted for the maintenance agent on the demo's one table."""
    return vet_answer(
        answer,
        agents={"maintenance": frozenset({"database_read", "database_write"})},
        registry=load_registry([bundled_catalog_dir()]),
        dialect="sqlite",
        target="demo",
        catalog=CatalogView(tables=frozenset({"users"}), columns_of=lambda _t: ["id"]),
        max_steps=10,
    )


def test_a_drafted_name_of_any_length_is_clipped_in_its_rejection() -> None:
    """The finding: a 100,000-character table name came back whole in the rejection."""
    name = "t" * 100_000
    answer = {
        "agent": "maintenance",
        "steps": [
            {"tool": "update_table_statistics", "params": {"table": name}},
            {"tool": name, "params": {}, name: 1},
            {"id": name, "tool": "update_table_statistics", "params": {"table": "users"}},
        ],
        name: 1,
    }
    vetted = _vetted(answer)
    assert not vetted.accepted and len(vetted.problems) == 3
    assert all(len(problem) < 300 for problem in vetted.problems), [len(p) for p in vetted.problems]
    # The steps' own faults first: the names checked once those are fixed.
    vetted = _vetted(
        {"agent": "maintenance", "steps": [answer["steps"][0], {"tool": name, "params": {}}]}
    )
    assert all(len(problem) < 300 for problem in vetted.problems), [len(p) for p in vetted.problems]
    assert any(re.search(r"table 't{20,}\.\.\.' does not exist", p) for p in vetted.problems)
    assert any(p.startswith("step_1 (ttttt") for p in vetted.problems)


def test_a_plan_file_of_many_faults_names_the_first_and_counts_the_rest(
    config: Config, demo_db: Path
) -> None:
    out = demo_db.parent / "plan.json"
    commands.plan_job(config, "maintenance", {"type": "quick"}, out=out)
    data = json.loads(out.read_text())
    data["steps"] = [{"id": f"step_{i}", "tool": "x", "params": {}} for i in range(3000)]
    out.write_text(json.dumps(data))

    line = _refused_line(CliRunner().invoke(cli, ["apply", str(out)]))

    assert line.startswith(f"Error: Plan file {out}: steps[0]: missing key 'rationale'; ")
    assert line.endswith("; and 2995 more")


def test_a_plan_whose_agent_and_tools_are_not_installed_names_each_tool_once(
    config: Config, demo_db: Path
) -> None:
    """The finding: 3,000 steps of an uninstalled plugin's tool printed one 180 KB line,
    "No tool named 'ev_attr'" 3,000 times, and never said the agent was gone."""
    out = demo_db.parent / "plan.json"
    commands.plan_job(config, "maintenance", {"type": "quick"}, out=out)
    data = json.loads(out.read_text())
    data["agent"] = "ev_agent"
    data["steps"] = [
        {
            "id": f"step_{i}",
            "tool": "ev_attr" if i % 3 else "ev_size",
            "params": {},
            "rationale": "",
        }
        for i in range(3000)
    ]
    data["tool_fingerprints"] = {"ev_attr": "0" * 64, "ev_size": "0" * 64}
    resign(demo_db.parent, data)
    out.write_text(json.dumps(data))
    assert signing.load_key(demo_db.parent) is not None

    line = _refused_line(CliRunner().invoke(cli, ["apply", str(out)]))

    assert line == (
        "Error: The plan uses tools the catalog lacks: 'ev_attr' (2000 steps); 'ev_size' "
        "(1000 steps); the plan's agent 'ev_agent' is not installed either: install the "
        "package that provides it, or make a new plan"
    )
