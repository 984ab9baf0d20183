"""A write that calls a user's function (`DELETE ... WHERE id = f()`) runs that
function's own writes, which no statement shows: the preview names the call, a tool
tagged below high is refused before any yes (as the guard refuses it, whatever was
approved), and one tagged high is shown at high risk and asks. Before, the guard looked
up the functions of reads only: the DELETE ran unattended at its tool's medium risk, and
the function wrote hundreds of rows nobody was shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from aishell import commands
from aishell.config.models import load_config
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.helpers import one_step_plan, use_target
from tests.services import engine

FUNCTION = {
    "postgresql": (
        "CREATE FUNCTION fnote(p integer) RETURNS integer LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO noted VALUES (p); RETURN 1; END $$"
    ),
    "mysql": (
        "CREATE FUNCTION fnote(p INTEGER) RETURNS INTEGER MODIFIES SQL DATA "
        "BEGIN INSERT INTO noted VALUES (p); RETURN 1; END"
    ),
}


# A read that calls it, sent by a tool that also writes: its step, approved high, sends it.
READ_CALLING = [
    "DELETE FROM {table} WHERE id < 0",
    "SELECT count(*) FROM {table} WHERE fnote(id) = 1",
]


def _tool(
    risk: str, sql: str | list[str] = "DELETE FROM {table} WHERE id = fnote(0)"
) -> dict[str, Any]:
    verb = "prune" if isinstance(sql, str) else "count"
    return {
        "name": f"{verb}_noted_{risk}",
        "description": "Delete the row a function picks; a test tool for the guard.",
        "category": "maintenance",
        "risk_level": risk,
        "required_capabilities": ["database_write"],
        "max_execution_time": 60,
        "idempotent": True,
        "params": {
            "type": "object",
            "additionalProperties": False,
            "required": ["table"],
            "properties": {
                "table": {"type": "string", "x-identifier": "table", "description": "A table."}
            },
        },
        "returns": {"type": "object"},
        "examples": [{"params": {"table": "items"}}],
        "locks": {"postgresql": [], "mysql": []},
        "implementations": {"postgresql": {"sql": sql}, "mysql": {"sql": sql}},
    }


def _set_up(home: Path, url: str) -> tuple[Any, str]:
    dialect = "postgresql" if url.startswith("postgresql") else "mysql"
    with engine(url).begin() as conn:
        conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO items VALUES (1), (2), (3)"))
        conn.execute(text("CREATE TABLE noted (id INTEGER)"))
        conn.execute(text(FUNCTION[dialect]))
    use_target(home, url)
    (home / "site_tools").mkdir()
    for risk in ("medium", "high"):
        (home / "site_tools" / f"prune_{risk}.yaml").write_text(yaml.safe_dump(_tool(risk)))
    (home / "site_tools" / "count_high.yaml").write_text(
        yaml.safe_dump(_tool("high", READ_CALLING))
    )
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["catalog_paths"] = ["site_tools"]
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home), dialect


def _noted(url: str) -> int:
    with engine(url).connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM noted")).scalar_one())


def test_a_write_calling_a_user_function_is_refused_below_high(home: Path, server_url: str) -> None:
    config, dialect = _set_up(home, server_url)
    plan = one_step_plan("maintenance", "db", dialect, "prune_noted_medium", {"table": "items"})
    run = commands.apply_plan(config, plan, approver=PreApproved())
    assert run.status == "failed", run.error
    assert "fnote()" in run.error and "tag the tool high" in run.error, run.error
    assert _noted(server_url) == 0


@pytest.mark.parametrize("tool", ["prune_noted_high", "count_noted_high"])
def test_a_statement_calling_a_user_function_is_shown_at_high_risk(
    home: Path, server_url: str, tool: str
) -> None:
    """A write's call, and a read's in a step of a tool tagged high (which the guard
    passes there as a write the step was approved with): named before the yes."""
    config, dialect = _set_up(home, server_url)
    plan = one_step_plan("maintenance", "db", dialect, tool, {"table": "items"})
    asked = commands.apply_plan(config, plan, approver=PreApproved(up_to=RiskLevel.MEDIUM))
    assert asked.status == "waiting_approval", asked.error
    (step,) = asked.steps
    assert step.risk_level == "high"
    assert any("fnote()" in said for said in step.estimate["user_code"]), step.estimate
    assert _noted(server_url) == 0
    ran = commands.apply_plan(config, plan, approver=PreApproved())
    assert ran.status == "completed", ran.error
    assert _noted(server_url) > 0  # once per row it looked at
