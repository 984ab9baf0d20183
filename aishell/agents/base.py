"""What every agent provides: validate its job, check it against the target, say which
facts planning it reads, and plan it as steps."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy.engine import Connection

from aishell.config.models import AgentConfig, AgentDefaults, PurgeSettings
from aishell.errors import UsageError
from aishell.plan.model import Step

# What planning may read for a job beyond the target's tables, each at a cost:
# "urgency", how soon each table needs work (a query of the server's catalog);
# "skipped", the tables the last run could not lock (a read of the state store).
CatalogFact = Literal["urgency", "skipped"]


@dataclass(frozen=True)
class PlannedTool:
    """A catalog tool the agent plans on the tool's own word (its `planned:`): after each
    of the agent's steps of `after` on a table, in the job types listed."""

    tool: str
    after: str
    types: tuple[str, ...]
    rationale: str  # {table} stands for the table

    def step_rationale(self, table: str) -> str:
        return self.rationale.replace("{table}", table)


@dataclass(frozen=True)
class PlanningContext:
    """What an agent may know when planning: the target and its tables, never row data."""

    target: str
    dialect: str
    tables: tuple[str, ...]
    defaults: AgentDefaults
    # How soon each table needs work (higher first), from the catalog.
    urgency: Mapping[str, float] = field(default_factory=dict)
    # Each table's bytes with its indexes, as the catalog estimates them (None: unknown).
    sizes: Mapping[str, int | None] = field(default_factory=dict)
    purge: PurgeSettings = field(default_factory=lambda: PurgeSettings())
    # Tables the last run skipped (another session held them): planned first this time.
    first: tuple[str, ...] = ()
    # The catalog's tools that ask this agent to plan them, implemented on this dialect.
    planned: tuple[PlannedTool, ...] = ()


class Agent(Protocol):
    name: str

    def normalize_job(self, job: dict[str, Any], config: AgentConfig) -> dict[str, Any]:
        """The job with defaults (from the agent's config) filled in; a bad value is a
        UsageError."""
        ...

    def check_job(self, job: dict[str, Any], conn: Connection) -> None:
        """Refuse, before anything runs, a normalized job that cannot run on this target
        (a TargetError or UsageError saying why); nothing to check is no error."""
        ...

    def catalog_needs(self, job: dict[str, Any]) -> frozenset[CatalogFact]:
        """The facts planning this normalized job reads: only those are read, so a job
        does not pay for what another agent's plans use."""
        ...

    def plan_steps(self, job: dict[str, Any], ctx: PlanningContext) -> list[Step]: ...

    def describe_job(self, job: dict[str, Any], ctx: PlanningContext) -> str:
        """The job in words, as a request to a model planner."""
        ...


def refuse_unknown_keys(agent: str, job: Mapping[str, Any], known: Collection[str]) -> None:
    """A job key the agent does not know is refused, not ignored: `archive_table` for
    `archive_to` would otherwise purge without archiving."""
    unknown = sorted(str(key) for key in job if key not in known)
    if unknown:
        raise UsageError(
            f"The {agent} job has no {'keys' if len(unknown) > 1 else 'key'} "
            f"{', '.join(map(repr, unknown))}; it takes: {', '.join(sorted(known))}"
        )
