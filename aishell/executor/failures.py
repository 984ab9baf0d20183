"""How a server error reads in a step's or a run's error, and the rollback after one."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError


def rollback(conn: Connection) -> None:
    # Unconditionally: after a failed COMMIT in_transaction() is False, yet the
    # connection still needs its rollback before it takes another statement.
    with suppress(SQLAlchemyError):
        conn.rollback()


def db_error(exc: DBAPIError) -> str:
    # A tool adds notes to a server error to say what it did about it (leftovers dropped).
    notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    if len(args) == 2 and isinstance(args[0], int):  # PyMySQL: (code, message)
        return f"{args[1]} (error {args[0]}){notes}"
    text = str(exc.orig).strip() or type(exc.orig).__name__
    return text.splitlines()[0] + notes
