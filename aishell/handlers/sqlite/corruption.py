"""check_table_corruption and repair_corrupted_tables on SQLite: PRAGMA integrity_check
and foreign_key_check per table (SQLite can always check); a repair is REINDEX, after a
copy of the whole file through SQLite's backup API."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import StepFailed, StepSkipped
from aishell.handlers import Handler, cached, step_tables
from aishell.handlers.backup.disk import made_folder, partial_file
from aishell.handlers.held import is_gone
from aishell.handlers.integrity import (
    checking,
    corruption_summary,
    repair_each,
    repairing,
)
from aishell.handlers.sqlite.appcode import app_code, needs_app_code
from aishell.handlers.sqlite.catalog import virtual_tables
from aishell.handlers.sqlite.privileges import read_only_reason, write
from aishell.risk import RiskLevel
from aishell.sqltext import quote_identifier, text
from aishell.targets.appcode import stops_check
from aishell.targets.catalog import sqlite_shadows_sql
from aishell.targets.sqlitewait import heeding_waits
from aishell.tool.context import ToolContext

# What a table whose integrity_check needs the application's code is.
NOT_CHECKED = "not checked"


def read_as_a_limit(table: str) -> str | None:
    """Why PRAGMA integrity_check(table) cannot check this table alone, or None: SQLite
    reads an argument that begins as a number (10, 1st, -1z, 0x1a) as the most problems
    to report, and checks the whole database instead, whose other tables' damage would
    then be this table's."""
    if re.match(r"[+-]?[0-9]", table) is None:
        return None
    return (
        f"{NOT_CHECKED}: SQLite reads the name {table} as a number in PRAGMA "
        "integrity_check, so it cannot check this table alone (PRAGMA integrity_check "
        "of the whole database does)"
    )


def integrity_messages(conn: Connection, table: str) -> list[str]:
    """Problems PRAGMA integrity_check finds in one table and its indexes ([] when ok)."""
    quoted = quote_identifier(conn.dialect, table)
    rows = conn.execute(text(f"PRAGMA integrity_check({quoted})")).all()
    messages = [r[0] for r in rows]
    return [] if messages == ["ok"] else messages


def checked_names(ctx: ToolContext, table: str) -> list[str]:
    """What PRAGMA integrity_check is given for a table: the table, and for a virtual
    table its shadow tables too, where its module (FTS5, R-Tree) keeps its data in
    b-trees of their own. integrity_check of a virtual table alone reads none of them
    (before SQLite 3.44 it checks nothing and answers ok), so damage there would go
    unseen. Every table's read in one query per step, whatever the number of tables."""

    def shadows() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        sql = f"SELECT name, owner FROM ({sqlite_shadows_sql()}) ORDER BY owner, name"
        for name, owner in ctx.connection.execute(text(sql)):
            # SQLite's names are one whatever their case.
            found.setdefault(str(owner).casefold(), []).append(str(name))
        return found

    return [table, *cached(ctx, "sqlite shadows", shadows).get(table.casefold(), [])]


def _check_table(conn: Connection, ctx: ToolContext, table: str) -> dict[str, Any]:
    unchecked = read_as_a_limit(table) or app_code(ctx).reason(table, NOT_CHECKED, stops_check)
    if unchecked is not None:
        # integrity_check would evaluate the application's code, or check another table:
        # only the foreign keys.
        found = _foreign_key_issues(conn, ctx, table)
        if found:
            return {"table": table, "status": "corrupted", "issues": found}
        return {"table": table, "status": "not checked", "reason": unchecked}
    try:
        issues = [m for name in checked_names(ctx, table) for m in integrity_messages(conn, name)]
        issues += _foreign_key_issues(conn, ctx, table)
    except DBAPIError as exc:
        if is_gone(exc):
            return {"table": table, "status": "gone"}  # dropped since the plan
        needs = needs_app_code(exc, table, NOT_CHECKED)
        if needs is not None:
            return {"table": table, "status": "not checked", "reason": needs}
        # A file damaged past reading fails the check itself: that is its finding.
        name = str(getattr(exc.orig, "sqlite_errorname", ""))
        if name not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
            raise
        issues = [f"{exc.orig} ({name})"]
    return {"table": table, "status": "corrupted" if issues else "ok", "issues": issues}


def _foreign_key_issues(conn: Connection, ctx: ToolContext, table: str) -> list[str]:
    return [
        f"row {row[1]} references a missing row in {row[2]}"
        for row in conn.execute(text(f"PRAGMA foreign_key_check({ctx.quote(table)})"))
    ]


def corruption_check(conn: Connection, ctx: ToolContext, tables: list[str]) -> dict[str, Any]:
    """integrity_check and foreign_key_check of each table: SQLite can always check."""
    return corruption_summary("integrity_check", [_check_table(conn, ctx, t) for t in tables])


