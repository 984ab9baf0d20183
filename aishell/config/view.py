"""The config as the listing commands read it (`targets list`, `runs list`, `tools list`):
what they show of it, read-only, without pydantic.

`load_view` finds the home and its config files as `load_config` does and reads their
bytes. When the listings' cache (config/cache.py) holds the view a full load made of
exactly those bytes, that is the view; otherwise the config is loaded and checked in
full (models.config_from, from the same bytes: a broken file is refused with the same
one-line error), and its view kept for the next listing. A view keeps no password: a
URL's password is *** in it (dburl.without_password), so it only shows URLs, and a
command that connects loads the config in full.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aishell.config.cache import cache_file, cached, digest, keep
from aishell.config.dburl import parse_url, resolve_url, without_password
from aishell.config.home import ConfigFiles, Home, config_files, find_home, named_config
from aishell.config.sources import read_source

if TYPE_CHECKING:
    from aishell.config.models import Config

CONFIG_ENTRY = "config"


@dataclass(frozen=True)
class TargetView:
    """A configured target as a listing shows it."""

    shown_url: str  # its URL with any password as ***
    environment: str
    description: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ConfigView:
    """What the listings read of a loaded config."""

    path: Path  # the file messages name, as Config.path
    home: Path
    state_dir: Path | None
    default_target: str
    targets: dict[str, TargetView]  # in the config's order
    state_url: str  # state.url as written, any password as ***
    state_password: bool  # state.password_env is set: a password goes into its URL
    catalog_paths: tuple[str, ...]
    # The config loaded in full, for what the view cannot do (open a store on a server).
    full: Callable[[], Config] = field(compare=False, repr=False)

    @property
    def state_home(self) -> Path:
        return self.state_dir or self.home

    @property
    def catalog_folders(self) -> list[Path]:
        """The site's tool folders, as Config.catalog_paths."""
        return [self.home / p for p in self.catalog_paths]

    def state_file(self) -> Path | None:
        """The state store's file when it is a plain SQLite file (no password variable, no
        query but SQLite's own busy timeout, which the timeouts of a store on a server
        leave alone): the one a stdlib reader may open; None for any other store."""
        if self.state_password:
            return None
        parts = parse_url(resolve_url(self.state_url, self.state_home))
        if parts is None or parts.drivername not in ("sqlite", "sqlite+pysqlite"):
            return None
        if set(parts.query) - {"timeout"} or parts.username is not None:
            return None
        database = parts.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database)


def view_of(config: Config) -> ConfigView:
    """The view of a config loaded in full."""
    main = config.main
    state = main.state
    return ConfigView(
        path=config.path,
        home=config.home,
        state_dir=config.state_dir,
        default_target=main.default_target,
        targets={
            name: TargetView(without_password(t.url), t.environment, t.description, tuple(t.tags))
            for name, t in main.targets.items()
        },
        state_url=without_password(state.url),
        state_password=bool(state.password_env),
        catalog_paths=tuple(main.catalog_paths),
        full=lambda: config,
    )


def _data(view: ConfigView, group_readable: bool) -> dict[str, Any]:
    """What the cache keeps of a view: what the files said (the paths come from finding
    the home again)."""
    return {
        "default_target": view.default_target,
        "targets": {
            name: [t.shown_url, t.environment, t.description, list(t.tags)]
            for name, t in view.targets.items()
        },
        "state": [view.state_url, view.state_password],
        "catalog_paths": list(view.catalog_paths),
        "group_readable": group_readable,
    }


def load_view(
    config_path: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> ConfigView:
    """The view of the config load_config(config_path, home) would load: from the cache
    when it holds these files' bytes, else loaded in full (and kept)."""
    where = find_home(home)
    files = config_files(where, named_config(config_path))
    sources = {path: read_source(path) for path in files.layers}
    key = digest(part for path, raw in sources.items() for part in (str(path), raw))
    entry = cache_file(where.state_dir, CONFIG_ENTRY)
    data = cached(entry, key)
    try:
        view = _from_data(data, where, files)
        group_readable = data["group_readable"] is True
    except (KeyError, TypeError, ValueError, AttributeError):  # no entry, or not of this shape
        view = None
    if view is not None:
        if group_readable:  # as config_from sets it (the default is off)
            from aishell.files import set_group_readable

            set_group_readable(True)
        return view
    # Here, not at the top: the models (pydantic, SQLAlchemy's URL checks) are the miss.
    from aishell.config.models import config_from

    config = config_from(where, files, sources)
    view = view_of(config)
    keep(entry, key, _data(view, config.main.files.group_readable))
    return view


def _from_data(data: dict[str, Any], where: Home, files: ConfigFiles) -> ConfigView:
    targets = {
        str(name): TargetView(str(url), str(env), str(text), tuple(map(str, tags)))
        for name, (url, env, text, tags) in data["targets"].items()
    }
    state_url, state_password = data["state"]
    return ConfigView(
        path=files.main,
        home=where.data_dir,
        state_dir=where.state_dir,
        default_target=str(data["default_target"]),
        targets=targets,
        state_url=str(state_url),
        state_password=bool(state_password),
        catalog_paths=tuple(map(str, data["catalog_paths"])),
        full=lambda: _full(where, files),
    )


def _full(where: Home, files: ConfigFiles) -> Config:
    from aishell.config.models import config_from

    return config_from(where, files)
