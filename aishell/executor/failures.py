"""How a server error reads in a step's or a run's error, and the rollback after one;
whose code failed when a tool's handler raised."""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

if TYPE_CHECKING:
    from aishell.registry import ToolDefinition


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


def whose_failure(tool: ToolDefinition, dialect: str) -> str:
    """Who failed: an installed package's handler is its own code, named by its module,
    not an internal error of aishell."""
    run_fn = getattr(tool.implementations.get(dialect), "run_fn", None)
    module = getattr(run_fn, "__module__", None) or "aishell"
    if module.split(".")[0] == "aishell":
        return f"internal error in {tool.name}"
    return f"the handler of {tool.name} ({module}, a package's own code) failed"
