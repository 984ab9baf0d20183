"""The retry rule: a server error worth it (a lost connection, a deadlock, a lock timeout)
runs an idempotent step again after a doubling wait, on a new connection if it was lost;
the waits are the shared retry policy's (aishell.retry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from aishell.config.models import AgentDefaults
from aishell.errors import TargetLocked, TargetUnreachable
from aishell.executor.context import RunContext
from aishell.executor.failures import db_error, rollback
from aishell.executor.results import StepResult
from aishell.executor.statuses import INTERRUPTED
from aishell.executor.stopping import Stop
from aishell.guard.writtentables import tables_named
from aishell.registry import ToolDefinition
from aishell.retry.policy import Backoff, Retry, Try, retrying, tries
from aishell.targets.lockholders import is_lock_timeout, lock_holders
from aishell.tool.context import ToolContext

# Tries at a new connection after the server dropped ours, with doubling waits between.
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


def step_retrying(
    run: RunContext, result: StepResult, count: int, worth: Callable[[DBAPIError], bool]
) -> Iterator[Try]:
    """The tries of a step (or of its preparation), `count` in all: a server error
    `worth` another try is tried again after the agent's backoff, each wait recorded as
    a step_retry event. Out of tries, or on any other error, that error is raised."""

    def record(retry: Retry) -> None:
        error = retry.error
        assert isinstance(error, DBAPIError)  # only they are tried again
        data = {
            "attempt": retry.attempt,
            "error": db_error(error),
            "delay_seconds": round(retry.delay, 3),
        }
        run.record_event(result.index, "step_retry", data)

    backoff = Backoff(first_wait=run.agent.defaults.retry_backoff_seconds, attempts=count)
    return tries(
        backoff,
        on_error=lambda e: isinstance(e, DBAPIError) and worth(e),
        on_retry=record,
        sleep=run.stopping.wait,
    )


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
    few times with backoff, since a restarting server refuses connections a while; each
    refusal recorded. False when none could be made; a stop that came meanwhile (the
    run's time limit, a signal) ends the tries and the run, the step interrupted."""
    if ctx.conn is not None:
        with suppress(SQLAlchemyError):
            ctx.conn.close()
        ctx.conn = None

    def connect() -> None:
        try:
            ctx.conn = run.target.connect()
        except (TargetUnreachable, TargetLocked) as exc:
            run.record_event(result.index, "reconnect_failed", {"error": str(exc)})
            raise

    def worth(exc: BaseException) -> bool:
        return isinstance(exc, TargetUnreachable | TargetLocked) and run.stopping.reason() is None

    backoff = Backoff(
        first_wait=run.agent.defaults.retry_backoff_seconds, attempts=RECONNECT_ATTEMPTS
    )
    try:
        retrying(backoff, on_error=worth, sleep=run.stopping.wait)(connect)
    except (TargetUnreachable, TargetLocked):
        why = run.stopping.reason()
        if why is None:
            return False
        if result.status == "running":  # begun: resume takes it again
            run.finish(result, INTERRUPTED, error=why)
        raise Stop(INTERRUPTED, why) from None
    return True


class LostConnection:
    """The server error that lost a try's connection (a restart, a failover, a dropped
    link), for the next try to make it again first."""

    def __init__(self) -> None:
        self.error: DBAPIError | None = None

    def made_again(self, run: RunContext, ctx: ToolContext, result: StepResult) -> bool:
        """True when the last try kept its connection or a new one could be made."""
        return self.error is None or reconnect(run, ctx, result)

    @contextmanager
    def watch(self, ctx: ToolContext) -> Iterator[None]:
        """One try: a server error it raises rolls its session back, is kept when it lost
        the connection, and goes on to the retry rule."""
        try:
            yield
        except DBAPIError as exc:
            rollback(ctx.connection)
            self.error = exc if exc.connection_invalidated else None
            raise
