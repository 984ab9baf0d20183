"""check_table_corruption on MySQL and MariaDB: CHECK TABLE per table (checked, or why
not; checkrows.py reads its rows). The repair is in repair.py.

CHECK TABLE is a plain read on InnoDB only. On MyISAM and Aria it writes the table's
check time into the table's file (information_schema's CHECK_TIME; Aria its UPDATE_TIME
too), a read-only session notwithstanding; on every engine that takes the server's table
locks (those two, CSV, ARCHIVE, ...) it holds the table with a read lock that writers
wait behind until the check ends, however long that is. A dry run changes nothing and
holds off no writer, so there such a table is reported not checked, with why; the real
run checks it, under the lock its tool declares.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from aishell.handlers import Handler, cached, step_tables
from aishell.handlers.integrity import (
    checking,
    corruption_summary,
)
from aishell.handlers.mysql.checkrows import check_verdict, lock_waited
from aishell.handlers.mysql.engines import ENGINES, engines_of, writes_wait
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
    seen = ctx.table_readings.held(table)
    if isinstance(seen, DBAPIError):  # a preview already found it held: not waited on again
        return _locked(conn, table, "not waited on again: held when the preview looked")
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
        # A preview's later steps do not wait on it again (tool/readings.py).
        ctx.table_readings.found_held(table, _held_error(verdict["reason"]))
        return _locked(conn, table, verdict["reason"])
    return verdict


def _locked(conn: Connection, table: str, reason: str) -> dict[str, Any]:
    """Not checked for another session's lock, naming who holds it: a DBA can ask them,
    or check it later."""
    holders = lock_holders(conn, [table])
    return {
        "table": table,
        "status": "not checked",
        "reason": f"{reason}; the lock is held by {holders}",
        "cause": "locked",
    }


class _CheckLockWait(Exception):
    """A CHECK TABLE that said, in its rows, that it waited past the lock wait."""


def _held_error(reason: str) -> DBAPIError:
    """The check's lock wait as a lock wait's error reads (lockholders.is_lock_timeout:
    MySQL's error 1205), for the steps after it in a preview."""
    return OperationalError("CHECK TABLE", None, _CheckLockWait(1205, reason))


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
    # A preview reports the moment it looked: it waits once (as its other reads do).
    attempts = 1 if ctx.dry_run else _CHECK_ATTEMPTS
    return Backoff(first_wait=_RETRY_WAIT_SECONDS, attempts=attempts, seconds=seconds)


# How close to the step's time limit a check may end and still be taken as finished:
# a check cut there (by the server's max_statement_time, set to the step's limit, or by
# the step's own cancel) ends at or after it.
_LIMIT_SLACK_SECONDS = 0.05


def _at_time_limit(ctx: ToolContext) -> bool:
    return ctx.deadline is not None and time.monotonic() >= ctx.deadline - _LIMIT_SLACK_SECONDS


def check_one(conn: Connection, ctx: ToolContext, table: str) -> dict[str, Any]:
    """CHECK TABLE of one table the session may read (a repair's check after it)."""
    return _check_table(conn, ctx, table, None)


# The engines whose CHECK TABLE only reads and lets writers on (InnoDB checks under its
# own row versions, and takes the server's table lock only as a plain read).
_READ_ONLY_CHECK_ENGINES = frozenset({"innodb"})


def _not_checked_in_dry_run(table: str, engine: str | None) -> dict[str, Any]:
    what = (
        "writes the table's check time into its file and holds off writers until it ends"
        if (engine or "").lower() in ("myisam", "aria")
        else "holds the table with the engine's read lock, which writers wait behind until it ends"
    )
    return {
        "table": table,
        "status": "not checked",
        "reason": f"{engine or 'unknown engine'}: CHECK TABLE {what}, so a dry run, which "
        "changes nothing and blocks no writer, checks only InnoDB tables; run the real "
        "maintenance to check it",
    }


def corruption_check(conn: Connection, ctx: ToolContext, tables: list[str]) -> dict[str, Any]:
    """CHECK TABLE of each table; per table, checked or why not. A dry run checks only
    the tables whose engine's check only reads."""
    granted, database = session_grants(conn, ctx.run_cache)

    def have(table: str) -> set[str] | None:
        return None if granted is None else privileges_on(granted, database, table)

    engines = _engines(conn, ctx, tables) if ctx.dry_run else {}
    results = [
        _not_checked_in_dry_run(t, engines[t])
        if t in engines and (engines[t] or "").lower() not in _READ_ONLY_CHECK_ENGINES
        else _check_table(conn, ctx, t, have(t))
        for t in tables
    ]
    return corruption_summary("CHECK TABLE", results)


def _engines(conn: Connection, ctx: ToolContext, tables: list[str]) -> dict[str, str | None]:
    """The tables' engines, read once per step for its preview and its run."""
    key = "check_engines:" + "\0".join(sorted(tables))
    found: dict[str, str | None] = cached(ctx, key, lambda: engines_of(conn, tables))
    return found


def check_lock(tables: list[str], engines: Mapping[str, str | None]) -> str | None:
    """The line a preview shows beside CHECK TABLE where it holds off the writers of
    some of these tables in a real run (None: writes to every one go on)."""
    held = [
        t
        for t in tables
        if t in engines and (engines[t] or "").lower() not in _READ_ONLY_CHECK_ENGINES
    ]
    unchecked = f" (a dry run leaves {'it' if len(held) == 1 else 'them'} unchecked)"
    return writes_wait(held, engines, "its CHECK TABLE", unchecked)


def check_statements(ctx: ToolContext, tables: list[str]) -> list[str]:
    """What the check sends: the session's grants, the tables' engines (read once per
    step), the tables whose writers wait meanwhile, and a CHECK TABLE per table, each
    named (a dry run sends only InnoDB tables')."""
    if not tables:
        return ["SHOW GRANTS", *([ENGINES] if ctx.dry_run else [])]
    held = check_lock(tables, _engines(ctx.connection, ctx, tables))
    checks = [f"CHECK TABLE {ctx.quote(t)}" for t in tables]
    return ["SHOW GRANTS", ENGINES, *([f"-- {held}"] if held else []), *checks]


def _check_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    return check_statements(ctx, step_tables(params, ctx))


check_table_corruption = Handler(
    sql_templates=("SHOW GRANTS", ENGINES, "CHECK TABLE {table}"),
    run_fn=checking(corruption_check),
    render_fn=_check_sql,
)
