"""The URL the state store is opened with: the state section's settings put in it (a
SQLite store's busy timeout, a server store's timeouts, the password from its
environment variable)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from aishell.config.checks import env_password
from aishell.errors import ConfigError


def with_settings(
    url: str,
    *,
    busy_timeout_ms: int | None,
    timeouts: dict[str, str],
    password_env: str | None,
    config_path: Path,
) -> str:
    """url with the state section's settings in it (Config.state_url calls this only when
    it has any); config_path is named in errors."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"{config_path}: state.url: not a valid database URL") from None
    if busy_timeout_ms is not None and parsed.get_backend_name() == "sqlite":
        # The SQLite driver's own busy timeout, in seconds; the store reads it back.
        parsed = parsed.update_query_dict({"timeout": str(busy_timeout_ms / 1000)})
    if timeouts and parsed.get_backend_name() != "sqlite":
        # Read back, and taken out, by the store (state/serverstore.py).
        parsed = parsed.update_query_dict(timeouts)
    if password_env:
        where = f"state.password_env in {config_path}"
        password = env_password(password_env, "The state store's password", where)
        parsed = parsed.set(password=password)
    return parsed.render_as_string(hide_password=False)


def display_url(url: str) -> str:
    """A database URL fit to print or store: a SQLite file as its path, any other URL
    with its password as ***; text that is no URL is not repeated."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return "(an invalid database URL)"
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return str(parsed.database)
    return parsed.render_as_string(hide_password=True)
