"""A tool asks an agent to plan it (`planned:` in its definition): the maintenance agent
places its step after each of the named step's tables, in the types listed, and only
on an engine the tool implements; a `planned:` that could not be followed is refused
when the catalog is read, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aishell.agents.base import PlannedTool, PlanningContext
from aishell.agents.maintenance import MaintenanceAgent
from aishell.commands.planner import planned_tools
from aishell.config.models import AgentDefaults
from aishell.config.resources import bundled_catalog_dir
from aishell.errors import CatalogError
from aishell.registry import load_registry
from tests.registry.test_registry import catalog, tool

WHERE = {"after": "count_rows_here", "types": ["standard"], "rationale": "Look at {table}"}


def _planned(**where: Any) -> dict[str, Any]:
    return tool(name="look_here", planned={"maintenance": {**WHERE, **where}})


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (
            tool(name="look_here", planned={"backup": WHERE}),
            "planned: no agent 'backup' plans catalog tools; agents: maintenance",
        ),
        (_planned(types=["weekly"]), "planned.maintenance.types: no maintenance type 'weekly'"),
        (_planned(after="no_such_tool"), "planned.maintenance.after: no tool named 'no_such_tool'"),
        (
            {
                **_planned(),
                "params": {"type": "object", "properties": {}},
                "examples": [{"params": {}}],
            },
            "planned: a tool an agent plans takes its table as the param 'table'",
        ),
        (_planned(rationale=""), "planned.maintenance.rationale"),
        (_planned(when="always"), "planned.maintenance"),
    ],
)
def test_a_planned_that_cannot_be_followed_is_refused_naming_the_key(
    tmp_path: Path, data: dict[str, Any], said: str
) -> None:
    with pytest.raises(CatalogError, match=said.replace("(", r"\(").replace(")", r"\)")):
        load_registry([catalog(tmp_path, tool(), data)])


def test_the_agent_plans_a_tool_after_each_table_step_it_names_in_the_types_listed() -> None:
    look = PlannedTool("look_here", "update_table_statistics", ("standard",), "Look at {table}")
    ctx = PlanningContext(
        target="t", dialect="sqlite", tables=("a", "b"), defaults=AgentDefaults(), planned=(look,)
    )
    agent = MaintenanceAgent()
    standard = agent.plan_steps({"type": "standard", "rebuild_indexes": True}, ctx)
    tools = [(s.tool, s.params.get("table") or s.params.get("tables")) for s in standard]
    # The two small tables share the steps of the work; the planned tool follows the
    # shared step it names, once per table.
    assert tools[1:-1] == [
        ("analyze_table_fragmentation", ["a", "b"]),
        ("update_table_statistics", ["a", "b"]),
        ("look_here", "a"),
        ("look_here", "b"),
    ]
    assert [s.rationale for s in standard if s.tool == "look_here"] == ["Look at a", "Look at b"]
    # The report lists the new steps with the others.
    actions = standard[-1].params["actions"]
    assert [a["tool"] for a in actions].count("look_here") == 2
    # Not in a type it does not list.
    full = agent.plan_steps({"type": "full", "rebuild_indexes": True}, ctx)
    assert "look_here" not in {s.tool for s in full}


def test_only_tools_implemented_on_the_targets_engine_are_offered(tmp_path: Path) -> None:
    registry = load_registry(
        [bundled_catalog_dir(), catalog(tmp_path, _planned(after="update_table_statistics"))]
    )
    assert [p.tool for p in planned_tools(registry, "maintenance", "sqlite")] == ["look_here"]
    assert planned_tools(registry, "maintenance", "postgresql") == ()
    assert planned_tools(registry, "backup", "sqlite") == ()
    # The bundled catalog plans by its agents' own rules alone.
    assert planned_tools(load_registry([bundled_catalog_dir()]), "maintenance", "sqlite") == ()
