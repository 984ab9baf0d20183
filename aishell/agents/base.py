"""What every agent provides: its declaration (`AgentSpec`: name, job options, tools,
privileges), and the work: validate its job, check it against the target, say which
facts planning it reads, and plan it as steps."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.agents.archive import absolute_archive, archive_problem, archives_fixed
from aishell.agents.bounded import within_deadline
from aishell.agents.limits import LIMITS_SHAPE, DraftLimits, limits_copy
from aishell.config.models import AgentConfig, AgentDefaults, PurgeSettings
from aishell.config.options import KINDS, NUMERIC_KINDS, Option
from aishell.config.plugins import PLUGIN_FAILURES, failure
from aishell.errors import AishellError, PlanError, UsageError
from aishell.guard.connection import Guard, guarded
from aishell.guard.strays import left_running, watching
from aishell.handlers.needs import Privilege
from aishell.plan.model import Step, step_from_dict
from aishell.targets.lockholders import is_lock_timeout
from aishell.targets.partitions import PartitionTree
from aishell.tool.params import IDENTIFIER_KINDS
from aishell.units import exact

# What planning may read for a job beyond the target's tables, each at a cost:
# "urgency", how soon each table needs work (a query of the server's catalog);
# "skipped", the tables the last run could not lock (a read of the state store);
# "partitions", the partitions of its partitioned tables (one query, PostgreSQL only).
CatalogFact = Literal["urgency", "skipped", "partitions"]
_FACTS = {"urgency", "skipped", "partitions"}
# The most steps an agent of a package may plan: each is validated, previewed, stored
# and judged on its own, so a plan of millions would hold planning for hours; aishell's
# own plan 20,000 tables' maintenance in about a hundred.
MAX_PLAN_STEPS = 10_000


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
    # The partitioned tables among `tables` (every table when the job names none), each
    # with the tables under it at every depth; sizes hold theirs too.
    partitions: Mapping[str, PartitionTree] = field(default_factory=dict)


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


class PluginAgent:
    """An agent of another package, as aishell calls it: what its code raises (other than
    aishell's own errors, which say what the user did), or a result not of the shape the
    protocol says, is a PlanError naming the agent and its package, not a defect of
    aishell's; its spec is the one read when it was loaded."""

    def __init__(self, agent: Agent, package: str) -> None:
        self.agent, self.package = agent, package
        self._spec = agent.spec

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def spec(self) -> AgentSpec:
        return self._spec

    def _call(self, doing: str, method: str, *args: Any) -> Any:
        try:
            return within_deadline(partial(getattr(self.agent, method), *args), self._who)
        except AishellError:
            raise
        except PLUGIN_FAILURES as exc:  # the plugin's code: its failure, named as its own
            if (
                isinstance(exc, DBAPIError)
                and is_lock_timeout(exc)
                and not exc.connection_invalidated
            ):
                raise  # a table another session holds: said as any held table is
            said = failure("", self.name, self.package, exc).error
            raise PlanError(f"{self._who} failed to {doing}: {said}") from exc

    @property
    def _who(self) -> str:
        return f"agent {self.name} (package {self.package})"

    def _wrong(self, method: str, found: object, expected: str) -> PlanError:
        held = {type(each).__name__ for each in found} if isinstance(found, list | tuple) else ()
        shape = type(found).__name__ + (f" of {', '.join(sorted(held))}" if held else "")
        return PlanError(f"{self._who} returned {shape} from {method}, not {expected}")

    def normalize_job(self, job: dict[str, Any], config: AgentConfig) -> dict[str, Any]:
        found = self._call("check its job", "normalize_job", job, config)
        if not isinstance(found, dict):
            raise self._wrong("normalize_job", found, "the job as a dict")
        return self._held_to_options(job, self._detached("normalize_job", found))

    def _held_to_options(self, job: Mapping[str, Any], found: dict[str, Any]) -> dict[str, Any]:
        """The job its own normalize_job made, held to the options its spec declares: a
        value they refuse is the user's mistake where the job gave it, else the agent's
        failure; an archive's file is fixed here, where the job is given."""
        for option in self._spec.options:
            value = found.get(option.key)
            wrong = "" if value is None else _wrong_value(option, value)
            if wrong and job.get(option.key) == value:
                raise UsageError(f"{option.cli_flag}: {value!r} {wrong}")
            if wrong:
                raise PlanError(
                    f"{self._who} returned from normalize_job {option.key} {value!r}, "
                    f"which {wrong} ({option.cli_flag})"
                )
            if option.kind == "archive" and value is not None:
                found[option.key] = absolute_archive(value, option.cli_flag)
        return found

    def check_job(self, job: dict[str, Any], conn: Connection) -> None:
        # Planning only reads: what its check sends through the connection is guarded as
        # a read-only step's statements are (a SET that turns the session read-write, a
        # DELETE, is refused before the server sees it).
        # Nor may it open a session of its own, or leave a thread behind (strays.py).
        with (
            guarded(conn, Guard(label=f"{self._who}'s check of its job")),
            watching(conn, self._who) as left,
        ):
            self._call("check its job on the target", "check_job", job, conn)
        if left:
            raise PlanError(left_running(self._who, left))

    def catalog_needs(self, job: dict[str, Any]) -> frozenset[CatalogFact]:
        found = self._call("say what planning reads", "catalog_needs", job)
        facts = set(found) if isinstance(found, Collection) and not isinstance(found, str) else None
        if facts is None or not facts <= _FACTS:
            raise self._wrong(
                "catalog_needs", found, 'a set of "urgency", "skipped" and "partitions"'
            )
        return frozenset(found)

    def plan_steps(self, job: dict[str, Any], ctx: PlanningContext) -> list[Step]:
        found = self._call("plan", "plan_steps", job, ctx)
        if isinstance(found, list | tuple) and len(found) > MAX_PLAN_STEPS:
            raise PlanError(
                f"{self._who} planned {len(found):,} steps; a plan holds at most "
                f"{MAX_PLAN_STEPS:,} (fewer steps, each on many tables, do as much)"
            )
        if not isinstance(found, list | tuple) or not all(isinstance(s, Step) for s in found):
            raise self._wrong("plan_steps", found, "a list of Step")
        return [step_from_dict(self._detached("plan_steps", s.to_dict())) for s in found]

    def draft_limits(self, job: dict[str, Any], ctx: PlanningContext) -> DraftLimits:
        """What the agent holds a model's draft of its job to (none where it says nothing)."""
        if not callable(getattr(self.agent, "draft_limits", None)):
            return DraftLimits()
        found = self._call("say what a drafted plan keeps to", "draft_limits", job, ctx)
        limits = limits_copy(found) if isinstance(found, DraftLimits) else None
        if limits is None:
            raise self._wrong("draft_limits", found, LIMITS_SHAPE)
        return limits

    def _detached(self, method: str, found: object) -> Any:
        """What the plugin returned, as plain data of aishell's own (a JSON copy): what
        is validated and hashed is what runs, whatever the plugin later does to the
        objects it handed over (a thread of its own that changes a step's table)."""
        try:
            return json.loads(json.dumps(found, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise PlanError(
                f"{self._who} returned from {method} what is not plain data (strings, "
                f"numbers, booleans, lists and mappings): {exc}"
            ) from None

    def describe_job(self, job: dict[str, Any], ctx: PlanningContext) -> str:
        found = self._call("describe its job", "describe_job", job, ctx)
        if not isinstance(found, str):
            raise self._wrong("describe_job", found, "a sentence")
        return found


def refuse_unknown_keys(agent: str, job: Mapping[str, Any], known: Collection[str]) -> None:
    """A job key the agent does not know is refused, not ignored: `archive_table` for
    `archive_to` would otherwise purge without archiving."""
    unknown = sorted(str(key) for key in job if key not in known)
    if unknown:
        raise UsageError(
            f"The {agent} job has no {'keys' if len(unknown) > 1 else 'key'} "
            f"{', '.join(map(repr, unknown))}; it takes: {', '.join(sorted(known))}"
        )


def given_options(spec: AgentSpec, job: Mapping[str, Any]) -> dict[str, Any]:
    """The values the job gives (a key left out, or None, is not given), each checked
    against the option the agent declares: no unknown key, and a value given empty, out
    of its bounds or choices, or of another type is refused in one line naming its flag,
    never read as absent and replaced by a default (`--max-rows 0` is not "no limit")."""
    refuse_unknown_keys(spec.name, job, [o.key for o in spec.options])
    given: dict[str, Any] = {}
    for option in spec.options:
        value = job.get(option.key)
        if value is None:
            continue
        wrong = _wrong_value(option, value)
        if wrong:
            raise UsageError(f"{option.cli_flag}: {value!r} {wrong}")
        # A file is fixed where the job is given, not where a scheduler later runs it.
        given[option.key] = absolute_archive(value) if option.kind == "archive" else value
    return given


def job_by_options(spec: AgentSpec, job: Mapping[str, Any]) -> dict[str, Any]:
    """The job checked against the options the agent declares (`given_options`), each
    required one given, and the default for each left out."""
    given = given_options(spec, job)
    for option in spec.options:
        if option.key not in given and option.required:
            raise UsageError(f"The {spec.name} job needs {option.key} ({option.cli_flag})")
    return {o.key: given.get(o.key, o.default) for o in spec.options}


def job_as_given(
    agent: Agent, job: Mapping[str, Any], settings: AgentConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job given now to run later or elsewhere (a schedule added, a fleet job sent): as
    it is kept, each archive's `file:` path made absolute here and now, not in the
    folder a scheduler or a worker later runs it from; and as the agent checks it
    (normalize_job: a bad value refused now, not at 2 a.m.)."""
    kept = archives_fixed(agent.spec.options, job)
    return kept, agent.normalize_job(dict(kept), settings)


def _wrong_value(option: Option, value: object) -> str:
    """Why a value does not fit its option ("": it fits)."""
    if option.kind == "choice":
        return "" if value in option.choices else f"is not one of: {', '.join(option.choices)}"
    if option.kind == "flag":
        return "" if isinstance(value, bool) else "is not true or false"
    if option.kind == "archive":
        return archive_problem(value)
    if option.kind == "text":
        return "" if isinstance(value, str) and value else "is not a non-empty text"
    if option.holds(value) and (option.kind != "integer" or isinstance(value, int)):
        return ""
    least, most = option.bounds
    low = "" if least is None else f" from {_bound(least)}"
    high = "" if most is None else f" to {_bound(most)}"
    number = "whole number" if option.kind == "integer" else "finite number"
    return f"is not a {number}{low}{high}"


def _bound(limit: float) -> str:
    """A bound as a person reads it: 1,000,000, not 1e+06."""
    return f"{int(limit):,}" if float(limit).is_integer() else exact(limit)


# A job key, an option's `dest`: what a job and click name it by.
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
# A flag as typed: -y, or --lower-case-words.
_FLAG = re.compile(r"^(-[A-Za-z]|--[a-z0-9][a-z0-9-]*)$")


def spec_problem(spec: AgentSpec) -> str | None:
    """Why an agent's declaration cannot make its commands and check its jobs (None: it
    can): its fields of their types, each option sound, no key, name or flag twice."""
    if not isinstance(spec.description, str) or not spec.description.strip():
        return "its spec's description must be a sentence"
    if not isinstance(spec.options, tuple) or not all(isinstance(o, Option) for o in spec.options):
        return "its spec's options must be a tuple of Option (one option is (Option(...),))"
    if not isinstance(spec.tools, tuple) or not all(isinstance(t, str) for t in spec.tools):
        return "its spec's tools must be a tuple of tool names"
    if not _privileges_hold(spec.privileges):
        return "its spec's privileges must map each engine to a tuple of Privilege or words"
    for option in spec.options:
        wrong = option_problem(option)
        if wrong:
            return f"job option {option.key!r} {wrong}"
    for what, names in (
        ("key", [o.key for o in spec.options]),
        ("name", [o.param for o in spec.options if o.flag is not None]),
        ("flag", [f for o in spec.options for f in o.flags]),
    ):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            return f"its job options repeat the {what} {', '.join(twice)}"
    return None


def _privileges_hold(privileges: object) -> bool:
    return isinstance(privileges, Mapping) and all(
        isinstance(engine, str)
        and isinstance(listed, tuple)
        and all(isinstance(p, Privilege | str) for p in listed)
        for engine, listed in privileges.items()
    )


def option_problem(option: Option) -> str:
    """What is wrong with one declared option ("": nothing), as the end of a sentence
    that names it: each field of its type, its flag typed as click takes it, its bounds
    and choices fitting its kind, its default one of its own values."""
    return next(_option_problems(option), "")


def _option_problems(option: Option) -> Iterator[str]:
    if not isinstance(option.key, str) or not _KEY.match(option.key):
        yield "must be named in lower-case letters, digits and _"
    if option.kind not in KINDS:
        yield f"has kind {option.kind!r}; kinds are: {', '.join(KINDS)}"
    if not isinstance(option.help, str) or not option.help.strip():
        yield "must have a help sentence"
    yield from _flag_problems(option)
    yield from _bound_problems(option)
    if option.kind == "choice" and (
        not isinstance(option.choices, tuple)
        or not option.choices
        or not all(isinstance(c, str) and c for c in option.choices)
    ):
        yield "is a choice: its choices must be a non-empty tuple of words"
    if option.kind != "choice" and option.choices:
        yield "has choices but is not of kind choice"
    if option.identifier and option.identifier not in IDENTIFIER_KINDS:
        yield f"has identifier {option.identifier!r}; it is one of: {', '.join(IDENTIFIER_KINDS)}"
    elif option.identifier and option.kind != "text":
        yield f"names a {option.identifier} (identifier) but is not of kind text"
    if not isinstance(option.required, bool) or not isinstance(option.shown_default, bool):
        yield "must have required and shown_default true or false"
    if option.required and option.default is not None:
        yield "is required and has a default: give one or the other"
    if option.default is not None:
        wrong = _wrong_value(option, option.default)
        if wrong:
            yield f"has the default {option.default!r}, which {wrong}"


def _flag_problems(option: Option) -> Iterator[str]:
    if option.flag is not None and not isinstance(option.flag, str):
        yield "must have a flag of text (or None: no flag)"
        return
    if option.dest and (not isinstance(option.dest, str) or not _KEY.match(option.dest)):
        yield "must have a dest in lower-case letters, digits and _"
    flags = option.flags
    if any(not _FLAG.match(f) for f in flags):
        yield f"has the flag {option.flag!r}; a flag is -x or --words (--x/--no-x for a flag)"
    if len(flags) > (2 if option.kind == "flag" else 1):
        yield f"has the flag {option.flag!r}: only a flag option has an off switch (--x/--no-x)"


def _bound_problems(option: Option) -> Iterator[str]:
    bounds = [b for b in (option.minimum, option.maximum) if b is not None]
    if bounds and option.kind not in NUMERIC_KINDS:
        yield f"has bounds, which only {', '.join(NUMERIC_KINDS)} options take"
    if any(
        isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b)
        for b in bounds
    ):
        yield "must have finite numbers as its bounds"
    elif len(bounds) == 2 and bounds[0] > bounds[1]:
        yield "has a minimum above its maximum"
