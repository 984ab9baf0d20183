"""check_table_corruption and repair_corrupted_tables on MySQL and MariaDB: CHECK TABLE
per table (checked, or why not); a repair copies the table, then rebuilds it
(ALTER TABLE ... FORCE on InnoDB, REPAIR TABLE on other engines) and checks it again."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.catalog import user_tables
from aishell.handlers import Handler, cached
from aishell.handlers.integrity import (
    checked_or_skipped,
    corruption_summary,
    repair_each,
    repairing,
)
from aishell.handlers.mysql.catalog import table_row
from aishell.handlers.mysql.checkrows import check_verdict
from aishell.handlers.mysql.privileges import (
    current_account,
    denied,
    privileges_on,
    require_privileges,
    run_checked,
    session_grants,
)
from aishell.risk import RiskLevel
from aishell.sqltext import text
from aishell.targets.transient import is_transient
from aishell.toolcontext import ToolContext


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
    try:
        rows = conn.execute(text(f"CHECK TABLE {ctx.quote(table)}")).mappings().all()
    except DBAPIError as exc:
        message = denied(exc)
        if message is None:
            raise
        return {"table": table, "status": "not checked", "reason": message}
    return check_verdict(table, rows, _at_time_limit(ctx))


# How close to the step's time limit a check may end and still be taken as finished:
# a check cut there (by the server's max_statement_time, set to the step's limit, or by
# the step's own cancel) ends at or after it.
_LIMIT_SLACK_SECONDS = 0.05


def _at_time_limit(ctx: ToolContext) -> bool:
    return ctx.deadline is not None and time.monotonic() >= ctx.deadline - _LIMIT_SLACK_SECONDS


def corruption_check(conn: Connection, ctx: ToolContext, tables: list[str]) -> dict[str, Any]:
    """CHECK TABLE of each table; per table, checked or why not."""
    granted, database = session_grants(conn, ctx.run_cache)

    def have(table: str) -> set[str] | None:
        return None if granted is None else privileges_on(granted, database, table)

    results = [_check_table(conn, ctx, t, have(t)) for t in tables]
    return corruption_summary("CHECK TABLE", results)


def _check(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or []) or user_tables(conn)
    return checked_or_skipped(corruption_check(conn, ctx, tables))


check_table_corruption = Handler(
    sql_templates=("SHOW GRANTS", "CHECK TABLE {table}"), run_fn=_check
)


# A table's copy is named after it and the step's start, within MySQL's 64 characters.
_COPY_SUFFIX = "_aishell_bak_{stamp}"
_NAME_LIMIT = 64


def _repair_plan(params: Mapping[str, Any], ctx: ToolContext) -> list[tuple[str, str | None, bool]]:
    """Per table: the name of its copy (None: no copy) and whether it is InnoDB (rebuilt
    by ALTER TABLE ... FORCE; other engines by REPAIR TABLE). Made once per step, so
    the statements it runs are the ones it showed."""

    def make() -> list[tuple[str, str | None, bool]]:
        suffix = _COPY_SUFFIX.format(stamp=time.strftime("%Y%m%d%H%M%S"))
        plan = []
        for table in params.get("tables") or []:
            engine = str(table_row(ctx.connection, table)["engine"] or "")
            copy = table[: _NAME_LIMIT - len(suffix)] + suffix
            plan.append(
                (
                    table,
                    copy if params.get("create_backup", True) else None,
                    engine.lower() == "innodb",
                )
            )
        return plan

    found: list[tuple[str, str | None, bool]] = cached(ctx, "repair-plan", make)
    return found


def _repair_statements(table: str, copy: str | None, innodb: bool, ctx: ToolContext) -> list[str]:
    """A table's copy aside (when asked for), then its rebuild."""
    statements = []
    if copy is not None:
        statements += [
            f"CREATE TABLE {ctx.quote(copy)} LIKE {ctx.quote(table)}",
            f"INSERT INTO {ctx.quote(copy)} SELECT * FROM {ctx.quote(table)}",
        ]
    rebuild = "ALTER TABLE {table} FORCE" if innodb else "REPAIR TABLE {table}"
    return [*statements, rebuild.replace("{table}", ctx.quote(table))]


def _repair_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    plan = _repair_plan(params, ctx)
    if not plan:
        return ["-- nothing to repair"]
    return [
        sql for table, copy, innodb in plan for sql in _repair_statements(table, copy, innodb, ctx)
    ]


def _copy_aside(
    conn: Connection, ctx: ToolContext, table: str, statements: list[str], done: dict[str, Any]
) -> str | None:
    """The table's copy, made before its repair; why it could not be, if so (the table is
    then left as it is). `done` holds what earlier attempts of the step made: a retry
    (after a lock timeout) neither makes the copy's table again nor copies twice."""
    if table in done["copied"]:
        return None
    create, insert = statements
    copy_of = f"the copy of {table}"
    if table not in done["created"]:
        try:
            # A table the server cannot read (a MyISAM table marked as crashed) cannot
            # be copied: found before the copy's table is made.
            conn.execute(text(f"SELECT 1 FROM {ctx.quote(table)} LIMIT 1")).all()
        except DBAPIError as exc:
            if is_transient(exc):
                raise
            return (
                f"it cannot be read to copy it aside first ({_first(exc)}); copy its files, "
                "then repair it with create_backup: false"
            )
        conn.execute(text(create))
        done["created"].add(table)
    try:
        conn.execute(text(insert))
    except DBAPIError as exc:
        if is_transient(exc):
            raise  # tried again, into the same (InnoDB: still empty) table
        return f"copying it aside failed ({_first(exc)}); {copy_of} is left to look at or drop"
    done["copied"].add(table)
    return None


def _first(exc: DBAPIError) -> str:
    """The server's message and error number."""
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    if len(args) >= 2:
        return f"{args[1]} (error {args[0]})"
    return (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]


def _repair(tables: list[str], params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    for table in tables:
        require_privileges(
            conn,
            table,
            {"SELECT", "INSERT", "CREATE", "ALTER"},
            "Repair (copy, then rebuild)",
            ctx.run_cache,
        )
    plan = {table: (copy, innodb) for table, copy, innodb in _repair_plan(params, ctx)}
    # Kept across the executor's retries of this step: what earlier attempts did.
    done = ctx.step_cache.setdefault(
        "repair-progress", {"created": set(), "copied": set(), "rebuilt": set()}
    )

    def repair(table: str) -> Mapping[str, Any]:
        if table not in done["rebuilt"]:
            copy, innodb = plan[table]
            *copying, rebuild = _repair_statements(table, copy, innodb, ctx)
            if copy is not None:
                failed = _copy_aside(conn, ctx, table, copying, done)
                if failed is not None:
                    return {"table": table, "status": "corrupted", "issues": [failed]}
            run_checked(conn, rebuild, table, "ALTER TABLE" if innodb else "REPAIR TABLE")
            done["rebuilt"].add(table)
        return _check_table(conn, ctx, table, None)

    repaired = repair_each(tables, repair, "Could not repair")
    backups = [plan[t][0] for t in tables if t in done["copied"]]
    return {"repaired_tables": repaired, "backup_tables": backups, "backup_path": None}


repair_corrupted_tables = Handler(
    sql_templates=("ALTER TABLE {table} FORCE", "REPAIR TABLE {table}"),
    run_fn=repairing(_repair),
    render_fn=_repair_sql,
    risk=RiskLevel.HIGH,
    effect="rebuilds damaged tables",
)
