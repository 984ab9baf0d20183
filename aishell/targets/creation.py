"""A target's database that does not exist yet: found, and made on request (`aishell
restore --create`), empty, with the target's own login."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

from aishell.config.dburl import resolve_url
from aishell.config.models import Config
from aishell.errors import TargetError
from aishell.files import file_in_the_way
from aishell.sqltext import text
from aishell.targets.engines import open_server

_EXISTS = {
    "postgresql": "SELECT 1 FROM pg_catalog.pg_database WHERE datname = :name",
    "mysql": "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name",
}


def missing_database(config: Config, name: str) -> str | None:
    """Target `name`'s database (a SQLite file's path) when it does not exist; None
    when it does. A server that cannot be reached or refuses the login raises."""
    sqlite = _sqlite_path(config, name)
    if sqlite is not None:
        return None if sqlite.is_file() else str(sqlite)
    server, database = open_server(config, name)
    try:
        with server.connect() as conn:
            found = conn.execute(text(_EXISTS[server.dialect]), {"name": database}).first()
    finally:
        server.close()
    return None if found is not None else str(database)


def create_database(config: Config, name: str) -> str:
    """Make target `name`'s empty database; its name (or file). From template0 on
    PostgreSQL, as a restore of pg_dump's archive needs; a SQLite file private (0600)."""
    sqlite = _sqlite_path(config, name)
    if sqlite is not None:
        blocking = file_in_the_way(sqlite)
        if blocking is not None:
            raise TargetError(
                f"Target '{name}': its file {sqlite} cannot be made: {blocking} is a file, "
                "not a folder; move it away, or give the target a url in a folder"
            )
        if not sqlite.parent.is_dir():
            raise TargetError(f"Target '{name}': the folder {sqlite.parent} does not exist")
        # An empty file is an empty SQLite database; O_EXCL: never one someone made since.
        os.close(os.open(sqlite, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return str(sqlite)
    server, database = open_server(config, name)
    if not database:
        raise TargetError(f"Target '{name}' names no database to create")
    try:
        with server.connect() as conn:
            template = " TEMPLATE template0" if server.dialect == "postgresql" else ""
            conn.execute(text(f"CREATE DATABASE {server.quote(database)}{template}"))
    finally:
        server.close()
    return database


def _sqlite_path(config: Config, name: str) -> Path | None:
    url = make_url(resolve_url(config.target(name)[1].url, config.home))
    return Path(url.database or "") if url.get_backend_name() == "sqlite" else None
