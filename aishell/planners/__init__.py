"""Planners turn a request into steps: the agents' rules by default (each agent's
plan_steps), or a model (planners.llm).

Whatever drafts a plan, the same validator and safety policy decide what runs: a
model's plan can do nothing a plan written by hand could not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aishell.agents.limits import DraftLimits
from aishell.files import PrivatePlaces
from aishell.plan.model import Step
from aishell.planners.prompt import CatalogSummary


@dataclass(frozen=True)
class DraftRequest:
    """What a planner may know: the request, the target, who may act, the catalog."""

    text: str
    target: str
    environment: str
    dialect: str
    # Each agent the plan may be for, with its capabilities.
    agents: Mapping[str, frozenset[str]]
    catalog: CatalogSummary
    columns_of: Callable[[str], list[str]]
    # The tables the job names; a drafted plan may touch no other. None: any table.
    scope: frozenset[str] | None = None
    # Folders the plan's files must lie in, and the places in them it may not write.
    folders: tuple[Path, ...] = ()
    private: PrivatePlaces = field(default_factory=PrivatePlaces)
    # What the job holds the plan to (its agent's rules for it).
    limits: DraftLimits = field(default_factory=DraftLimits)


@dataclass(frozen=True)
class Draft:
    agent: str
    steps: list[Step]
    drafted_by: dict[str, Any] = field(default_factory=dict)


__all__ = ["Draft", "DraftRequest"]
