"""The agent API: the one module an agent outside aishell imports.

An agent turns a job (a dict of its job keys) into a plan of steps over the tool
catalog; aishell does the rest (checks each step against the policy, asks for
approvals, runs, checkpoints, resumes). It declares itself in one place, its
`AgentSpec`: its name (`aishell run NAME`, `aishell plan NAME`), its job keys as
`Option`s (type, bounds or choices, default, help: the command line's options are made
from them), the tools it may plan, and the privileges it needs per engine. Then it
plans::

    from aishell.agents.api import AgentSpec, BaseAgent, Option, Step, TaskContext, step_id

    class TidyAgent(BaseAgent):
        spec = AgentSpec(
            name="tidy",
            description="Refresh one table's statistics.",
            options=(Option("table", "text", "Table to tidy.", required=True),),
            tools=("update_table_statistics",),
        )

        def plan_steps(self, job, ctx: TaskContext) -> list[Step]:
            return [Step(step_id(0), "update_table_statistics", {"table": job["table"]},
                         f"Refresh the statistics of {job['table']}")]

It reaches aishell through the entry point group `aishell.agents` of its package
(``tidy = "tidy_pkg.agent:TidyAgent"``: an agent or a class made without arguments),
or `register_agent(TidyAgent())` from a script. Its own tools come as a folder of tool
YAML files through the group `aishell.tools` (the folder, a package whose folder it
is, or a function returning it), checked exactly as aishell's own: a tool whose risk is
below what its SQL or handler does is refused at load. A tool that is more than SQL
names its `Handler` (its statement shapes, and a function of params and `ToolContext`)
by dotted path, a colon before the name: `handler: tidy_pkg.handlers:count_rows`, where
`count_rows = Handler(sql_templates=(...), run_fn=a_function)` (a plain function is
refused); it ends a step failed with `StepFailed`, or skipped with `StepSkipped`,
saying why. A package's tool may not ask aishell's own agents to plan it (`planned:`
is refused in it: only the built-in catalog and the site's `catalog_paths` folders
change what nightly maintenance runs).

An agent may hold a model's draft of its job (`--planner llm`) to what its own plan
keeps to with `draft_limits(job, ctx)`, returning a `DraftLimits` (the tables its steps
may name, the tools that change the database, params given as the job says, each with
the reason a rejected draft is sent back with); without it a draft is checked only as
every plan is.

A package that fails to load is skipped and named (stderr, `aishell doctor`, `aishell
agents list`); nothing else breaks. So is an agent whose spec cannot work: options not
a tuple of `Option`, tools not a tuple of names, an option of an unknown kind, a choice
without choices, a default outside its own choices or bounds, a required option with a
default, a key or flag given twice, or one the commands running it take themselves
(`--target`, `--dry-run`, `-y`, `--wait`, `--targets`, ...). What `normalize_job`,
`check_job`, `catalog_needs`, `plan_steps`, `describe_job` or `draft_limits` raises
(other than aishell's own errors, `UsageError`, `TargetError`) or returns in the wrong
shape is told as the agent's failure, naming it and its package. An agent with no config file
of its own runs on the defaults.

A plugin is Python code you install and trust as you would any package: aishell checks
what it declares, not what its code does. The guard and the statement audit cover the
statements a handler sends through `ctx.connection`'s SQLAlchemy API, and through a
second session it opens with `ctx.side_session(Side(purpose, writes=...))` (reads,
and only the writes it declares there). A connection it opens itself from the step's
engine (or `check_job` from its connection's) is refused its statements, as is a thread
of its code that it leaves running after it returned, and the step or the plan fails
naming its module; a plan of more than 10,000 steps is its failure too. Code that
reaches under the guard (the DBAPI connection, `driver_connection`) or makes an engine
of its own bypasses both, with the target's privileges.

Names from the reference tutorial: `AgentConfig` (the agent's config: defaults,
capabilities, constraints), `TaskContext` (what planning may know: target, dialect,
tables, sizes; never row data), `TaskResult` (what a run returns), `AgentCapability`.
The names below are this API; aishell's own modules import each from where it is
defined, so that everything else is free to move.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.engine import Connection

from aishell.agents.available import register_agent, unregister_agent
from aishell.agents.base import (
    Agent,
    AgentSpec,
    CatalogFact,
    PlanningContext,
    job_by_options,
)
from aishell.agents.limits import DraftLimits
from aishell.config.kinds import Capability
from aishell.config.models import AgentConfig
from aishell.config.options import Option
from aishell.errors import StepFailed, StepSkipped, TargetError, UsageError
from aishell.handlers import Handler
from aishell.handlers.needs import Privilege
from aishell.plan.model import Step, step_id
from aishell.tool.context import ToolContext
from aishell.tool.side import Side

TaskContext = PlanningContext
AgentCapability = Capability

__all__ = [
    "Agent",
    "AgentCapability",
    "AgentConfig",
    "AgentSpec",
    "BaseAgent",
    "CatalogFact",
    "DraftLimits",
    "Handler",
    "Option",
    "Privilege",
    "Side",
    "Step",
    "StepFailed",
    "StepSkipped",
    "TargetError",
    "TaskContext",
    "TaskResult",
    "ToolContext",
    "UsageError",
    "register_agent",
    "step_id",
    "unregister_agent",
]


@runtime_checkable
class TaskResult(Protocol):
    """What a run returns (`commands.run_job`, `aishell run --json`): its id, its status
    (completed, waiting_approval, failed, ...), the agent and target, whether it was a
    dry run, and each step with its tool, params, status, output and error."""

    run_id: str
    status: str
    agent: str
    target: str
    dry_run: bool
    error: str | None

    @property
    def steps(self) -> Sequence[Any]: ...

    def to_dict(self) -> dict[str, Any]: ...


class BaseAgent:
    """An agent on its declaration alone: subclass it, set `spec`, write `plan_steps`.
    The job is checked against the options `spec` declares (unknown keys refused, the
    required given, values of their kind within bounds or choices, defaults filled);
    override any method for more."""

    spec: AgentSpec

    @property
    def name(self) -> str:
        return self.spec.name

    def normalize_job(self, job: dict[str, Any], config: AgentConfig) -> dict[str, Any]:
        """The job with every declared key, defaults filled in; a bad value a UsageError."""
        return job_by_options(self.spec, job)

    def check_job(self, job: dict[str, Any], conn: Connection) -> None:
        """Refuse (TargetError or UsageError) a job this target cannot run; by default
        nothing to check, as planning checks the tables and columns its steps name."""

    def catalog_needs(self, job: dict[str, Any]) -> frozenset[CatalogFact]:
        """The costly facts planning reads ("urgency", "skipped", "partitions"); by
        default none."""
        return frozenset()

    def describe_job(self, job: dict[str, Any], ctx: TaskContext) -> str:
        """The job in words, as a request to a model planner."""
        given = ", ".join(f"{k}={v!r}" for k, v in sorted(job.items()) if v is not None)
        return f"{self.spec.description} Job: {given or 'the defaults'}."

    def plan_steps(self, job: dict[str, Any], ctx: TaskContext) -> list[Step]:
        """The steps of the normalized job, each a tool of `spec.tools`."""
        raise NotImplementedError(f"the {self.spec.name} agent does not plan")
