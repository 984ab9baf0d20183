"""The config of a serving scheduler, read again when its files change: a trigger after
a target, a window or an agent's settings were added runs on what the files hold then,
without a restart (a running serve read them once, and failed every such trigger)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from aishell.config.models import Config
from aishell.errors import AishellError

# The serve log's own: these are its lines.
logger = logging.getLogger("aishell.scheduling.serve")

Stamp = tuple[tuple[str, int, int], ...]


class ConfigWatch:
    """`reload` reads the config as the command read it; the stamp is what its files
    were when it was read."""

    def __init__(self, config: Config, reload: Callable[[], Config]) -> None:
        self.config, self.reload = config, reload
        self.stamp = config_stamp(config)

    def current(self) -> Config:
        """The config as its files say now; one that no longer loads is logged once and
        the one read before stays."""
        stamp = config_stamp(self.config)
        if stamp == self.stamp:
            return self.config
        self.stamp = stamp
        try:
            self.config = self.reload()
        except AishellError as exc:
            logger.error("config: not read again: %s; serving with the config read before", exc)
            return self.config
        self.stamp = config_stamp(self.config)
        logger.info("config: read again, as its files changed")
        return self.config


def config_stamp(config: Config) -> Stamp:
    """Each config file's path, size and change time: its main files and its agents'."""
    agents = (p for d in config.agent_dirs if d.is_dir() for p in d.glob("*.y*ml"))
    stamp = []
    for path in sorted({Path(p) for p in (*config.files, *agents)}):
        try:
            st = path.stat()
        except OSError:
            continue
        stamp.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(stamp)
