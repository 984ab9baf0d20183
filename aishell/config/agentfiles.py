"""An agent's file held to what is installed, where its own keys cannot tell: each tool
its safety constraints name is a tool of the catalog, and no file of the agents' folders
is an agent's file under a name no agent reads.

Both fail closed. A constraint that names a tool the catalog lacks (`delete_old_record`)
judges no step, so its check is off for the tool meant; a file named after the command
(`log-cleanup.yaml`) or ending in `.yml` is never read, so the bundled file applies and
the stricter limits it holds are lost without a word. Each is refused in one line that
names the file and the key, or the name the file should have.

The catalog's tool names are read from its files (the built-in folder, catalog_paths and
installed packages' `aishell.tools` folders: what registry.load_registry loads), as the
config may not import the registry. A file that does not parse names no tool: the
catalog's load refuses it, or leaves it out.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aishell.config.files import parse_yaml
from aishell.config.plugins import AGENTS_GROUP, OWN_AGENTS, offered, tool_folders
from aishell.config.resources import bundled_catalog_dir
from aishell.config.sources import read_source
from aishell.errors import ConfigError

# The names an agent may have (agents/available.py holds every agent to it): a file
# named otherwise is read by no agent.
_AGENT_NAME = re.compile(r"[a-z][a-z0-9_]*")
_YAML_ENDINGS = ("yaml", "yml")
# How alike a file's name and an agent's are for the file to be taken as meant for it.
_CLOSE = 0.8


class MisnamedAgentFile(ConfigError):
    """A file of the agents' folders that no agent reads, though one was meant to."""


def named_tools(constraints: Sequence[Any]) -> Iterator[tuple[str, str]]:
    """Each tool the constraints name in so many words, with its key under
    safety_constraints (a list left to its default names the built-in catalog's tools)."""
    for i, constraint in enumerate(constraints):
        for key in getattr(type(constraint), "tool_keys", ()):
            if key in constraint.model_fields_set:
                for j, tool in enumerate(getattr(constraint, key) or ()):
                    yield f"{i}.{key}.{j}", tool


def check_constraint_tools(
    path: Path, section: str, constraints: Sequence[Any], site_catalog: Sequence[Path]
) -> None:
    """Every tool the constraints name is one of the catalog's (built-in, the site's
    `site_catalog` folders, installed packages'); else a ConfigError naming the key."""
    named = list(named_tools(constraints))
    if not named:
        return
    known = sorted(catalog_tool_names(site_catalog))
    for key, tool in named:
        if tool not in known:
            close = difflib.get_close_matches(tool, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{path}: {section}.safety_constraints.{key}: no tool named '{tool}' in the "
                f"catalog, so the constraint would hold no step{hint}"
            )


def catalog_tool_names(site_catalog: Sequence[Path]) -> set[str]:
    """The names the catalog's tool files give their tools."""
    plugins, _ = tool_folders()  # a package that gives no folder: load_catalog tells it
    names: set[str] = set()
    for folder in [bundled_catalog_dir(), *site_catalog, *(f for _, _, f in plugins)]:
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
            try:
                data = parse_yaml(read_source(path, "tool file"), path)
            except ConfigError:
                continue
            if isinstance(data, dict) and isinstance(data.get("name"), str):
                names.add(data["name"])
    return names


def check_agent_files(agent_dirs: Sequence[Path], agent: str) -> None:
    """Before `agent` loads (an installed one, or one a script registered): no YAML file
    of the agents' folders is meant for it under a name it does not read (another ending,
    dashes for underscores, capitals, a name close to its), and none is meant for no
    agent under a name no agent could read; else a MisnamedAgentFile naming the file and
    the name it should have. A file meant for another agent is refused when that loads."""
    own = {name for name, _ in OWN_AGENTS} | {agent}
    known: list[str] = []
    for path in _yaml_files(agent_dirs):
        stem, _, ending = path.name.rpartition(".")
        if ending == "yaml" and stem in own:
            continue
        known = known or _installed_agents(own)
        if ending == "yaml" and stem in known:
            continue
        meant = _meant(stem, known)
        # A name an agent may have, like none installed: a package's not installed here.
        anyones = ending == "yaml" and _AGENT_NAME.fullmatch(stem) is not None
        if meant == agent or (meant is None and not anyones):
            raise MisnamedAgentFile(_misnamed(path, meant, known))


def _yaml_files(agent_dirs: Sequence[Path]) -> Iterator[Path]:
    """The folders' files that end as YAML files do, hidden ones left out (an editor's)."""
    for folder in agent_dirs:
        try:
            names = sorted(p.name for p in folder.iterdir())
        except OSError:  # no such folder (or none readable): no file of it is read either
            continue
        for name in names:
            stem, dot, ending = name.rpartition(".")
            if stem and dot and not name.startswith(".") and ending.lower() in _YAML_ENDINGS:
                yield folder / name


def _installed_agents(own: set[str]) -> list[str]:
    """Every agent's name: installed packages' entry points, aishell's own among them."""
    return sorted(own | {entry.name for entry, _ in offered(AGENTS_GROUP)})


def _meant(stem: str, agents: list[str]) -> str | None:
    """The agent a file's name is meant for, if any agent's is like it."""
    plain = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")
    if plain in agents:
        return plain
    close = difflib.get_close_matches(plain, agents, n=1, cutoff=_CLOSE)
    return close[0] if close else None


def _misnamed(path: Path, meant: str | None, agents: list[str]) -> str:
    said = f"{path}: no agent reads a file of this name"
    if meant is None:
        return (
            f"{said}; an agent's file is named after it, AGENT.yaml (agents: "
            f"{', '.join(agents)}): rename or remove it"
        )
    right = path.with_name(f"{meant}.yaml")
    if right.exists():
        return (
            f"{said}; the {meant} agent reads {right.name} beside it: merge the two into that one"
        )
    return f"{said}; the {meant} agent's file is {right.name}: rename it"
