"""The `fleet:` block of aishell.yaml: the broker fleet jobs go through, and how many runs
one database server takes at once.

The broker's URL holds no password: it comes from `password_env` (or the broker's own
defaults), so the config file can be shared and nothing secret reaches a log or the
state store.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aishell.config.bounds import MAX_RUN_TIME_SECONDS, MAX_TIMEOUT_SECONDS
from aishell.config.checks import check_secret_env_name
from aishell.config.fields import Integer, Number

BROKER_SCHEMES = ("amqp", "pyamqp", "redis", "rediss")


def check_broker_url(value: str) -> str:
    """An amqp:// (RabbitMQ) or redis:// URL without a password."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a port that is not a number raises only when read
    except ValueError:
        raise ValueError(
            "not a valid URL (expected amqp://user@host:5672// or redis://host:6379/0)"
        ) from None
    if parts.scheme not in BROKER_SCHEMES or not parts.hostname:
        raise ValueError(
            f"a broker is reached by {', '.join(s + '://' for s in BROKER_SCHEMES)} and a host"
        )
    if parts.password is not None:
        raise ValueError("holds a password: give it in the variable password_env names")
    return value


class FleetConfig(BaseModel):
    """Where fleet jobs are queued and how much of one server they may use."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    broker_url: str = "amqp://guest@127.0.0.1:5672//"
    # The broker's password comes from this environment variable.
    password_env: str | None = None
    # The queue fleet tasks go to: fleets that share a broker keep apart by it.
    queue: str = Field("aishell", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Runs at once on one database server (host and port), whatever their databases: a
    # host of fifty databases is not vacuumed fifty at a time. SQLite files count per file.
    per_server_limit: Integer = Field(2, ge=1, le=256)
    # How long a worker waits before it asks again for a server at its limit.
    slot_wait_seconds: Number = Field(2.0, gt=0, le=600)
    # Redis only: a task not acknowledged for this long is delivered again (its worker is
    # taken for dead); longer than the longest run, since a run in progress then meets its
    # own run lock in the second delivery and waits for it.
    visibility_timeout_seconds: Integer = Field(6 * 3600, ge=5, le=MAX_RUN_TIME_SECONDS)
    # How long the broker may take to accept a connection, and to answer once connected:
    # a broker that stopped answering ends `fleet run` (and a schedule's send) in this
    # long, with nothing sent or the tasks not sent named, instead of holding it for good.
    connect_timeout_seconds: Integer = Field(10, ge=1, le=MAX_TIMEOUT_SECONDS)
    read_timeout_seconds: Number = Field(30, ge=1, le=MAX_TIMEOUT_SECONDS)

    _broker = field_validator("broker_url")(check_broker_url)
    _password_env = field_validator("password_env")(check_secret_env_name)

    def broker(self, password: str | None) -> str:
        """The URL a worker connects with, the password put in (never shown or stored)."""
        if not password:
            return self.broker_url
        parts = urlsplit(self.broker_url)
        user = quote(parts.username or "", safe="")
        host = parts.hostname or ""
        netloc = f"{user}:{quote(password, safe='')}@{host}" + (
            f":{parts.port}" if parts.port else ""
        )
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
