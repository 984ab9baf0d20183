"""count_table_rows: a table's rows, and those older than a cutoff: counted in one scan,
or (estimate) estimated without reading the table (estimate.py), or after a purge
derived from the estimate before it and the purge's own count of what it deleted."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import StepFailed, TargetError
from aishell.guard.statements import driver_to_text
from aishell.handlers import cached
from aishell.handlers.purge import cutoff as cutoffs
from aishell.handlers.purge.batchsql import BatchSql
from aishell.handlers.purge.estimate import COUNT, count_older, estimate_rows
from aishell.handlers.purge.prepare import date_column_of, key_span, remembered, walk_key
from aishell.sqltext import text
from aishell.targets.lockholders import is_lock_timeout, lock_holders
from aishell.targets.servermessage import server_message
from aishell.tool.context import ToolContext, fill_template, pending_params


def count_rows(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return _counted(params, ctx)[0]


# What a count after a purge shows where it derives its figures: it sends nothing.
DERIVED = "-- no statement: the estimate before the purge less the rows the purge deleted"


def render_count(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    """An exact count shows its scan; an estimate is made here (it only reads statistics
    and a sample) and shows exactly the statements it sent; a figure derived after a
    purge sends none."""
    if not _estimates(params, ctx):
        return [_scan(params, ctx)]
    if _derives(params, ctx):
        return [DERIVED]
    if params.get("cutoff") is None and params.get("retention_days") is None:
        # Before the run the cutoff is an earlier step's output: nothing to estimate yet.
        return ["-- estimated once the cutoff is known, from an earlier step"]
    with holders_named(ctx, "count_table_rows", params["table"]):
        return _counted(params, ctx)[1]


def foresee_count(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    """A dry run's count whose params wait for a step it only previewed (the purge
    before it): its scan, or no statement where it derives its figures from the estimate
    before; an estimate of the table as that step leaves it is named, not made now."""
    if not _estimates(params, ctx):
        return [_scan(params, ctx)]
    if _derives(params, ctx):
        return [DERIVED]
    waits = sorted({str(p) for held in pending_params(params).values() for p in held})
    return [
        f"-- <estimated when it runs, from {fill_template('{table}', params, ctx)} as it is "
        f"then (statistics, a sample, or a count): {', '.join(waits)}>"
    ]


def _scan(params: Mapping[str, Any], ctx: ToolContext) -> str:
    """The one statement of an exact count (with a date column, of the old rows too)."""
    sql = COUNT if params.get("date_column") else "SELECT count(*) FROM {table}"
    return fill_template(sql, params, ctx)


def _derives(params: Mapping[str, Any], ctx: ToolContext) -> bool:
    """Whether its figures are derived, with no statement: after a purge (its output
    given, or Pending in a dry run), from the estimate before it."""
    before = params.get("before")
    return (
        _estimates(params, ctx)
        and isinstance(before, Mapping)
        and bool(before.get("estimated"))
        and bool(params.get("after_purge"))
    )


@contextmanager
def holders_named(ctx: ToolContext, tool: str, table: str) -> Iterator[None]:
    """A lock wait that ran out while a plan is previewed, as one line naming the table
    and the sessions holding it (as a dry run names them). Within a run (ctx.run_id) the
    error passes unchanged: the executor tries the step again, then names them itself."""
    try:
        yield
    except DBAPIError as exc:
        if ctx.run_id is not None or not is_lock_timeout(exc):
            raise
        conn = ctx.connection
        with suppress(DBAPIError):
            conn.rollback()  # PostgreSQL answers nothing else in the failed transaction
        raise StepFailed(
            f"{tool} could not read {table} for the preview: {server_message(exc)}; the "
            f"lock was still held by {lock_holders(conn, [table])}; plan again once it is "
            "released"
        ) from None


def _estimates(params: Mapping[str, Any], ctx: ToolContext) -> bool:
    # SQLite keeps no statistics to estimate from: it counts.
    return (
        bool(params.get("estimate"))
        and bool(params.get("date_column"))
        and (ctx.dialect != "sqlite")
    )


def _counted(params: Mapping[str, Any], ctx: ToolContext) -> tuple[dict[str, Any], list[str]]:
    key = f"count {params['table']!r} {params.get('date_column')!r} {params.get('cutoff')!r}"
    return cached(ctx, key, lambda: _count(params, ctx))


def _count(params: Mapping[str, Any], ctx: ToolContext) -> tuple[dict[str, Any], list[str]]:
    conn = ctx.connection
    if not params.get("date_column"):
        table = ctx.quote(params["table"])
        return {"row_count": conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()}, []
    # Derived only from an estimate: what was counted before is counted again.
    if _derives(params, ctx):
        return _after_purge(params), []
    with _recorded(conn) as sent:
        indexes, column = date_column_of(ctx, params["table"], params["date_column"])
        cut = params.get("cutoff")
        if cut is None:
            if params.get("retention_days") is None:
                raise TargetError(
                    "count_table_rows needs retention_days or cutoff with date_column"
                )
            cut = cutoffs.cutoff_for(conn, column, params["retention_days"])
        zone = cutoffs.compared_in(conn, column)
        clock = cutoffs.clock_of(conn, column, zone)
        figures: dict[str, Any] | None = None
        if _estimates(params, ctx):
            key = walk_key(conn, params["table"], indexes)
            figures = estimate_older(ctx, params, column, cut, key)
        if figures is None:
            total, older = count_older(ctx, params, column, cut)
            figures = {"row_count": total, "older_rows": older, "estimated": False}
    output = {
        **figures,
        "cutoff": cut,
        "date_column": params["date_column"],
        "date_kind": column.kind,
    }
    if zone is not None:
        output["cutoff_zone"] = zone  # the zone the server read the cutoff in
    if clock is not None:
        output["cutoff_clock"] = clock  # the clock its value reads on, to show beside it
    return output, sent


def estimate_older(
    ctx: ToolContext, params: Mapping[str, Any], column: cutoffs.DateColumn, cut: Any, key: str
) -> dict[str, Any] | None:
    """The table's rows and those older than the cutoff, estimated (no scan); None when
    they can only be counted."""
    conn, table = ctx.connection, params["table"]

    def span() -> tuple[Any, Any]:
        return key_span(ctx, table, BatchSql(ctx, params, key))

    found = estimate_rows(
        conn, ctx.quote, table, key, column, column.bind(cut), span, remembered(ctx, table)
    )
    if found is None:
        return None
    return {
        "row_count": found.rows,
        "older_rows": found.older,
        "estimated": True,
        "how": found.how,
    }


def _after_purge(params: Mapping[str, Any]) -> dict[str, Any]:
    """The rows after a purge: the estimate before it less the rows it deleted (its own
    exact count); none older left when it walked the whole key range (or the pages)."""
    before, purge = params["before"], params["after_purge"]
    missing = [k for k in ("row_count", "older_rows") if not isinstance(before.get(k), int)]
    missing += [k for k in ("rows_deleted", "complete") if k not in purge]
    if missing:
        raise TargetError(
            f"count_table_rows: before and after_purge lack {', '.join(missing)} (give the "
            "outputs of the estimate before the purge and of the purge)"
        )
    deleted = int(purge["rows_deleted"])
    complete = bool(purge["complete"])
    older = 0 if complete else max(0, int(before["older_rows"]) - deleted)
    walked = (
        "all the table's pages and looked for old rows left"
        if purge.get("walk") == "pages"
        else "the whole key range"
    )
    left = (
        f"none older left: the purge walked {walked}"
        if complete
        else "older rows left: the estimate less the rows deleted, as the purge stopped early"
    )
    return {
        "row_count": max(0, int(before["row_count"]) - deleted),
        "older_rows": older,
        "estimated": True,
        "how": f"the estimate before the purge less the {deleted:,} rows it deleted; {left}",
        "cutoff": params["cutoff"],
        "date_column": params["date_column"],
        **{k: before[k] for k in ("cutoff_zone", "cutoff_clock") if before.get(k)},
    }


@contextmanager
def _recorded(conn: Connection) -> Iterator[list[str]]:
    """The statements sent on `conn` meanwhile, as text() writes them."""
    sent: list[str] = []
    paramstyle = conn.dialect.paramstyle

    def before(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(driver_to_text(statement, paramstyle))

    event.listen(conn, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(conn, "before_cursor_execute", before)
