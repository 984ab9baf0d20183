"""The agents aishell has, by the name a command or a schedule gives.

One loader for all of them: aishell's own three are entry points of the group
`aishell.agents` as much as any installed package's, loaded by the same code on first
use (a command that names no agent loads none), and `register_agent` adds one from a
script or a test. An entry point that fails to import, or whose agent does not hold to
the protocol, is skipped and reported by name (`load_failures`, a line on stderr,
`aishell doctor`); every other agent and command goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint
from typing import cast

from aishell.agents.base import Agent, AgentSpec
from aishell.agents.jobs import RUN_OPTIONS
from aishell.config.plugins import (
    AGENTS_GROUP,
    OWN_PACKAGE,
    PluginFailure,
    failure,
    load_entry,
    offered,
    warn,
)
from aishell.dialects import family
from aishell.errors import UsageError
from aishell.handlers.needs import Privilege

# aishell's own agents, as its package declares them (pyproject.toml); read from here
# too, so that a checkout run from source, whose installed metadata may be older, has
# them all the same.
BUILT_IN = tuple(
    EntryPoint(name, value, AGENTS_GROUP)
    for name, value in (
        ("backup", "aishell.agents.backup:BackupAgent"),
        ("log_cleanup", "aishell.agents.log_cleanup:LogCleanupAgent"),
        ("maintenance", "aishell.agents.maintenance:MaintenanceAgent"),
    )
)
# The package a registered agent is listed under when its script names none.
REGISTERED = "(registered)"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Parameter names the commands running a job take for themselves (`--target`,
# `--dry-run`, `--out`, ...): a job option may not take one of them.
_TAKEN = RUN_OPTIONS | {"out", "every", "quiet", "json", "help", "approval", "run_options"}
# The subcommands of `run` and `plan` that are not agents (`plan rotate-key`), with - as
# _: an agent of one of these names could never be run, so it is refused.
COMMAND_NAMES = frozenset({"rotate_key"})
_METHODS = ("normalize_job", "check_job", "catalog_needs", "plan_steps", "describe_job")


@dataclass
class _Loaded:
    agents: dict[str, Agent] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)


@cache
def _loaded() -> _Loaded:
    """Every agent's entry point, loaded once per process (`reload_agents` forgets it)."""
    table = _Loaded()
    own = [(ep, OWN_PACKAGE) for ep in BUILT_IN]
    theirs = [(ep, p) for ep, p in offered(AGENTS_GROUP) if p != OWN_PACKAGE]
    for ep, package in [*own, *theirs]:
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
    try:
        agent = loaded() if isinstance(loaded, type) else loaded
    except Exception as exc:  # the plugin's own failure, reported by name
        return failure(AGENTS_GROUP, ep.name, package, exc)
    problem = _problem(agent, ep.name)
    if problem is not None:
        return failure(AGENTS_GROUP, ep.name, package, problem)
    return cast(Agent, agent)  # _problem checked what it offers


def _problem(agent: object, name: str) -> str | None:
    """Why an object is not an agent aishell can run under this name (None: it is)."""
    spec = getattr(agent, "spec", None)
    if not isinstance(spec, AgentSpec):
        return "it has no `spec` (an AgentSpec declaring its name, job options and tools)"
    if not _NAME.match(name) or spec.name != name or getattr(agent, "name", None) != name:
        return (
            f"its name must be lower-case letters, digits and _, and the same as its spec's "
            f"and entry point's ('{name}')"
        )
    if name in COMMAND_NAMES:
        return f"'{name}' is a command of `aishell run` or `aishell plan`; choose another name"
    missing = [m for m in _METHODS if not callable(getattr(agent, m, None))]
    if missing:
        return f"it has no {', '.join(missing)}"
    taken = [o.key for o in spec.options if o.param in _TAKEN or o.key in _TAKEN]
    if taken:
        return f"job option {', '.join(taken)} is named as an option of the run itself"
    return None


def register_agent(agent: Agent, package: str = REGISTERED) -> None:
    """Add an agent for this process, as an entry point would; refused (UsageError)
    when it does not hold to the protocol or its name is taken."""
    table = _loaded()
    problem = _problem(agent, getattr(getattr(agent, "spec", None), "name", ""))
    if problem is None and agent.name in table.agents:
        problem = f"an agent named '{agent.name}' comes from {table.packages[agent.name]} already"
    if problem is not None:
        raise UsageError(f"Agent {getattr(agent, 'name', agent)!r} is refused: {problem}")
    table.agents[agent.name] = agent
    table.packages[agent.name] = package


def unregister_agent(name: str) -> None:
    """Forget an agent this process registered (or loaded); an unknown name is no error."""
    table = _loaded()
    table.agents.pop(name, None)
    table.packages.pop(name, None)


def reload_agents() -> None:
    """Forget every agent, registered ones too; the next use reads the entry points anew
    (after a package was installed in a running process, or between tests)."""
    _loaded.cache_clear()


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
