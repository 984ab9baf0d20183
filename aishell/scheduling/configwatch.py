"""The config of a serving scheduler, read again when its files change: a trigger after
a target, a window or an agent's settings were added runs on what the files hold then,
without a restart (a running serve read them once, and failed every such trigger).
Files changed into a config that no longer loads run no trigger: the config read before
may name a database the target no longer points at, or an environment or constraints
the DBA has since tightened, so each trigger is refused until the files load again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from aishell.config.models import Config
from aishell.errors import AishellError

# The serve log's own: these are its lines.
logger = logging.getLogger("aishell.scheduling.serve")

Stamp = tuple[tuple[str, int, int], ...]
# Stores and notifies a trigger that is not run, with why: (config, name, how, why).
Refuse = Callable[[Config, str, str, str], None]


class ConfigUnreadable(AishellError):
    """The config's files changed and no longer load: no trigger runs on the old one."""


class ConfigWatch:
    """`reload` reads the config as the command read it; the stamp is what its files
    were when it was read."""

    def __init__(self, config: Config, reload: Callable[[], Config]) -> None:
        self.config, self.reload = config, reload
        self.stamp = config_stamp(config)
        self.unreadable: str | None = None  # why the files, as they are, do not load

    def current(self) -> Config:
        """The config as its files say now. Files that no longer load are logged once
        and raise ConfigUnreadable at each call until they change again."""
        stamp = config_stamp(self.config)
        if stamp == self.stamp:
            if self.unreadable is not None:
                raise ConfigUnreadable(self.unreadable)
            return self.config
        self.stamp = stamp
        try:
            self.config = self.reload()
        except AishellError as exc:
            self.unreadable = (
                f"the config's files changed and no longer load ({' '.join(str(exc).split())}); "
                "no trigger runs on the config read before: fix the files"
            )
            logger.error("config: not read again: %s", self.unreadable)
            raise ConfigUnreadable(self.unreadable) from None
        self.unreadable = None
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


def refused(refuse: Refuse | None, config: Config, trigger: tuple[str, str], why: str) -> None:
    """A trigger not run: a cron trigger is a failed run, stored and notified; runs left
    behind are taken back by the schedule's next trigger."""
    name, how = trigger
    if how == "cron" and refuse is not None:
        refuse(config, name, how, why)
    else:
        logger.error("schedule %s: not started: %s", name, why)
