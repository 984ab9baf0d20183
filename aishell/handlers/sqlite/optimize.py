"""optimize_table (VACUUM of the whole file: SQLite has no per-table equivalent) and
update_table_statistics (ANALYZE) on SQLite."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import StepSkipped
from aishell.handlers import Handler, cached, read_once_in_dry_run
from aishell.handlers.held import GONE
from aishell.handlers.sqlite.appcode import app_code
from aishell.handlers.sqlite.catalog import (
    btree_stats,
    btrees,
    database_pages,
    has_dbstat,
    pages_of,
    require_table,
    virtual_tables,
)
from aishell.handlers.sqlite.fragmentation import needs_rebuild
from aishell.handlers.sqlite.privileges import (
    read_only_reason,
    read_only_refusal,
    require_writable,
    write,
)
from aishell.handlers.statistics import Engine, Refusals, statistics_handler, tables_of
from aishell.risk import RiskLevel
from aishell.sqltext import text
from aishell.targets.appcode import stops_analyze, stops_rewrite
from aishell.targets.catalog import user_tables
from aishell.tool.context import ToolContext


def _optimize_reason(params: Mapping[str, Any], ctx: ToolContext) -> str | None:
    # VACUUM is of the file, yet the step is of its table: one dropped since the plan is
    # reported gone (executor/heldtables.py), not compacted.
    conn, table = ctx.connection, params["table"]
    trees = btrees(ctx, table)  # in a dry run: the table is there
    if trees is None:
        require_table(conn, table)
    pages = pages_of(ctx)
    if pages["freelist_count"]:
        return f"{pages['freelist_count']} free pages ({pages['free_bytes']} bytes) in the file"
    if has_dbstat(ctx):
        stats = btree_stats(conn, table) if trees is None else trees.of(table)
        return needs_rebuild(stats, params.get("fragmentation_threshold", 30), 8)
    return None


def _reason(params: Mapping[str, Any], ctx: ToolContext) -> _Why:
    """Why to VACUUM, as the step's render found it: its run does what it showed. A step
    over many tables asks each in turn until one calls for it: VACUUM is of the file,
    so the step sends it once at most."""

    def find() -> _Why:
        tables = tables_of(params)
        gone: list[str] = []
        blocked = _not_rewritable(ctx)
        if blocked is not None:
            return _Why(None, None, [], blocked)
        if params.get("tables") is not None:
            # Dropped since the plan: named, not compacted.
            # Read once for a preview's steps, as nothing of it writes (a step's own
            # read, 10,000 names, for each of fifty steps of a plan cost a second).
            there = set(
                read_once_in_dry_run(ctx, "sqlite tables", lambda: user_tables(ctx.connection))
            )
            gone = [t for t in tables if t not in there]
        for table in tables:
            if table not in gone:
                why = _optimize_reason({**params, "table": table}, ctx)
                if why is not None:
                    return _Why(table, why, gone)
        return _Why(None, None, gone)

    return cached(ctx, "optimize", find)


@dataclass(frozen=True)
class _Why:
    """The table whose state calls for the VACUUM and why (None: nothing calls for it),
    and the step's tables found dropped since the plan."""

    table: str | None
    reason: str | None
    gone: list[str]
    # Why VACUUM cannot be run at all: it would need the application's code.
    blocked: str | None = None


def _not_rewritable(ctx: ToolContext) -> str | None:
    """Why VACUUM cannot run: it makes every table and index of the file again, and
    some need the application's functions or collations to be made."""
    code = app_code(ctx)
    tables = code.tables(stops_rewrite)
    if not tables:
        return None
    return f"VACUUM not run: it makes every table of the file again, and {code.said(stops_rewrite)}"


