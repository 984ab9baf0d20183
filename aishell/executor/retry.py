"""The retry rule: a server error worth it (a lost connection, a deadlock, a lock timeout)
runs an idempotent step again after a doubling wait, on a new connection if it was lost."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from aishell.config.models import AgentDefaults
from aishell.errors import TargetUnreachable
from aishell.executor.context import RunContext
from aishell.executor.failures import db_error, rollback
from aishell.executor.results import StepResult
from aishell.guard.writtentables import tables_named
from aishell.registry import ToolDefinition
from aishell.targets.lockholders import is_lock_timeout, lock_holders
from aishell.tool.context import ToolContext

# Tries at a new connection after the server dropped ours, with doubling waits.
RECONNECT_ATTEMPTS = 4


def allowed_retries(tool: ToolDefinition, defaults: AgentDefaults) -> int:
    """How many times a step may run again after its first attempt: only an idempotent
    tool's, up to the agent's max_retries and the tool's own."""
    retries = 0
    if tool.idempotent:
        retries = defaults.max_retries
        if tool.max_retries is not None:
            retries = min(retries, tool.max_retries)
    return retries


def wait_to_retry(
    run: RunContext, ctx: ToolContext, result: StepResult, exc: DBAPIError, attempt: int
) -> bool:
    """Wait before the next attempt, and reconnect if the server dropped the connection;
    False when no new connection could be made."""
    delay = run.agent.defaults.retry_backoff_seconds * 2 ** (attempt - 1)
    delay *= random.uniform(0.5, 1.5)  # jitter: retries of many runs spread out
    run.record_event(
        result.index,
        "step_retry",
        {"attempt": attempt, "error": db_error(exc), "delay_seconds": round(delay, 3)},
    )
    time.sleep(delay)
    return not exc.connection_invalidated or reconnect(run, ctx, result)


def unreachable(run: RunContext, exc: DBAPIError) -> str:
    """The step's error when the connection was lost and could not be made again."""
    return (
        f"lost the connection to target '{run.target.name}' ({db_error(exc)}) and could "
        f"not reconnect; `aishell resume {run.run_id}` once the server is back"
    )


def final_error(
    run: RunContext,
    ctx: ToolContext,
    tool: ToolDefinition,
    params: dict[str, Any],
    exc: DBAPIError,
    attempt: int,
) -> str:
    """The step's error after its last attempt; a lock timeout names who held the lock."""
    message = db_error(exc)
    if exc.connection_invalidated:
        message = (
            f"lost the connection to target '{run.target.name}': {message}; "
            f"`aishell resume {run.run_id}` once the server is back"
        )
    if is_lock_timeout(exc):
        message += f"; after {attempt} attempt(s) the lock was still held"
        message += lock_held_by(ctx, exc, tool.tables_in(params))
    return message


def lock_held_by(ctx: ToolContext, exc: DBAPIError, tables: Sequence[str] = ()) -> str:
    """The words " by <holders>" for a lock timeout, its holders found by the tables
    given and its statement's (a purge's archive table is not the step's table); empty
    where none can be found (PostgreSQL, no table known)."""
    named = tables_named(exc.statement or "", ctx.dialect)
    tables = [*tables, *(t for t in named if t not in tables)]
    if not tables and ctx.dialect == "postgresql":
        return ""
    # aishell never cancels other sessions; it names them.
    rollback(ctx.connection)
    return " by " + lock_holders(ctx.connection, tables)


def reconnect(run: RunContext, ctx: ToolContext, result: StepResult) -> bool:
    """A new connection after the server dropped ours (a restart, a failover): tried a
    few times with backoff, since a restarting server refuses connections a while."""
    if ctx.conn is not None:
        with suppress(SQLAlchemyError):
            ctx.conn.close()
        ctx.conn = None
    delay = run.agent.defaults.retry_backoff_seconds
    for _ in range(RECONNECT_ATTEMPTS):
        try:
            ctx.conn = run.target.connect()
            return True
        except TargetUnreachable as exc:
            run.record_event(result.index, "reconnect_failed", {"error": str(exc)})
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay *= 2
    return False
