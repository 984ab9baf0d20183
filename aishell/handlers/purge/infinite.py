"""PostgreSQL's infinite dates, which no Python date holds, read as the text the server
writes (`infinity`, `-infinity`): a row dated -infinity is older than any cutoff, and an
archive file keeps it as written instead of stopping every batch that reaches it."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy.engine import Connection

_INFINITE = (b"infinity", b"-infinity")


def read_infinite_dates(conn: Connection) -> None:
    """The connection's later reads give an infinite date as its text (PostgreSQL only;
    for the session the connection holds now)."""
    if conn.dialect.name != "postgresql":
        return
    adapters = conn.connection.dbapi_connection.adapters  # type: ignore[union-attr]
    for name, loader in _loaders().items():
        adapters.register_loader(name, loader)


@cache
def _loaders() -> dict[str, type[Any]]:
    # Here, not at the top: a purge of another engine never imports the driver.
    from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader

    return {
        "date": _as_text(DateLoader),
        "timestamp": _as_text(TimestampLoader),
        "timestamptz": _as_text(TimestamptzLoader),
    }


def _as_text(base: type[Any]) -> type[Any]:
    class Infinite(base):  # type: ignore[misc]
        def load(self, data: Any) -> Any:
            if bytes(data) in _INFINITE:
                return bytes(data).decode()
            return super().load(data)

    return Infinite
