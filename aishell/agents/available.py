"""The agents aishell has, by the name a command or a schedule gives.

One loader for all of them: aishell's own three are entry points of the group
`aishell.agents` as much as any installed package's, loaded by the same code on first
use (a command that names no agent loads none), and `register_agent` adds one from a
script or a test. An entry point that fails to import, or whose agent does not hold to
the protocol (its spec and job options checked here), is skipped and reported by name
(`load_failures`, a line on stderr, `aishell doctor`); every other agent and command
goes on. Another package's agent is called through `PluginAgent`, which tells what its
code raises as its own failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint
from typing import cast

from aishell.agents.base import Agent, AgentSpec, PluginAgent, spec_problem
from aishell.agents.jobs import RUN_OPTIONS
from aishell.config.plugins import (
    AGENTS_GROUP,
    OWN_AGENTS,
    OWN_PACKAGE,
    PLUGIN_FAILURES,
    PluginFailure,
    discovering,
    failure,
    load_entry,
    offered,
    warn,
)
from aishell.dialects import family
from aishell.errors import UsageError
from aishell.handlers.needs import Privilege

# aishell's own agents, as entry points (config.plugins.OWN_AGENTS).
BUILT_IN = tuple(EntryPoint(name, value, AGENTS_GROUP) for name, value in OWN_AGENTS)
# The package a registered agent is listed under when its script names none.
REGISTERED = "(registered)"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# The module BaseAgent is defined in, named, not imported: it imports this one, and
# nothing inside aishell imports the agent API.
_API = __name__.rpartition(".")[0] + ".api"
# What the commands that take a declared agent's job (`run NAME`, `plan NAME`, `fleet run
# NAME`, `schedule add ... -- NAME`) take for themselves: a job option may not be named
# or typed as one of them. Written out, as the agents may not import the command line;
# tests/agents/test_plugin_guards.py holds it to those commands' own parameters.
TAKEN_NAMES = RUN_OPTIONS | {
    # their click parameters besides the run options
    "quiet",
    "every",
    "out",
    "wait",
    "wait_seconds",
    "targets_selector",
    "all_targets",
    "cron",
    "timezone",
    "name",
    "words",
    "help",
    # what their code gathers the parameters into, or calls them
    "json",
    "targets",
    "selector",
    "approval",
    "run_options",
    "plan_options",
}
TAKEN_FLAGS = frozenset(
    {
        "--approve-up-to",
        "--json",
        "--dry-run",
        "--force",
        "--ignore-window",
        "--max-run-time",
        "--non-interactive",
        "--planner",
        "--quiet",
        "-q",
        "--reason",
        "--safety-level",
        "--target",
        "--yes",
        "-y",
        "--all",
        "--out",
        "--targets",
        "--all-targets",
        "--wait",
        "--no-wait",
        "--wait-seconds",
        "--cron",
        "--timezone",
        "--help",
        "-h",
    }
)
# The subcommands of `run` and `plan` that are not agents (`plan rotate-key`), with - as
# _: an agent of one of these names could never be run, so it is refused.
COMMAND_NAMES = frozenset({"rotate_key"})
_METHODS = ("normalize_job", "check_job", "catalog_needs", "plan_steps", "describe_job")


@dataclass
class _Loaded:
    agents: dict[str, Agent] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)


def _loaded() -> _Loaded:
    """Every agent's entry point, loaded once per process (`reload_agents` forgets it);
    aishell's own alone while packages are not looked for (`built_ins_only`)."""
    return _every() if discovering() else _own()


@cache
def _own() -> _Loaded:
    return _table([(ep, OWN_PACKAGE) for ep in BUILT_IN])


@cache
def _every() -> _Loaded:
    own = [(ep, OWN_PACKAGE) for ep in BUILT_IN]
    theirs = [(ep, p) for ep, p in offered(AGENTS_GROUP) if p != OWN_PACKAGE]
    return _table([*own, *theirs])


def _table(entries: list[tuple[EntryPoint, str]]) -> _Loaded:
    table = _Loaded()
    for ep, package in entries:
        found = _agent_of(ep, package)
        if not isinstance(found, PluginFailure) and ep.name in table.agents:
            already = f"an agent named '{ep.name}' comes from {table.packages[ep.name]} already"
            found = failure(AGENTS_GROUP, ep.name, package, already)
        if isinstance(found, PluginFailure):
            table.failures.append(found)
        else:
            table.agents[ep.name] = found
            table.packages[ep.name] = package
    warn(table.failures)
    return table


def _agent_of(ep: EntryPoint, package: str) -> Agent | PluginFailure:
    """The agent an entry point names (an agent, or a class made with no arguments)."""
    loaded = load_entry(ep, package)
    if isinstance(loaded, PluginFailure):
        return loaded
    # A plugin is anyone's code: whatever making it or reading its spec raises is its own
    # failure, reported by name, and every other agent goes on.
    try:
        agent = loaded() if isinstance(loaded, type) else loaded
        problem = _problem(agent, ep.name) or _plans_nothing(agent)
    except PLUGIN_FAILURES as exc:
        return failure(AGENTS_GROUP, ep.name, package, exc)
    if problem is not None:
        return failure(AGENTS_GROUP, ep.name, package, problem)
    checked = cast(Agent, agent)  # _problem checked what it offers
    return checked if package == OWN_PACKAGE else PluginAgent(checked, package)


