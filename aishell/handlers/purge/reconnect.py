"""A lost server: a purge whose session goes (a server restart, a terminated backend, a
broken network) is rolled back and reconnected with backoff, then goes on from its
checkpoint; a server that stays away stops the step resumably with the reason."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import suppress
from functools import partial
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import StepInterrupted
from aishell.handlers.purge.attempt import Attempt, first_line, stopped_resumably
from aishell.retry.policy import Backoff, retrying
from aishell.sqltext import text
from aishell.tool.context import ToolContext
from aishell.units import exact, took

# Default of reconnect_seconds (the tool's schema and the agent's config say the same).
RECONNECT_SECONDS = 120.0
# The waits between tries: about this long at first, doubling up to about the longest.
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 15.0
MAX_LOST_IN_A_ROW = 5
# A lost session: PostgreSQL's server shutting down or starting up (SQLSTATE class 08 is
# a broken connection); MySQL's "server has gone away" and "lost connection".
LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
LOST_MYSQL_CODES = frozenset({2006, 2013})


def connection_lost(exc: DBAPIError, conn: Connection) -> bool:
    """Did the purge's own session go (a server restart, a terminated backend, a broken
    network), rather than a statement fail?"""
    if conn.invalidated:
        return True
    orig = exc.orig
    sqlstate = str(getattr(orig, "sqlstate", None) or "")
    if sqlstate.startswith("08") or sqlstate in LOST_SQLSTATES:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in LOST_MYSQL_CODES


def _session_back(conn: Connection) -> str | None:
    """Try the connection once; None when it answers, else the error's first line."""
    with suppress(DBAPIError):
        conn.rollback()
    try:
        # An invalidated connection opens a new session on its next statement.
        conn.execute(text("SELECT 1")).scalar()
        conn.rollback()
        # The new session starts as the target's sessions do; a step expects
        # autocommit between its transactions.
        conn.execution_options(isolation_level="AUTOCOMMIT")
    except DBAPIError as exc:
        return first_line(exc)
    return None


# How often a wait between tries looks whether the step was asked to stop.
_STOP_LOOK_SECONDS = 0.1


def _wait_unless_stopped(ctx: ToolContext, seconds: float) -> None:
    """Wait between tries, cut short by a stop (the next try then ends the step)."""
    ends = time.monotonic() + seconds
    while not ctx.should_stop():
        left = ends - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, _STOP_LOOK_SECONDS))


def reconnect(
    params: Mapping[str, Any], ctx: ToolContext, lost: DBAPIError, attempt: Attempt
) -> None:
    """Reconnect with backoff, for at most reconnect_seconds (and never past the step's
    deadline); then the step stops resumably, naming the cause."""
    conn = ctx.connection
    ours = conn.invalidated
    budget = float(params.get("reconnect_seconds", RECONNECT_SECONDS))
    began = time.monotonic()
    until, limit = began + budget, f"reconnect_seconds: {exact(budget)}"
    if attempt.deadline is not None and attempt.deadline < until:
        until, limit = attempt.deadline, attempt.deadline_reason or "the step's deadline"
    cause = first_line(lost)
    ctx.record_event("connection_lost", {"error": cause})
    tries = 0

    def stopped() -> None:
        if ctx.should_stop():
            raise StepInterrupted(
                f"stopped while reconnecting after {cause}; `aishell resume` goes on from "
                "the last checkpoint"
            )

    def try_session() -> str | None:
        nonlocal tries
        # Before each try, the first too: a stop that came while the lost statement was
        # cut (a signal on a silent server) ends the step now, not after a connect that
        # may wait its whole connect_timeout on the same silent server.
        stopped()
        tries += 1
        failed = _session_back(conn)
        if failed is not None:
            stopped()
        return failed

    backoff = Backoff(
        first_wait=RECONNECT_FIRST_DELAY,
        max_wait=RECONNECT_MAX_DELAY,
        seconds=until - time.monotonic(),
    )
    wait = partial(_wait_unless_stopped, ctx)
    failed = retrying(backoff, on_result=lambda f: f is not None, sleep=wait)(try_session)
    if failed is not None:
        raise stopped_resumably(
            ctx,
            f"lost the connection to the server ({cause}) and could not reconnect "
            f"within {took(time.monotonic() - began, 0)} ({limit}; {tries} tries, last: {failed})",
            "purge.reconnect_seconds in the log_cleanup agent's config sets how long "
            "to keep trying",
        )
    if not ours and tries == 1:
        raise lost  # another session (a replica's) failed; this one is fine
    attempt.reconnects += 1
    ctx.record_event(
        "reconnected", {"attempts": tries, "seconds": round(time.monotonic() - began, 1)}
    )
