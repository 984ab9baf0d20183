"""The constraints a model's draft is judged by: each of its steps by those of the
agent the draft names and of every configured agent that plans the step's tool.

A model picks the agent of a request in words, and the constraints are each agent's
own (config/agents/*.yaml): were the draft judged by its named agent's alone, naming
another agent that declares the same tool (log_cleanup and maintenance both plan
optimize_table) would escape a maintenance window, a backup needed first or a
retention floor. A plan by an agent's rules is judged by that agent's constraints, as
before; nothing here applies to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aishell.config.models import PurgeLimits
from aishell.plan.model import Plan
from aishell.policy.rules import SafetyPolicy, StepFacts, Verdict
from aishell.registry import ToolDefinition
from aishell.risk import RiskLevel


@dataclass(frozen=True)
class AgentRules:
    """A configured agent's tools (those it declares, and those the catalog asks it to
    plan) and the constraints its config sets."""

    name: str
    tools: frozenset[str]
    constraints: tuple[Any, ...]


def drafted_by_model(plan: Plan) -> bool:
    """Whether the plan's steps are a model's (not its agent's rules, nor the rules a
    rejected draft fell back on)."""
    return plan.drafted_by.get("planner") == "llm"


@dataclass(frozen=True)
class DraftedPolicy(SafetyPolicy):
    """The policy of a model's draft: a step is judged by its tool's constraints
    (`by_tool`); `constraints` holds every one of them, for what gather_facts reads
    ahead of the verdict (a row limit, the history a window needs)."""

    by_tool: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def of_tool(self, tool: str) -> SafetyPolicy:
        """The plain policy of one tool's steps."""
        constraints = self.by_tool.get(tool, tuple(self.constraints))
        return SafetyPolicy(self.safety_level, self.environment, self.target, constraints)

    def check(self, facts: StepFacts) -> Verdict:
        return self.of_tool(facts.tool.name).check(facts)

    def purge_limits(self, tool: str) -> PurgeLimits | None:
        """The tightest share limit among the agents that judge the tool."""
        return self.of_tool(tool).purge_limits(tool)

    def window_closes(
        self, tool: ToolDefinition, now: datetime, risk: RiskLevel | None = None
    ) -> datetime | None:
        return self.of_tool(tool.name).window_closes(tool, now, risk)


def drafted_policy(policy: SafetyPolicy, plan: Plan, agents: Iterable[AgentRules]) -> SafetyPolicy:
    """The policy a plan's steps are judged by: `policy` (its agent's) for a plan not
    drafted by a model; for a draft, each step's tool by the constraints of the agent
    the plan names (`policy`'s) and of each of `agents` that plans the tool."""
    if not drafted_by_model(plan):
        return policy
    others = [a for a in agents if a.name != plan.agent]
    by_tool: dict[str, tuple[Any, ...]] = {}
    for tool in dict.fromkeys(s.tool for s in plan.steps):
        sets = [policy.constraints, *(a.constraints for a in others if tool in a.tools)]
        by_tool[tool] = _joined(policy, sets)
    every = _joined(policy, [policy.constraints, *by_tool.values()])
    return DraftedPolicy(
        policy.safety_level, policy.environment, policy.target, every, by_tool=by_tool
    )


def _joined(policy: SafetyPolicy, sets: Iterable[Iterable[Any]]) -> tuple[Any, ...]:
    """The constraints of several agents, each once: an agent that sets no purge limits
    is held to the default ones, as its own plans are, whatever another agent sets."""
    joined: list[Any] = []
    for constraints in sets:
        own = SafetyPolicy(
            policy.safety_level, policy.environment, policy.target, tuple(constraints)
        )
        joined += [c for c in own.all_constraints if c not in joined]
    return tuple(joined)
