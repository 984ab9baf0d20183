"""The default planner: each agent's own rules, the same plan for the same job."""

from __future__ import annotations

from aishell.agents import get_agent
from aishell.errors import UsageError
from aishell.planners import Draft, DraftRequest


class RulesPlanner:
    name = "rules"

    def draft(self, request: DraftRequest) -> Draft:
        if request.job is None or request.context is None or len(request.agents) != 1:
            raise UsageError(
                "The rule-based planner plans jobs (`aishell run ...`); a request in words "
                "needs the llm planner"
            )
        agent = next(iter(request.agents))
        return Draft(agent, get_agent(agent).plan_steps(request.job, request.context))
