"""The `state:` section of aishell.yaml, and the URL the state store is opened with: the
section's settings put in it (a SQLite store's busy timeout, a server store's timeouts,
the password from its environment variable)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote_plus

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aishell.config.bounds import MAX_TIMEOUT_SECONDS
from aishell.config.checks import check_secret_env_name, check_url, env_password
from aishell.config.dburl import HIDDEN, is_secret_key, resolve_url
from aishell.config.fields import Integer, Number
from aishell.errors import ConfigError
from aishell.files import make_private_dirs


class StateConfig(BaseModel):
    """The `state:` block of aishell.yaml: where the state store is, and its timeouts."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    url: str = "sqlite:///state.db"
    # As for targets: the password comes from this variable, never a shared file's URL.
    password_env: str | None = None
    # How long a SQLite store waits for another process's lock before it gives up;
    # null: the URL's own `timeout` query parameter, or 10 seconds.
    busy_timeout_ms: Integer | None = Field(None, ge=1, le=3_600_000)
    # A store on a server, as for targets: how long connecting may take, and how long a
    # statement waits for the server's answer before the store fails with one line
    # (see state/serverstore.py); null: the URL's own `connect_timeout` and
    # `read_timeout` query parameters, or 10 and 600 seconds.
    connect_timeout_seconds: Integer | None = Field(None, ge=1, le=MAX_TIMEOUT_SECONDS)
    read_timeout_seconds: Number | None = Field(None, ge=1, le=MAX_TIMEOUT_SECONDS)

    _url = field_validator("url")(check_url)
    _password_env = field_validator("password_env")(check_secret_env_name)

    def server_timeouts(self) -> dict[str, str]:
        """The timeouts set here, as a server store's URL carries them (its query)."""
        found = {"connect_timeout": self.connect_timeout_seconds}
        found["read_timeout"] = self.read_timeout_seconds  # type: ignore[assignment]
        return {name: str(value) for name, value in found.items() if value is not None}


def state_url(
    url: str,
    state_home: Path,
    *,
    busy_timeout_ms: int | None,
    timeouts: dict[str, str],
    password_env: str | None,
    config_path: Path,
) -> str:
    """The URL the state store is opened with (the state section's `url` and settings),
    its password (password_env) in it: print display_url of it, never this."""
    resolved = resolve_url(url, state_home)
    if resolved != url:  # a file in the home's state folder: aishell's to make
        make_private_dirs(state_home, 0o700)  # its own alone, whatever files say
    if not password_env and busy_timeout_ms is None and not timeouts:
        return resolved
    return with_settings(
        resolved,
        busy_timeout_ms=busy_timeout_ms,
        timeouts=timeouts,
        password_env=password_env,
        config_path=config_path,
    )


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
    # Here, not at the top: a SQLite store without settings needs no SQLAlchemy.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

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
        whose = "The state store's password"
        password = env_password(password_env, whose, "state.password_env", config_path)
        parsed = parsed.set(password=password)
    return parsed.render_as_string(hide_password=False)


def display_url(url: str) -> str:
    """A database URL fit to print or store: a SQLite file as its path, any other URL
    with its password as ***; text that is no URL is not repeated."""
    # Here, not at the top: a SQLite store without settings needs no SQLAlchemy.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return "(an invalid database URL)"
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return str(parsed.database)
    # A password in the query (libpq's ?password=) is hidden as the URL's own is.
    hidden = {key: HIDDEN for key in parsed.query if is_secret_key(key)}
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace(f"={quote_plus(HIDDEN)}", f"={HIDDEN}")  # as dburl shows it
