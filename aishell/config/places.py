"""Where in a home no file a step or a plan writes may go: aishell's own files, and
every folder it reads tools and config from (a new .yaml there is read as a tool)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aishell.config.cache import CACHE_FOLDER
from aishell.config.plugins import tool_folders
from aishell.config.resources import bundled_catalog_dir
from aishell.files import PrivatePlaces, private_places

if TYPE_CHECKING:
    from aishell.config.models import Config


def home_private_places(config: Config) -> PrivatePlaces:
    """Where no file a step or a plan writes may go in this config's home: its state,
    key, backups and config (files.private_places), and every folder it reads tools and
    config from: the agents' folders, the built-in catalog, the site's catalog_paths,
    the plugins' tool folders, the state folder's cache."""
    plugins = [folder for _, _, folder in tool_folders()[0]]
    read = [*config.agent_dirs, bundled_catalog_dir(), *config.catalog_paths, *plugins]
    return private_places(
        config.home,
        config.state_home,
        config.backup_dir,
        [config.agent_dirs[0].parent],
        [*read, config.state_home / CACHE_FOLDER],
    )
