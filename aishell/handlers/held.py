"""One table at a time: a step over many tables that a lock or a dropped table stopped
goes on with the others. A table the server could not lock within the target's lock
wait is tried again once after the others, then skipped, named with the sessions
holding it; a table dropped since the plan is reported gone, not as a failure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import StepSkipped
from aishell.targets.lockholders import is_lock_timeout, lock_holders
from aishell.targets.servermessage import server_message
from aishell.tool.readings import TableReadings

T = TypeVar("T")

# The reason given for a table dropped since the plan: reported as gone, on every engine
# (by the steps over many tables here, and by a step of one: executor/heldtables.py).
GONE = "gone: dropped since the plan"


@dataclass
class Tablewise(Generic[T]):
    """What one table at a time came to: each table's result, the tables held (with
    why, holders named) and the tables gone."""

    done: dict[str, T] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)
    # The last lock error, for a caller whose every table was held.
    lock_error: DBAPIError | None = None


def is_gone(exc: DBAPIError) -> bool:
    """The statement named a table that no longer exists (dropped since the plan)."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "42P01":
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    if args and args[0] == 1146:
        return True
    return str(orig).startswith("no such table")


def worth_one_at_a_time(exc: DBAPIError) -> bool:
    """An error of one table, not of the step: the others may still be done."""
    return is_lock_timeout(exc) or is_gone(exc)


def one_at_a_time(
    conn: Connection,
    tables: Sequence[str],
    work: Callable[[str], T],
    what: str,
    known: TableReadings | None = None,
) -> Tablewise[T]:
    """`work` for each table alone; a held table gets its second try after the others,
    since the holder may be done by then. `what` names the work in the reasons. A table
    a preview already found held (`known`, tool/readings.py) is not waited on again."""
    found: Tablewise[T] = Tablewise()
    known = known or TableReadings()
    waits = _each(conn, list(tables), work, found, known)
    waits = _each(conn, waits, work, found, known)
    for table in waits:
        seen = known.held(table)
        how = (
            "its lock was not granted within the lock wait (tried twice)"
            if seen is None
            else f"held when the preview looked ({server_message(seen)})"
        )
        found.held[table] = (
            f"{what} of {table} skipped: {how}, held by {lock_holders(conn, [table])}"
        )
    return found


def _each(
    conn: Connection,
    tables: list[str],
    work: Callable[[str], T],
    found: Tablewise[T],
    known: TableReadings,
) -> list[str]:
    """One pass: each table's work into `found`; the tables whose lock timed out."""
    waits: list[str] = []
    for table in tables:
        held = known.held(table)
        if isinstance(held, DBAPIError):
            waits.append(table)
            found.lock_error = held
            continue
        try:
            found.done[table] = work(table)
        except DBAPIError as exc:
            rollback(conn)
            if is_gone(exc):
                found.gone.append(table)
            elif is_lock_timeout(exc):
                waits.append(table)
                found.lock_error = exc
                known.found_held(table, exc)
            else:
                raise
    return waits


def rollback(conn: Connection) -> None:
    """The failed statement's transaction ended, so the next statement can run."""
    with suppress(DBAPIError):
        conn.rollback()


def tablewise_output(found: Tablewise[Any]) -> dict[str, Any]:
    """A step's keys for the tables it did, skipped and found gone (the last two only
    when there are any): the same on every engine, read by the maintenance report."""
    output: dict[str, Any] = {"tables_done": [t for t in found.done if t not in found.gone]}
    if found.held:
        output["skipped_tables"] = [
            {"table": t, "reason": why, "cause": "locked"} for t, why in found.held.items()
        ]
    if found.gone:
        output["tables_gone"] = list(found.gone)
    return output


def unless_none_done(
    done: bool, skipped: list[dict[str, Any]], gone: list[str], output: dict[str, Any]
) -> dict[str, Any]:
    """A step over many tables' output; when it did none of them, the step ends skipped
    with the first reason (a table skipped, else one gone) and that output."""
    if not done:
        first = skipped[0]["reason"] if skipped else f"{gone[0]}: {GONE}"
        raise StepSkipped(first, output)
    return output
