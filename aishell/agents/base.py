"""What every agent provides: its declaration (`AgentSpec`: name, job options, tools,
privileges), and the work: validate its job, check it against the target, say which
facts planning it reads, and plan it as steps."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy.engine import Connection

from aishell.config.models import AgentConfig, AgentDefaults, PurgeSettings
from aishell.config.options import Option
from aishell.errors import UsageError
from aishell.handlers.needs import Privilege
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


@dataclass(frozen=True)
class AgentSpec:
    """An agent's declaration, in one place: its name (the `aishell run NAME` it runs
    as), its job's keys as options of the table the built-ins use (type, bounds or
    choices, default, help: the command line's options are made from them), the tools
    it may plan, and the privileges it needs on each engine."""

    name: str
    description: str
    options: tuple[Option, ...] = ()
    tools: tuple[str, ...] = ()
    # By engine (postgresql, mysql, sqlite): each privilege as a `Privilege` that
    # `aishell doctor` checks on the target, or in words (shown, not checked).
    privileges: Mapping[str, tuple[Privilege | str, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "job_keys": [
                {
                    "key": o.key,
                    "kind": o.kind,
                    "flag": o.cli_flag if o.flag is not None else None,
                    "help": o.help,
                    **({"choices": list(o.choices)} if o.choices else {}),
                    **{k: v for k in ("minimum", "maximum") if (v := getattr(o, k)) is not None},
                    **({"default": o.default} if o.default is not None else {}),
                    **({"required": True} if o.required else {}),
                }
                for o in self.options
            ],
            "tools": list(self.tools),
            "privileges": {
                engine: [p if isinstance(p, str) else p.words for p in listed]
                for engine, listed in self.privileges.items()
            },
        }


class Agent(Protocol):
    @property
    def name(self) -> str:
        """The name a command, a schedule and a plan give it: its spec's."""
        ...

    @property
    def spec(self) -> AgentSpec: ...

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


def job_by_options(spec: AgentSpec, job: Mapping[str, Any]) -> dict[str, Any]:
    """The job checked against the options the agent declares: no unknown key, each
    required one given, each value of its kind within its bounds or choices, and the
    default for each left out."""
    refuse_unknown_keys(spec.name, job, [o.key for o in spec.options])
    checked: dict[str, Any] = {}
    for option in spec.options:
        value = job.get(option.key)
        if value is None:
            if option.required:
                raise UsageError(f"The {spec.name} job needs {option.key} ({option.cli_flag})")
            checked[option.key] = option.default
            continue
        wrong = _wrong_value(option, value)
        if wrong:
            raise UsageError(f"{option.cli_flag}: {value!r} {wrong}")
        checked[option.key] = value
    return checked


def _wrong_value(option: Option, value: object) -> str:
    """Why a value does not fit its option ("": it fits)."""
    if option.kind == "choice":
        return "" if value in option.choices else f"is not one of: {', '.join(option.choices)}"
    if option.kind == "flag":
        return "" if isinstance(value, bool) else "is not true or false"
    if option.kind in ("text", "archive"):
        return "" if isinstance(value, str) and value else "is not a non-empty text"
    if option.kind == "integer" and not isinstance(value, int):
        return "is not a whole number"
    if option.holds(value):
        return ""
    low = "" if option.minimum is None else f" from {option.minimum:g}"
    high = "" if option.maximum is None else f" to {option.maximum:g}"
    return f"is not a finite number{low}{high}"