def _optimize(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    before = database_pages(conn)
    why = _reason(params, ctx)
    if why.blocked is not None:
        _vacuum_blocked(params, why.blocked)
    if why.reason is None:
        done: dict[str, Any] = {
            "vacuumed": False,
            "reason": "the file has no free pages and the table is not fragmented",
            "size_after": before["size_bytes"],
            "reclaimed_bytes": 0,
        }
    else:
        require_writable(conn, why.table or params["table"], "VACUUM")
        # VACUUM rebuilds the whole file: SQLite has no per-table equivalent.
        write(conn, "VACUUM", why.table or params["table"], "VACUUM")
        after = database_pages(conn)
        done = {
            "vacuumed": True,
            "reason": why.reason,
            "size_after": after["size_bytes"],
            # The same measure both sides; VACUUM never grows the file, but a writer
            # between the two measures could.
            "reclaimed_bytes": max(before["size_bytes"] - after["size_bytes"], 0),
        }
    output = {"scope": "database", "size_before": before["size_bytes"], **done}
    if params.get("tables") is None:
        return {"table": params["table"], **output}
    return _of_tables(tables_of(params), why, output)


def _vacuum_blocked(params: Mapping[str, Any], reason: str) -> NoReturn:
    """The step ends skipped, each of its tables named with why: the file was left as
    it was."""
    tables = tables_of(params)
    raise StepSkipped(
        reason,
        {
            "table": params.get("table"),
            "vacuumed": False,
            "scope": "database",
            "reason": reason,
            "tables_done": [],
            "skipped_tables": [{"table": t, "reason": reason} for t in tables],
        },
    )


def _of_tables(tables: list[str], why: _Why, output: dict[str, Any]) -> dict[str, Any]:
    """A step over many tables: its one VACUUM compacted the file, so each of its tables;
    the sizes are given under the table that called for it."""
    kept = [t for t in tables if t not in why.gone]
    with_file = {
        "vacuumed": output["vacuumed"],
        "scope": "database",
        "reason": f"the step's one VACUUM of the file, for {why.table}",
    }
    by_table = [
        {**output, "table": t} if t == why.table or why.table is None else {**with_file, "table": t}
        for t in kept
    ]
    result = {
        **output,
        "table": None,
        "tables": tables,
        "tables_done": kept,
        "tables_gone": why.gone,
        "by_table": by_table,
        "skipped_tables": [],
    }
    if not kept:
        raise StepSkipped(f"{', '.join(why.gone)}: {GONE}", result)
    return result


def _optimize_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    why = _reason(params, ctx)
    if why.blocked is not None:
        return [f"-- {why.blocked}"]
    if why.reason is None:
        return ["-- nothing to do: no free pages and the table is not fragmented"]
    return ["VACUUM"]


def _optimize_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    pages = pages_of(ctx)
    return {
        "database_bytes_to_rewrite": pages["size_bytes"],
        "free_bytes_to_reclaim": pages["free_bytes"],
        "will_vacuum": _reason(params, ctx).reason is not None,
    }


optimize_table = Handler(
    sql_templates=("VACUUM",),
    run_fn=_optimize,
    render_fn=_optimize_sql,
    estimate_fn=_optimize_estimate,
    risk=RiskLevel.MEDIUM,
    effect="rewrites the database file",
    reads_when_it_renders_reads=True,
)


# --- update_table_statistics ----------------------------------------------------------

# sqlite_stat1 holds a row per index (and one for a table without any): each stat
# begins with the row count.
_ROW_ESTIMATES = "SELECT tbl, stat FROM sqlite_stat1 WHERE tbl IN :tables"


def _refused(conn: Connection, tables: list[str], ctx: ToolContext) -> Refusals:
    reason = read_only_reason(conn, ctx.run_cache)
    if reason is not None:
        return {t: f"ANALYZE of {t} skipped: {reason}" for t in tables}
    # ANALYZE compares each index's keys: one sorted by the application's collation
    # cannot be read by any other connection.
    code = app_code(ctx)
    found = {t: code.reason(t, "not analyzed", stops_analyze) for t in tables}
    virtual = virtual_tables(conn)
    for t in tables:
        if t in virtual and found[t] is None:
            found[t] = (
                f"ANALYZE of {t} skipped: it is a virtual table, whose module keeps its "
                "data; SQLite's ANALYZE gathers no statistics for it"
            )
    return {t: why for t, why in found.items() if why is not None}


def _statements(tables: list[str], ctx: ToolContext) -> list[str]:
    # One table each (SQLite's ANALYZE takes one), named in its schema: a bare name is
    # read as a schema first ("temp", "main": the whole schema) and only then a table.
    return [f"ANALYZE main.{ctx.quote(t)}" for t in tables]


def _send(conn: Connection, statements: list[str], tables: list[str]) -> Refusals:
    for sql in statements:
        try:
            conn.execute(text(sql))
        except DBAPIError as exc:
            why = read_only_refusal(exc)
            return {t: f"ANALYZE of {t} {why}" for t in tables}
    return {}


def _estimates(conn: Connection, tables: list[str]) -> dict[str, int]:
    query = text(_ROW_ESTIMATES).bindparams(bindparam("tables", expanding=True))
    found = dict.fromkeys(tables, 0)  # an empty table leaves no row
    for tbl, stat in conn.execute(query, {"tables": tables}):
        first = str(stat or "").split(" ", 1)[0]
        if first.isdigit():
            found[tbl] = max(found.get(tbl, 0), int(first))
    return found


# What it declares it may send: its statement for one table, and its read.
update_table_statistics = statistics_handler(
    Engine(_refused, _statements, _send, _estimates, ("ANALYZE main.{table}", _ROW_ESTIMATES))
)
