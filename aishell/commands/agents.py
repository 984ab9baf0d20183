"""The agents this aishell has (its own and installed packages'), and those that failed
to load."""

from __future__ import annotations

from typing import Any

from aishell.agents.available import agent_names, agent_package, get_agent, load_failures
from aishell.agents.base import AgentSpec
from aishell.commands.tools import refused_tools
from aishell.config.models import Config
from aishell.config.plugins import PluginFailure, tool_folders
from aishell.registry import load_registry


def list_agents() -> dict[str, Any]:
    """Every agent with the package it came from ("aishell" for aishell's own), its job
    keys, tools and privileges; and `failed`: the plugins skipped, each with why."""
    agents = [
        {**get_agent(name).spec.to_dict(), "package": agent_package(name)} for name in agent_names()
    ]
    return {"agents": agents, "failed": [_failed(f) for f in load_failures()]}


def agent_spec(name: str) -> AgentSpec:
    """The declaration of the agent `aishell run NAME` names (`-` for `_`); an unknown
    name is a UsageError listing the agents."""
    return get_agent(name.replace("-", "_")).spec


def plugin_problems(config: Config) -> list[dict[str, Any]]:
    """Each plugin that failed to load (an agent, a tool folder, a tool file), as the
    doctor lists problems: what, and the fix."""
    folders, failures = tool_folders()
    registry = load_registry([], [folder for _, _, folder in folders])
    every = [*load_failures(), *failures, *refused_tools(registry, folders)]
    return [
        {
            "target": None,
            "problem": each.line(),
            "fix": f"correct or uninstall the package {each.package} (pip uninstall "
            f"{each.package}); every other command works meanwhile",
        }
        for each in every
    ]


def _failed(each: PluginFailure) -> dict[str, Any]:
    return {"name": each.name, "group": each.group, "package": each.package, "error": each.error}