def _problem(agent: object, name: str) -> str | None:
    """Why an object is not an agent aishell can run under this name (None: it is)."""
    spec = getattr(agent, "spec", None)
    if not isinstance(spec, AgentSpec):
        return "it has no `spec` (an AgentSpec declaring its name, job options and tools)"
    named = _name_problem(agent, spec, name)
    if named is not None:
        return named
    if name in COMMAND_NAMES:
        return f"'{name}' is a command of `aishell run` or `aishell plan`; choose another name"
    missing = [m for m in _METHODS if not callable(getattr(agent, m, None))]
    if missing:
        return f"it has no {', '.join(missing)}"
    return spec_problem(spec) or _taken(spec)


def _plans_nothing(agent: object) -> str | None:
    """An installed agent whose class keeps BaseAgent's plan_steps, which only raises:
    refused at load, not found out at the first plan of its job."""
    if getattr(getattr(type(agent), "plan_steps", None), "__module__", "") == _API:
        return "it does not define plan_steps(self, job, ctx), which plans its job"
    return None


def _name_problem(agent: object, spec: AgentSpec, name: str) -> str | None:
    """Why the names of an agent disagree: its entry point's, its spec's and its own."""
    if not _NAME.match(name):
        return f"its name '{name}' must be lower-case letters, digits and _"
    own = getattr(agent, "name", None)
    if spec.name != name or own != name:
        said = f"its spec names it {spec.name!r}" + (
            f" and its `name` is {own!r}" if own != spec.name else ""
        )
        return f"{said}, but its entry point {name!r}: they must be the same"
    return None


def _taken(spec: AgentSpec) -> str | None:
    """A job option named or typed as what the commands running it take for themselves."""
    for option in spec.options:
        names = {option.key, *([option.param] if option.flag is not None else [])}
        clash = sorted(names & TAKEN_NAMES) + sorted(set(option.flags) & TAKEN_FLAGS)
        if clash:
            return (
                f"job option {option.key} is named as an option of the run itself "
                f"({', '.join(clash)}); choose another name or flag"
            )
    return None


def register_agent(agent: Agent, package: str = REGISTERED) -> None:
    """Add an agent for this process, as an entry point would; refused (UsageError)
    when it does not hold to the protocol or its name is taken."""
    table = _loaded()
    try:
        problem = _problem(agent, getattr(getattr(agent, "spec", None), "name", ""))
    except PLUGIN_FAILURES as exc:  # its own code raised: refused, saying what it raised
        problem = failure(AGENTS_GROUP, "", package, exc).error
    if problem is None and agent.name in table.agents:
        problem = f"an agent named '{agent.name}' comes from {table.packages[agent.name]} already"
    if problem is not None:
        raise UsageError(f"Agent {_named(agent)} is refused: {problem}")
    table.agents[agent.name] = agent if package == OWN_PACKAGE else PluginAgent(agent, package)
    table.packages[agent.name] = package


def _named(agent: object) -> str:
    try:
        return repr(agent.name)  # type: ignore[attr-defined]
    except PLUGIN_FAILURES:  # no name, or one that raises: the object stands for itself
        return type(agent).__name__


def unregister_agent(name: str) -> None:
    """Forget an agent this process registered (or loaded); an unknown name is no error."""
    table = _loaded()
    table.agents.pop(name, None)
    table.packages.pop(name, None)


def reload_agents() -> None:
    """Forget every agent, registered ones too; the next use reads the entry points anew
    (after a package was installed in a running process, or between tests)."""
    _every.cache_clear()
    _own.cache_clear()


def get_agent(name: str) -> Agent:
    agents = _loaded().agents
    try:
        return agents[name]
    except KeyError:
        raise UsageError(
            f"Unknown agent '{name}'; agents are: {', '.join(sorted(agents))}"
        ) from None


def agent_names() -> list[str]:
    return sorted(_loaded().agents)


def agent_package(name: str) -> str:
    """The package an agent came from: "aishell" for aishell's own."""
    get_agent(name)
    return _loaded().packages[name]


def declared_privileges(dialect: str) -> dict[str, tuple[Privilege | str, ...]]:
    """What each agent from another package declares it needs on this engine (aishell's
    own agents are checked by each engine's own code)."""
    engine = family(dialect)
    table = _loaded()
    return {
        name: tuple(agent.spec.privileges.get(engine, ()))
        for name, agent in sorted(table.agents.items())
        if table.packages[name] != OWN_PACKAGE
    }


def load_failures() -> list[PluginFailure]:
    """The agents' entry points that were skipped, each with why."""
    return list(_loaded().failures)
