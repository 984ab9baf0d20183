"""repair_corrupted_tables on MySQL and MariaDB: each table copied aside, then rebuilt
(ALTER TABLE ... FORCE on InnoDB, REPAIR TABLE on other engines) and checked again.

What the step shows is what it sends: the copy's CREATE TABLE and INSERT, with the
copy's name and columns, are made once for the step and rendered before it runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.handlers import Handler, cached
from aishell.handlers.integrity import repair_each, repairing
from aishell.handlers.mysql.catalog import table_row
from aishell.handlers.mysql.corruption import check_one
from aishell.handlers.mysql.privileges import require_privileges, run_checked
from aishell.risk import RiskLevel
from aishell.sqltext import text
from aishell.targets.catalog import table_columns
from aishell.targets.transient import is_transient
from aishell.tool.context import ToolContext

# A table's copy is named after it and its run, within MySQL's 64 characters: the same
# name whenever the step is shown (asked, approved, resumed in a later second or day),
# so the statements approved are the ones sent. Outside a run (a plan's preview), the
# time it was shown.
_COPY_SUFFIX = "_aishell_bak_{stamp}"
_NAME_LIMIT = 64


@dataclass(frozen=True)
class _Repair:
    table: str
    # The copy's name and columns; None: no copy asked for.
    copy: str | None
    columns: tuple[str, ...]
    innodb: bool

    def copying(self, ctx: ToolContext) -> list[str]:
        """The copy's CREATE TABLE and INSERT (none without a copy)."""
        if self.copy is None:
            return []
        copy, table = ctx.quote(self.copy), ctx.quote(self.table)
        columns = ", ".join(ctx.quote(c) for c in self.columns)
        return [
            f"CREATE TABLE {copy} LIKE {table}",
            f"INSERT INTO {copy} ({columns}) SELECT {columns} FROM {table}",
        ]

    def rebuild(self, ctx: ToolContext) -> str:
        statement = "ALTER TABLE {table} FORCE" if self.innodb else "REPAIR TABLE {table}"
        return statement.replace("{table}", ctx.quote(self.table))


def _plan(params: Mapping[str, Any], ctx: ToolContext) -> list[_Repair]:
    """Each table's repair, made once per step, so that the statements it runs are the
    ones it showed."""

    def make() -> list[_Repair]:
        conn = ctx.connection
        suffix = _COPY_SUFFIX.format(stamp=ctx.run_id or time.strftime("%Y%m%d%H%M%S"))
        backup = params.get("create_backup", True)
        plan = []
        for table in params.get("tables") or []:
            engine = str(table_row(conn, table)["engine"] or "").lower()
            # By name: SELECT * leaves invisible columns out, and a generated one takes
            # no value (error 1906 in strict mode).
            columns = tuple(table_columns(conn, table, stored_only=True))
            copy = table[: _NAME_LIMIT - len(suffix)] + suffix if backup else None
            plan.append(_Repair(table, copy, columns, engine == "innodb"))
        return plan

    found: list[_Repair] = cached(ctx, "repair-plan", make)
    return found


def _render(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    plan = _plan(params, ctx)
    if not plan:
        return ["-- nothing to repair"]
    return [sql for r in plan for sql in [*r.copying(ctx), r.rebuild(ctx)]]


def _copy_aside(
    conn: Connection, ctx: ToolContext, repair: _Repair, done: dict[str, Any]
) -> str | None:
    """The table's copy, made before its repair; why it could not be, if so (the table is
    then left as it is). `done` holds what earlier attempts of the step made: a retry
    (after a lock timeout) neither makes the copy's table again nor copies twice."""
    table = repair.table
    if table in done["copied"]:
        return None
    create, insert = repair.copying(ctx)
    if table not in done["created"]:
        try:
            # A table the server cannot read (a MyISAM table marked as crashed) cannot
            # be copied: found before the copy's table is made.
            conn.execute(text(f"SELECT 1 FROM {ctx.quote(table)} LIMIT 1")).all()
        except DBAPIError as exc:
            if is_transient(exc):
                raise
            return (
                f"it cannot be read to copy it aside first ({_message(exc)}); copy its files, "
                "then repair it with create_backup: false"
            )
        conn.execute(text(create))
        done["created"].add(table)
    try:
        conn.execute(text(insert))
    except DBAPIError as exc:
        if is_transient(exc):
            raise  # tried again, into the same (InnoDB: still empty) table
        return (
            f"copying it aside failed ({_message(exc)}); its copy {repair.copy} is left to look "
            "at or drop"
        )
    done["copied"].add(table)
    return None


def _message(exc: DBAPIError) -> str:
    """The server's message and error number, as the executor's db_error gives them
    (the executor package imports the handlers, so they do not import it)."""
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
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
    plan = {r.table: r for r in _plan(params, ctx)}
    # Kept across the executor's retries of this step: what earlier attempts did.
    done = ctx.step_cache.setdefault(
        "repair-progress", {"created": set(), "copied": set(), "rebuilt": set()}
    )

    def repair(table: str) -> Mapping[str, Any]:
        one = plan[table]
        if table not in done["rebuilt"]:
            if one.copy is not None:
                failed = _copy_aside(conn, ctx, one, done)
                if failed is not None:
                    return {"table": table, "status": "corrupted", "issues": [failed]}
            action = "ALTER TABLE" if one.innodb else "REPAIR TABLE"
            run_checked(conn, one.rebuild(ctx), table, action)
            done["rebuilt"].add(table)
        return check_one(conn, ctx, table)

    repaired = repair_each(tables, repair, "Could not repair")
    backups = [plan[t].copy for t in tables if t in done["copied"]]
    return {"repaired_tables": repaired, "backup_tables": backups, "backup_path": None}


repair_corrupted_tables = Handler(
    sql_templates=("ALTER TABLE {table} FORCE", "REPAIR TABLE {table}"),
    run_fn=repairing(_repair),
    render_fn=_render,
    risk=RiskLevel.HIGH,
    effect="rebuilds damaged tables",
)
