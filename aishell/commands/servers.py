"""The configured targets: listing them, checking a server, and the demo database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aishell.config.models import Config, resolve_url
from aishell.errors import ConfigError, UsageError
from aishell.targets.catalog import user_tables
from aishell.targets.demo import create_demo
from aishell.targets.engines import open_target


def list_targets(config: Config) -> list[dict[str, Any]]:
    """The configured targets; never their URLs' passwords."""
    from sqlalchemy.engine import make_url

    listed = []
    for name, target in sorted(config.main.targets.items()):
        url = make_url(resolve_url(target.url, config.home))
        listed.append(
            {
                "name": name,
                "dialect": url.get_backend_name(),
                "location": url.render_as_string(hide_password=True),
                "environment": target.environment,
                "description": target.description,
                "default": name == config.main.default_target,
            }
        )
    return listed


def check_target(config: Config, name: str | None = None) -> dict[str, Any]:
    """Connect to a target and report its server, privileges and extensions."""
    from aishell.agents.available import declared_privileges
    from aishell.handlers.server import describe_server

    handle = open_target(config, name, read_only=True)
    try:
        conn = handle.connect()
        try:
            info = describe_server(conn, declared_privileges(conn.dialect.name))
            info["tables"] = len(user_tables(conn))
        finally:
            conn.close()
    finally:
        handle.close()
    return {"target": handle.name, "dialect": handle.dialect, **info}


def create_demo_database(
    config: Config,
    target: str | None = None,
    log_rows: int = 200_000,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Create or refresh the demo SQLite database of a target (the default one: demo)."""
    if log_rows < 1:
        raise UsageError("--log-rows must be at least 1")
    name, target_config = config.target(target)
    url = resolve_url(target_config.url, config.home)
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"Target '{name}' is not a SQLite file; the demo only creates SQLite")
    path = Path(url[len("sqlite:///") :])
    counts = create_demo(path, log_rows=log_rows, progress=progress)
    return {"target": name, "path": str(path), "tables": counts, "size_bytes": path.stat().st_size}
