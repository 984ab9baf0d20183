"""The listing commands: the configured targets, the runs the state store holds, the
tool catalog. Each takes the config's view (config/view.py) or a config loaded in full,
and answers the same either way.

They are the commands people run most, so each pays only for what it shows: no
pydantic, SQLAlchemy, SQL parser or database driver when its sources are unchanged
(docs/performance.md). `targets list` reads the view; `runs list` reads a SQLite store
with the standard library (state/runlist.py); `tools list` keeps the catalog's listing
in the listings' cache (config/cache.py), keyed by the bytes of every tool file and the
installed packages' `aishell.tools` entry points. Whatever is not as they expect goes
the full way, which says what is wrong as it always has.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aishell.config.cache import cache_file, digest, keep, read_entry
from aishell.config.dburl import parse_url, resolve_url
from aishell.config.kinds import Category
from aishell.config.resources import bundled_catalog_dir
from aishell.config.selection import select_from
from aishell.config.sources import read_source
from aishell.config.view import ConfigView, view_of
from aishell.errors import ConfigError
from aishell.risk import RiskLevel

if TYPE_CHECKING:
    from aishell.config.models import Config

CATALOG_ENTRY = "catalog"


def as_view(config: Config | ConfigView) -> ConfigView:
    return config if isinstance(config, ConfigView) else view_of(config)


def list_targets(config: Config | ConfigView, targets: str | None = None) -> list[dict[str, Any]]:
    """The configured targets, by name (those the selector `targets` picks, when given:
    config/selection.py); never their URLs' passwords."""
    view = as_view(config)
    chosen = set(view.targets if targets is None else _selected(view, targets))
    listed = []
    for name, target in sorted(view.targets.items()):
        if name not in chosen:
            continue
        url = parse_url(resolve_url(target.shown_url, view.home))
        if url is None:  # the config's check parsed it: never here
            raise ConfigError(f"{view.path}: targets.{name}.url: not a valid database URL")
        listed.append(
            {
                "name": name,
                "dialect": url.backend,
                "location": url.shown(),
                "environment": target.environment,
                "description": target.description,
                "tags": list(target.tags),
                "default": name == view.default_target,
            }
        )
    return listed


def list_runs(
    config: Config | ConfigView,
    status: str | None = None,
    limit: int = 50,
    targets: str | None = None,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """The newest runs first; only those of the targets the selector `targets` picks
    (config/selection.py) when given, else every run the store holds; `after`: those
    listed after that run (its full id), RunNotFound where the store holds none."""
    # Here, not at the top: the other listings open no store.
    from aishell.state.runlist import read_runs

    view = as_view(config)
    names = None if targets is None else _selected(view, targets)
    path = view.state_file()
    found = None if path is None else read_runs(path, status, limit, names, after)
    if found is not None:
        return found
    from aishell.state.store import StateStore  # the full way: make, upgrade or refuse

    # A list checks no signature: it needs no key (and works while the key is refused).
    with StateStore(view.full().state_url) as store:
        return store.list_runs(status=status, limit=limit, targets=names, after=after)


def runs_page(
    config: Config | ConfigView,
    status: str | None = None,
    limit: int = 50,
    targets: str | None = None,
    after: str | None = None,
) -> dict[str, Any]:
    """A page of list_runs: `runs`, and `next_after`, the run the next page is listed
    after (None: this page is the last). One run more is read, to know."""
    found = list_runs(config, status, limit + 1, targets, after)
    shown = found[:limit]
    return {"runs": shown, "next_after": shown[-1]["run_id"] if len(found) > limit else None}


def list_tools(
    config: Config | ConfigView, category: str | None = None, risk: str | None = None
) -> list[dict[str, Any]]:
    """The catalog's tools (of one category, of one risk level), by name, each as its
    metadata (ToolDefinition.metadata)."""
    wanted_category = None if category is None else Category(category).value
    wanted_risk = None if risk is None else RiskLevel(risk).value
    return [
        tool
        for tool in catalog_listing(as_view(config))
        if wanted_category in (None, tool["category"]) and wanted_risk in (None, tool["risk_level"])
    ]


def catalog_listing(view: ConfigView) -> list[dict[str, Any]]:
    """Every tool's metadata, by name: from the listings' cache when every tool file and
    plugin is as it was, else from the catalog loaded in full (then kept). A plugin's
    tool file refused at load is told on stderr either way."""
    # Here, not at the top: the other listings need no plugins.
    from aishell.config.plugins import PluginFailure, warn

    path = cache_file(view.state_home, CATALOG_ENTRY)
    entry: dict[str, Any] = read_entry(path) or {}
    data: Any = entry.get("data")
    try:
        key = _catalog_key(view, data["plugin_folders"])
        if key is not None and entry["key"] == key:
            refused = [PluginFailure(*told) for told in data["refused"]]
            tools: list[dict[str, Any]] = list(data["tools"])
            warn(refused)
            return tools
    except (KeyError, TypeError, ValueError):  # no entry, or not one of this shape
        pass
    return _load_listing(view, path)


def _load_listing(view: ConfigView, path: Path) -> list[dict[str, Any]]:
    """The listing from the catalog loaded in full; kept when every plugin's entry point
    loaded and no tool file changed while it loaded."""
    # Here, not at the top: the full load (pydantic, the SQL parser, the handlers).
    from aishell.commands.tools import catalog_from, refused_tools
    from aishell.config.plugins import tool_folders

    folders, failures = tool_folders()
    plugin_folders = [str(folder) for _, _, folder in folders]
    before = _catalog_key(view, plugin_folders)
    registry = catalog_from(view.catalog_folders, (folders, failures), view.state_home)
    tools = [tool.metadata() for tool in registry.find()]
    if not failures and before is not None and before == _catalog_key(view, plugin_folders):
        refused = [
            [f.group, f.name, f.package, f.error, f.refused_file]
            for f in refused_tools(registry, folders)
        ]
        data = {"plugin_folders": plugin_folders, "refused": refused, "tools": tools}
        keep(path, before, data)
    return tools


def _catalog_key(view: ConfigView, plugin_folders: list[Any]) -> str | None:
    """The digest of every tool file the catalog loads (the built-in folder, the site's,
    the plugins'), by folder, name and bytes, and of the installed packages' tool entry
    points; None when a folder or file cannot be read as the loader reads it (the full
    load then says so)."""
    from aishell.config.plugins import TOOLS_GROUP, entry_point_stamp

    parts: list[str | bytes] = [entry_point_stamp(TOOLS_GROUP)]
    site = [bundled_catalog_dir(), *view.catalog_folders]
    for kind, folders in (("site", site), ("plugin", plugin_folders)):
        for folder in map(Path, folders):
            parts.append(f"{kind}:{folder}")
            try:
                names = sorted(n for n in os.listdir(folder) if n.endswith(".yaml"))
                parts += [p for n in names for p in (n, read_source(folder / n, "tool file"))]
            except (OSError, ConfigError):
                return None
    return digest(parts)


def _selected(view: ConfigView, selector: str) -> list[str]:
    return select_from(view.targets, selector, str(view.path))
