"""check_table_corruption on MySQL and MariaDB: CHECK TABLE per table (checked, or why
not; checkrows.py reads its rows). The repair is in repair.py."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.handlers import Handler, step_tables
from aishell.handlers.integrity import (
    checking,
    corruption_summary,
)
from aishell.handlers.mysql.checkrows import check_verdict, lock_waited
from aishell.handlers.mysql.privileges import (
    current_account,
    denied,
    privileges_on,
    session_grants,
)
from aishell.retry.policy import Backoff, retrying
from aishell.sqltext import text
from aishell.targets.lockholders import lock_holders
from aishell.tool.context import ToolContext


def _check_table(
    conn: Connection, ctx: ToolContext, table: str, have: set[str] | None
) -> dict[str, Any]:
    if have is not None and not have:
        return {
            "table": table,
            "status": "not checked",
            "reason": f"{current_account(conn)} has no privilege on {table} "
            "(CHECK TABLE needs one, such as SELECT)",
        }
    tries = 0

    def check() -> dict[str, Any]:
        nonlocal tries
        tries += 1
        try:
            rows = conn.execute(text(f"CHECK TABLE {ctx.quote(table)}")).mappings().all()
        except DBAPIError as exc:
            message = denied(exc)
            if message is None:
                raise
            return {"table": table, "status": "not checked", "reason": message}
        return check_verdict(table, rows, _at_time_limit(ctx))

    # Held by another session (a DDL, LOCK TABLES) past the lock timeout: this table is
    # tried again after a while, not the whole step.
    verdict: dict[str, Any] = retrying(_check_backoff(ctx), on_result=lock_waited)(check)
    if tries > 1 and verdict["status"] == "not checked":
        verdict["reason"] += f" (tried {tries} times)"
    if lock_waited(verdict):
        # Who kept it from being checked: a DBA can ask them, or check it later.
        verdict["reason"] += f"; the lock is held by {lock_holders(conn, [table])}"
        verdict["cause"] = "locked"
    return verdict


# A check held off by another session's lock is tried this many times in all, waiting
# about this long before the second try and twice as long before each further one.
_CHECK_ATTEMPTS = 3
_RETRY_WAIT_SECONDS = 1.0
# A wait ends this long before the step's deadline at the latest: room for a check.
_CHECK_ROOM_SECONDS = 1.0


def _check_backoff(ctx: ToolContext) -> Backoff:
    """The retries of one table's check, within the step's time (room left for a check)."""
    seconds = None
    if ctx.deadline is not None:
        seconds = ctx.deadline - _CHECK_ROOM_SECONDS - time.monotonic()
    return Backoff(first_wait=_RETRY_WAIT_SECONDS, attempts=_CHECK_ATTEMPTS, seconds=seconds)


# How close to the step's time limit a check may end and still be taken as finished:
# a check cut there (by the server's max_statement_time, set to the step's limit, or by
# the step's own cancel) ends at or after it.
_LIMIT_SLACK_SECONDS = 0.05


def _at_time_limit(ctx: ToolContext) -> bool:
    return ctx.deadline is not None and time.monotonic() >= ctx.deadline - _LIMIT_SLACK_SECONDS


def check_one(conn: Connection, ctx: ToolContext, table: str) -> dict[str, Any]:
    """CHECK TABLE of one table the session may read (a repair's check after it)."""
    return _check_table(conn, ctx, table, None)


def corruption_check(conn: Connection, ctx: ToolContext, tables: list[str]) -> dict[str, Any]:
    """CHECK TABLE of each table; per table, checked or why not."""
    granted, database = session_grants(conn, ctx.run_cache)

    def have(table: str) -> set[str] | None:
        return None if granted is None else privileges_on(granted, database, table)

    results = [_check_table(conn, ctx, t, have(t)) for t in tables]
    return corruption_summary("CHECK TABLE", results)


def _check_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    tables = step_tables(params, ctx)
    return ["SHOW GRANTS", *(f"CHECK TABLE {ctx.quote(t)}" for t in tables)]


check_table_corruption = Handler(
    sql_templates=("SHOW GRANTS", "CHECK TABLE {table}"),
    run_fn=checking(corruption_check),
    render_fn=_check_sql,
)
