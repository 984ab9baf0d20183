"""Imported by the fork server of tests/executor/prewarmed.py, once, before its first
fork: the modules an aishell command imports as it runs (the command modules, the lazy
packages' names, every handler and agent, the database drivers), so that a process
forked from it starts its command at once. Nothing here opens a file, a connection or
a thread: a fork of the server starts as a fresh `python -m aishell` would after its
imports. Never imported by the tests themselves (collecting them would pay for it).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from contextlib import suppress

# Named by the modules that import them on first use.
DRIVERS = (
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.mysql.pymysql",
    "sqlalchemy.dialects.mysql.mariadb",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "psycopg",
    "pymysql",
    "alembic.command",
    "alembic.config",
    "sqlglot.dialects.mysql",
    "sqlglot.dialects.postgres",
    "sqlglot.dialects.sqlite",
)
# Packages that hand out their names from submodules on first use (aishell/lazy.py).
LAZY_PACKAGES = ("aishell.commands", "aishell.executor", "aishell.render")
# Packages whose every module a command may import (the catalog names its handlers).
WHOLE_PACKAGES = ("aishell.handlers", "aishell.agents")


def _command_modules() -> None:
    from aishell.cli import SUBCOMMANDS

    for spec in SUBCOMMANDS.values():
        importlib.import_module(spec.partition(":")[0])


def _lazy_names() -> None:
    for name in LAZY_PACKAGES:
        package = importlib.import_module(name)
        for public in package.__all__:
            getattr(package, public)


def _whole_packages() -> None:
    for name in WHOLE_PACKAGES:
        root = importlib.import_module(name)
        for found in pkgutil.walk_packages(root.__path__, f"{name}."):
            importlib.import_module(found.name)


def _the_rest() -> None:
    # What the tests run in these processes besides aishell's commands, last.
    for name in (*DRIVERS, "tests.executor.prewarmed"):
        importlib.import_module(name)


def _warm() -> None:
    # A module that fails to import is left to the command that needs it, which then
    # fails as it would in a process of its own: the server starts all the same.
    warm: tuple[Callable[[], None], ...] = (
        _command_modules,
        _lazy_names,
        _whole_packages,
        _the_rest,
    )
    for part in warm:
        with suppress(Exception):
            part()


_warm()