def _check_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    """Each table's two checks; of a table whose check needs the application's code,
    why not, and its foreign keys' check alone."""
    shown = []
    for table in step_tables(params, ctx):
        quoted = ctx.quote(table)
        unchecked = read_as_a_limit(table) or app_code(ctx).reason(table, NOT_CHECKED, stops_check)
        if unchecked is None:
            shown += [f"PRAGMA integrity_check({ctx.quote(n)})" for n in checked_names(ctx, table)]
        else:
            shown.append(f"-- {unchecked}")
        shown.append(f"PRAGMA foreign_key_check({quoted})")
    return shown


check_table_corruption = Handler(
    sql_templates=("PRAGMA integrity_check({table})", "PRAGMA foreign_key_check({table})"),
    run_fn=checking(corruption_check),
    render_fn=_check_sql,
)


def _backup_copy(ctx: ToolContext, label: str) -> Path:
    """Copy the whole database with SQLite's backup API into the backup folder, whole or
    not at all: a folder it cannot make, or a copy that fails, leaves no file behind."""
    if ctx.backup_dir is None:
        raise StepFailed("No backup folder configured (backup_dir in config/aishell.yaml)")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    final = made_folder(ctx.backup_dir) / f"{ctx.target}-{label}-{stamp}.sqlite"
    source = ctx.connection.connection.driver_connection
    assert isinstance(source, sqlite3.Connection)
    with partial_file(final, ctx, "copying the database before its repair to") as partial:
        dest = sqlite3.connect(partial)
        try:
            with heeding_waits(source) as look:
                source.backup(dest, progress=look)
        finally:
            dest.close()
    return final


def _not_rebuilt(tables: list[str], ctx: ToolContext) -> dict[str, str]:
    """The tables whose REINDEX would evaluate the application's code, and the virtual
    tables, whose REINDEX does nothing (it rebuilds b-tree indexes, and a virtual table
    has none: its module keeps its data), so that a check after it would call repaired
    what was never touched: each with why."""
    code = app_code(ctx)
    found = {t: code.reason(t, "not rebuilt", stops_check) for t in tables}
    virtual = virtual_tables(ctx.connection)
    for t in tables:
        if found[t] is None and t in virtual:
            found[t] = (
                f"{t} not rebuilt: it is a virtual table, whose REINDEX does nothing; its "
                "module's own command rebuilds it (FTS5's 'rebuild'), or a restore from a backup"
            )
    return {t: why for t, why in found.items() if why is not None}


def _repair(tables: list[str], params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    refused = _not_rebuilt(tables, ctx)
    left_out = [{"table": t, "reason": why} for t, why in refused.items()]
    tables = [t for t in tables if t not in refused]
    if not tables:
        raise StepSkipped("; ".join(refused.values()), {"skipped_tables": left_out})
    read_only = read_only_reason(conn)
    if read_only is not None:
        reason = f"REINDEX of {', '.join(tables)} skipped: {read_only}"
        raise StepSkipped(
            reason, {"skipped_tables": [{"table": t, "reason": reason} for t in tables]}
        )
    backup = str(_backup_copy(ctx, "pre-repair")) if params.get("create_backup", True) else None

    def repair(table: str) -> Mapping[str, Any]:
        # REINDEX rebuilds every index of the table from the table's rows, which
        # fixes index entries that disagree with the table.
        write(conn, f"REINDEX main.{ctx.quote(table)}", table, "REINDEX")
        unchecked = read_as_a_limit(table)
        if unchecked is not None:
            return {"table": table, "status": NOT_CHECKED, "reason": unchecked}
        issues = integrity_messages(conn, table)[:5]
        return {"table": table, "status": "corrupted" if issues else "ok", "issues": issues}

    such_as = f" such as {backup}" if backup else ""
    why = f" (the table b-tree itself is damaged; restore from a backup{such_as})"
    repaired = repair_each(tables, repair, "REINDEX did not repair", why)
    return {"repaired_tables": repaired, "backup_path": backup, "skipped_tables": left_out}


def _repair_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    tables = params.get("tables")
    if not isinstance(tables, list) or not tables:
        return ["-- nothing to repair"]
    refused = _not_rebuilt(tables, ctx)
    return [f"-- {refused[t]}" if t in refused else f"REINDEX main.{ctx.quote(t)}" for t in tables]


repair_corrupted_tables = Handler(
    sql_templates=("REINDEX main.{table}", "PRAGMA integrity_check({table})"),
    run_fn=repairing(_repair),
    render_fn=_repair_sql,
    risk=RiskLevel.HIGH,
    effect="rebuilds damaged tables and indexes",
)
