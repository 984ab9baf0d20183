"""A step whose one statement reads several tables, one of them held past the lock wait:
the step ends skipped, the held table named with the session that holds it, and each
other table as left with it, not as held by "a session that has since gone".

A site's tool (not one that does its tables one at a time, handlers/held.py) that says
`skips_held_tables` meets the lock in one statement over all its tables; which table
the statement waited on is what the server's locks say now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, use_target
from tests.policy.test_held_when_counted import held
from tests.services import engine, scratch_postgresql


def _pair_tool(home: Path, url: str) -> Config:
    """Target `db` at url with a short lock wait, and a site tool counting the rows of
    two tables in one statement."""
    use_target(home, url)
    folder = home / "site_tools"
    folder.mkdir()
    tables = {"type": "string", "x-identifier": "table", "description": "A table."}
    tool: dict[str, Any] = {
        "name": "count_pair",
        "description": "Counts the rows of two tables in one statement.",
        "category": "analysis",
        "risk_level": "safe",
        "required_capabilities": ["database_read"],
        "max_execution_time": 60,
        "max_retries": 0,
        "idempotent": True,
        "skips_held_tables": True,
        "params": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"first": tables, "second": tables},
            "required": ["first", "second"],
        },
        "returns": {"type": "object"},
        "locks": {
            "postgresql": [{"lock": "ACCESS SHARE", "object": "table", "held": "while it counts"}]
        },
        "examples": [{"params": {"first": "a", "second": "b"}}],
        "implementations": {
            "postgresql": {
                "sql": "SELECT (SELECT count(*) FROM {first}) + (SELECT count(*) FROM {second})"
            }
        },
    }
    (folder / "count_pair.yaml").write_text(yaml.safe_dump(tool))
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["catalog_paths"] = ["site_tools"]
    data["targets"]["db"]["lock_timeout_ms"] = 200
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def test_only_the_held_table_is_named_held(home: Path) -> None:
    with scratch_postgresql() as url:
        with engine(url).begin() as conn:
            conn.execute(text("CREATE TABLE free_one (id int)"))
            conn.execute(text("CREATE TABLE held_one (id int)"))
        config = _pair_tool(home, url)
        plan = one_step_plan(
            "maintenance",
            "db",
            "postgresql",
            "count_pair",
            {"first": "free_one", "second": "held_one"},
        )
        with held(url, "LOCK TABLE held_one IN ACCESS EXCLUSIVE MODE") as pid:
            (step,) = commands.apply_plan(config, plan, approver=PreApproved()).steps
    assert step.status == "skipped", (step.status, step.error)
    reasons = {s["table"]: s["reason"] for s in step.output["skipped_tables"]}
    assert set(reasons) == {"free_one", "held_one"}, reasons
    assert f"pid {pid} " in reasons["held_one"], reasons
    assert "held by" not in reasons["free_one"], reasons
    assert "wait on held_one as well" in reasons["free_one"], reasons
    # The step's error is the held table's.
    assert step.error is not None and f"pid {pid} " in step.error
