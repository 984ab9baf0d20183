"""Which server errors are worth a retry of the step."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError

# Errors worth a retry: the same statement may well succeed a moment later.
_TRANSIENT_SQLSTATES = {
    "40001",
    "40P01",
    "55P03",
    "57P01",
    "57P02",
    "57P03",
    "08000",
    "08003",
    "08006",
}
_TRANSIENT_MYSQL_CODES = {1205, 1213, 2006, 2013}
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database is busy")


def is_transient(exc: DBAPIError) -> bool:
    """A lost connection, a deadlock, a serialization failure or a lock timeout."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _TRANSIENT_MYSQL_CODES:
        return True
    message = str(orig).lower()
    return any(marker in message for marker in _TRANSIENT_SQLITE)
