"""One table's trouble ends its own step, not the run: a step of a tool that says
`skips_held_tables` whose table another session held past the lock wait (after every
attempt the retry rule allows), or whose table was dropped since the run read it, ends
skipped, not failed. Its output names each such table the way a step over many tables
names one it skipped (handlers/held.py): in skipped_tables with cause locked and the
sessions holding it, or in tables_gone. The maintenance report lists them, and the next
run plans the held tables first (commands/skipped.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError

from aishell.errors import (
    StepFailed,
    StepInterrupted,
    StepTimeout,
    TargetError,
    TargetUnreachable,
)
from aishell.executor.context import RunContext
from aishell.executor.failures import db_error, rollback
from aishell.handlers.held import GONE, is_gone
from aishell.registry import ToolDefinition
from aishell.targets.lockholders import blocking_sessions, is_lock_timeout, named_holders
from aishell.targets.locks import run_lock_name
from aishell.tool.context import ToolContext


@dataclass(frozen=True)
class TableSkip:
    """Why a step ends skipped rather than failed: its error line and its output."""

    error: str
    output: dict[str, Any]


def held_or_gone(
    run: RunContext,
    tool: ToolDefinition,
    params: Mapping[str, Any],
    ctx: ToolContext,
    exc: Exception,
    tries: int,
    during: str = "",
) -> TableSkip | None:
    """The skip a failure of the step comes to: every table of the step dropped since
    the run read it, or a lock on its tables not granted after `tries` tries. None when
    the tool does not skip held tables or the failure is neither: the step fails.
    `during` says when, if not while the step ran (" while it was measured")."""
    tables = list(dict.fromkeys(tool.tables_in(params)))
    if not tool.skips_held_tables or not tables or ctx.conn is None:
        return None
    if not isinstance(exc, DBAPIError) or not is_lock_timeout(exc):
        return _gone(run, params, tables, ctx, exc)
    conn = ctx.connection
    rollback(conn)  # the failed statement's transaction ends before anything is read
    # A step over many tables that goes on past one held table itself (handlers/held.py)
    # fails on the lock only when all of them were held; another (a site's tool) may
    # have waited on one: those another session holds now are named with their holders,
    # the others as left with them (all are named held when the server cannot say).
    run_lock = run_lock_name(conn)
    holders = {t: blocking_sessions(conn, [t], run_lock=run_lock) for t in tables}
    held = [t for t in tables if holders[t]] or tables
    tried = f"tried {tries} time{'s' if tries > 1 else ''}: {db_error(exc)}"
    entries = [
        {
            "table": t,
            "reason": (
                f"{tool.name} of {t} skipped: its lock was not granted within the lock "
                f"wait{during} ({tried}), held by {named_holders(holders[t])}"
                if t in held
                else f"{tool.name} of {t} skipped: the step's statements wait on "
                f"{', '.join(held)} as well, whose lock was not granted within the lock "
                f"wait{during} ({tried})"
            ),
            "cause": "locked",
        }
        for t in [*held, *(t for t in tables if t not in held)]
    ]
    output = _named(params, tables)
    output["skipped_tables"] = entries
    return TableSkip(entries[0]["reason"], output)


def _gone(
    run: RunContext,
    params: Mapping[str, Any],
    tables: list[str],
    ctx: ToolContext,
    exc: Exception,
) -> TableSkip | None:
    """The skip of a step whose every table was dropped since the run read it; None
    when one is still there. Asked only after a failure that may be a missing table:
    never after a limit or a lost connection, when the server may not answer."""
    if isinstance(exc, DBAPIError):
        maybe = is_gone(exc)
    else:
        maybe = isinstance(exc, StepFailed | TargetError) and not isinstance(
            exc, StepTimeout | StepInterrupted | TargetUnreachable
        )
    if not maybe or run.catalog is None:
        return None
    rollback(ctx.connection)
    try:
        gone = run.catalog.gone(ctx.connection, tables)
    except DBAPIError:
        return None  # the server cannot say: the step fails as it did
    if len(gone) < len(tables):
        return None
    output = _named(params, tables)
    output["tables_gone"] = gone
    return TableSkip(f"{', '.join(gone)}: {GONE}", output)


def _named(params: Mapping[str, Any], tables: list[str]) -> dict[str, Any]:
    """The keys every skipped step's output starts with: its table(s), none done."""
    output: dict[str, Any] = {"tables": tables, "tables_done": []}
    if isinstance(params.get("table"), str):
        output["table"] = params["table"]
    return output
