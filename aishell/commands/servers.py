"""The configured targets: listing them, checking a server, and the demo database."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aishell.commands.breaker import close_breakers
from aishell.config.dburl import resolve_url
from aishell.config.models import Config
from aishell.config.selection import select_targets
from aishell.errors import AishellError, ConfigError, UsageError
from aishell.targets.catalog import user_tables
from aishell.targets.engines import open_target


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
    close_breakers(config, [handle.name])
    return {"target": handle.name, "dialect": handle.dialect, **info}


def check_targets(config: Config, targets: str) -> list[dict[str, Any]]:
    """check_target on each target the selector `targets` picks, side by side; one that
    fails is listed with its `error` (one line) and the others are still checked."""
    names = select_targets(config, targets)

    def checked(name: str) -> dict[str, Any]:
        try:
            return check_target(config, name)
        except AishellError as exc:
            return {"target": name, "error": str(exc)}

    # Side by side: a target that does not answer costs its connect timeout once.
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        return list(pool.map(checked, names))


def create_demo_database(
    config: Config,
    target: str | None = None,
    log_rows: int = 200_000,
    progress: Callable[[str, int], None] | None = None,
    users: int = 5_000,
    orders: int = 60_000,
) -> dict[str, Any]:
    """Create or refresh the demo SQLite database of a target (the default one: demo)."""
    for option, rows in (("--log-rows", log_rows), ("--users", users), ("--orders", orders)):
        if rows < 1:
            raise UsageError(f"{option} must be at least 1")
    name, target_config = config.target(target)
    url = resolve_url(target_config.url, config.home)
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"Target '{name}' is not a SQLite file; the demo only creates SQLite")
    path = Path(url[len("sqlite:///") :])
    # Here, not at the top: it imports sqlite3, which listing targets does not need.
    from aishell.targets.demo import create_demo

    counts = create_demo(path, log_rows=log_rows, users=users, orders=orders, progress=progress)
    return {"target": name, "path": str(path), "tables": counts, "size_bytes": path.stat().st_size}
