"""What a newcomer's agent gets wrong at load is refused there, saying what: an agent
class that plans nothing (BaseAgent's plan_steps not defined) is skipped, not found out
at its first plan; and names that disagree say which name each one gives."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.agents.conftest import Install
from tests.agents.test_plugin_guards import AGENT, _agent, _commands_work, _failed


def test_an_agent_that_does_not_define_plan_steps_is_skipped_at_load(
    demo_db: Path, site: Install
) -> None:
    name, package = _agent(site, extra="Made.plan_stepz = Made.plan_steps\ndel Made.plan_steps\n")
    assert _failed(package) == [
        f"{name}: it does not define plan_steps(self, job, ctx), which plans its job"
    ]
    _commands_work(package)


def test_a_spec_named_otherwise_than_its_entry_point_says_both_names(
    demo_db: Path, site: Install
) -> None:
    entry = f"made_{uuid.uuid4().hex[:8]}"
    body = AGENT.replace("NAME", "maintenance").replace("OPTIONS", "()")
    body = body.replace("PLANNED", "[]")
    package = site({"agent.py": body}, agents={entry: "PKG.agent:Made"})
    assert _failed(package) == [
        f"{entry}: its spec names it 'maintenance', but its entry point '{entry}': "
        "they must be the same"
    ]
    _commands_work(package)


def test_an_entry_point_name_that_is_no_name_says_so(demo_db: Path, site: Install) -> None:
    body = AGENT.replace("NAME", "Made-It").replace("OPTIONS", "()").replace("PLANNED", "[]")
    package = site({"agent.py": body}, agents={"Made-It": "PKG.agent:Made"})
    assert _failed(package) == [
        "Made-It: its name 'Made-It' must be lower-case letters, digits and _"
    ]
