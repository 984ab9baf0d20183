"""The tool catalog every command loads, and the tools' own commands (list, show)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aishell.config.models import Config
from aishell.config.plugins import TOOLS_GROUP, PluginFailure, failure, tool_folders, warn
from aishell.config.resources import bundled_catalog_dir
from aishell.dialects import family
from aishell.errors import UsageError
from aishell.registry import Registry, load_registry
from aishell.sqltext import quote_identifier
from aishell.tool.context import ToolContext
from aishell.tool.definition import DIALECTS
from aishell.tool.verdicts import CatalogVerdicts


def load_catalog(config: Config) -> Registry:
    """The built-in catalog, the site's folders named in config, then the folders of
    installed packages' `aishell.tools` entry points; a plugin's entry point or tool file
    that fails is left out and told on stderr (`aishell doctor` lists them)."""
    return catalog_from(config.catalog_paths, tool_folders(), config.state_home)


Plugins = tuple[list[tuple[str, str, Path]], list[PluginFailure]]


def catalog_from(
    catalog_paths: list[Path], plugins: Plugins, state_home: Path | None = None
) -> Registry:
    """load_catalog, given the site's folders and what tool_folders() found; the parser's
    verdicts on the catalog's SQL kept in `state_home`'s cache (tool/verdicts.py)."""
    folders, failures = plugins
    registry = load_registry(
        [bundled_catalog_dir(), *catalog_paths],
        [folder for _, _, folder in folders],
        CatalogVerdicts(state_home),
    )
    warn([*failures, *refused_tools(registry, folders)])
    return registry


def refused_tools(registry: Registry, folders: list[tuple[str, str, Path]]) -> list[PluginFailure]:
    """The catalog's refused files as failures of the entry points whose folders hold them."""
    found = []
    for refusal in registry.refused:
        owner = next(
            ((n, p) for n, p, f in folders if refusal.startswith(f"{f}{os.sep}")), ("?", "?")
        )
        found.append(replace(failure(TOOLS_GROUP, owner[0], owner[1], refusal), refused_file=True))
    return found


def show_tool(config: Config, name: str, dialect: str | None = None) -> dict[str, Any]:
    """A tool's metadata and, per dialect, the SQL it runs for its first example."""
    tool = load_catalog(config).get(name)
    if dialect is not None and dialect not in DIALECTS:
        raise UsageError(f"Unknown dialect '{dialect}'; expected one of: {', '.join(DIALECTS)}")
    dialects = [dialect] if dialect else sorted(tool.implementations)
    example = tool.examples[0]["params"]
    sql: dict[str, list[str]] = {}
    for name_ in dialects:
        impl = tool.implementation(name_)
        offline = ToolContext(conn=None, dialect=name_, target="(example)", dry_run=True)
        offline.quote_identifier = _quoter(name_)
        sql[name_] = impl.render_sql(example, offline)
    second = {
        d: list(getattr(tool.implementation(d), "second_session", {}).get(family(d), ()))
        for d in dialects
    }
    data = {
        **tool.metadata(),
        "example_params": example,
        "sql": sql,
        "second_session": {d: found for d, found in second.items() if found},
    }
    for key in ("risks", "mitigations"):  # as for the SQL: those of the dialects shown
        data[key] = {d: lists for d, lists in data[key].items() if d in dialects}
    return data


def _quoter(dialect: str) -> Callable[[str], str]:
    from sqlalchemy.engine import make_url

    sa_dialect = make_url(f"{dialect}://").get_dialect()()
    return lambda name: quote_identifier(sa_dialect, name)
