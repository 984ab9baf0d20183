"""The agents this aishell has (its own and installed packages'), and those that failed
to load."""

from __future__ import annotations

from typing import Any

from aishell.agents.available import agent_names, agent_package, get_agent, load_failures
from aishell.agents.base import AgentSpec
from aishell.commands.schedules import list_schedules
from aishell.commands.tools import Plugins, catalog_from, load_catalog, refused_tools
from aishell.config.models import Config
from aishell.config.plugins import PluginFailure, tool_folders
from aishell.errors import CatalogError
from aishell.registry import Registry, load_registry


def list_agents(config: Config | None = None) -> dict[str, Any]:
    """Every agent with the package it came from ("aishell" for aishell's own), its job
    keys, tools and privileges; and `failed`: each plugin entry point skipped, of either
    group (`aishell.agents`, `aishell.tools`), and each plugin tool file refused (`file`
    names it, None for an entry point; the plugin's other tools loaded), with why. Given
    `config`, each agent has `missing_tools` too: those it declares that the catalog
    (built-in, the site's folders, the plugins') lacks, as show_agent marks them; not
    when the site's catalog does not load (every command that plans names that)."""
    folders, failures = tool_folders()
    catalog = _catalog(config, (folders, failures))
    if catalog is None:  # the plugins' folders alone, for their refused files
        plugins = load_registry([], [folder for _, _, folder in folders])
    else:
        plugins = catalog
    agents = []
    for name in agent_names():
        spec = get_agent(name).spec
        listed = {**spec.to_dict(), "package": agent_package(name)}
        if catalog is not None:
            listed["missing_tools"] = [tool for tool in spec.tools if tool not in catalog.tools]
        agents.append(listed)
    failed = [_failed(each) for each in [*load_failures(), *failures]]
    refused = [_failed(each) for each in refused_tools(plugins, folders)]
    return {"agents": agents, "failed": failed + refused}


def _catalog(config: Config | None, plugins: Plugins) -> Registry | None:
    """The catalog agents plan from, as load_catalog gives it; None without a config, or
    when the site's folders do not load."""
    if config is None:
        return None
    try:
        return catalog_from(config.catalog_paths, plugins, config.state_home)
    except CatalogError:
        return None


def agent_spec(name: str) -> AgentSpec:
    """The declaration of the agent `aishell run NAME` names (`-` for `_`); an unknown
    name is a UsageError listing the agents."""
    return get_agent(name.replace("-", "_")).spec


def show_agent(config: Config, name: str) -> dict[str, Any]:
    """One agent whole: its declaration and package (as list_agents gives them); what
    this home's config sets for it (its file, the defaults in force, its capabilities and
    safety constraints); each tool it may plan with the catalog's risk, and those another
    folder's tools add to its plans (`planned:`); and the schedules that run it."""
    spec = agent_spec(name)
    own = config.agent(spec.name)
    catalog = load_catalog(config)
    tools = [_tool(catalog.tools.get(tool), tool) for tool in spec.tools]
    joining = [
        {**_tool(tool, tool.name), "after": where.after, "types": list(where.types)}
        for tool in sorted(catalog.tools.values(), key=lambda t: t.name)
        for agent, where in tool.planned.items()
        if agent == spec.name and tool.name not in spec.tools
    ]
    schedules = [
        {
            key: each[key]
            for key in (
                "name",
                "cron",
                "timezone",
                "target",
                "job",
                "paused",
                "next_run",
                "seal_error",
            )
        }
        for each in list_schedules(config)
        if each["agent"] == spec.name
    ]
    return {
        **spec.to_dict(),
        "package": agent_package(spec.name),
        "config": {
            "file": str(own.path) if own.path.is_file() else None,
            "default_config": own.defaults.model_dump(mode="json"),
            "capabilities": sorted(own.capabilities),
            "safety_constraints": [c.model_dump(mode="json") for c in own.constraints],
        },
        "tools": tools,
        "joining_tools": joining,
        "schedules": schedules,
    }


def _tool(tool: Any, name: str) -> dict[str, Any]:
    """A tool as an agent's listing shows it; one the catalog lacks says so."""
    if tool is None:
        return {"name": name, "missing": True}
    return {
        "name": tool.name,
        "risk_level": tool.risk_level.value,
        "category": tool.category.value,
        "description": tool.description,
    }


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
    """A failure as the listing gives it; a refused tool file's `error` is "file: why"."""
    file = each.error.partition(".yaml: ")[0] + ".yaml" if each.refused_file else None
    return {
        "name": each.name,
        "group": each.group,
        "package": each.package,
        "error": each.error,
        "file": file,
    }
