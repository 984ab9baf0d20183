"""What a purge reads once per step before its batches: the date column and its cutoff,
the key it walks and that key's range, the archive table's shape; and from them the
preview of its statements and the estimate of what it would delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from aishell.errors import StepFailed, TargetError
from aishell.handlers import cached
from aishell.handlers.purge import cutoff as cutoffs
from aishell.handlers.purge.appreach import refuse_reached_app_code
from aishell.handlers.purge.archive import check_archive_table
from aishell.handlers.purge.archiveshape import check_durable
from aishell.handlers.purge.batchsql import RETURNING, BatchSql, is_integer, open_below, plain_key
from aishell.handlers.purge.estimate import Remember, count_older, estimate_rows
from aishell.handlers.purge.pages import walks_pages
from aishell.handlers.purge.reach import read_reach
from aishell.handlers.purge.share import COUNT_AT_START, COUNT_LEFT, stop_figures
from aishell.handlers.purge.tableindexes import TableIndex, indexes_of
from aishell.handlers.sqlite.appcode import refuse_purge_app_code
from aishell.sqltext import text
from aishell.targets.catalog import table_columns
from aishell.tool.context import ToolContext


def walk_key(conn: Connection, table: str, indexes: list[TableIndex] | None = None) -> str:
    """A single-column key that orders the table: its primary key, a unique NOT NULL
    column, or SQLite's rowid. Anything else is refused with the reason. `indexes`: the
    table's (indexes_of), when the caller has them already."""
    if indexes is None:
        indexes = indexes_of(conn, table)
    primary = next((list(i.columns) for i in indexes if i.primary), [])
    if len(primary) == 1:
        return primary[0]
    if conn.dialect.name == "sqlite" and not primary and _has_rowid(conn, table):
        return "rowid"
    for index in indexes:
        if index.unique and len(index.columns) == 1 and index.first_not_null:
            return index.columns[0]
    why = (
        f"its primary key has {len(primary)} columns ({', '.join(primary)})"
        if primary
        else "it has no primary key"
    )
    raise TargetError(
        f"table {table} cannot be purged in batches: {why}, and no single-column unique "
        "NOT NULL key to walk; add one"
    )


def date_column_of(
    ctx: ToolContext, table: str, column: str
) -> tuple[list[TableIndex], cutoffs.DateColumn]:
    """The table's indexes and what its date column holds: read once for a run's steps
    on the table (the count before a purge, the purge), until a step writes to it."""

    def read() -> tuple[list[TableIndex], cutoffs.DateColumn]:
        indexes = indexes_of(ctx.connection, table)
        return indexes, cutoffs.describe(ctx.connection, table, column, indexes)

    return cast(
        tuple[list[TableIndex], cutoffs.DateColumn],
        remembered(ctx, table)(("date column", column), read),
    )


def key_span(ctx: ToolContext, table: str, batch: BatchSql) -> tuple[Any, Any]:
    """The least and greatest value of the key the purge walks (the walk ends at the
    greatest), read once for the count before the purge and the purge."""

    def read() -> tuple[Any, Any]:
        low, high = ctx.connection.execute(text(batch.bounds())).one()
        return plain_key(low), plain_key(high)

    return cast(tuple[Any, Any], remembered(ctx, table)(("bounds", batch.key), read))


def remembered(ctx: ToolContext, table: str) -> Remember:
    """What an earlier step of the run read of the table, until a step writes to it."""
    return lambda key, read: ctx.table_readings.get(table, ("purge", key), read)


def _has_rowid(conn: Connection, table: str) -> bool:
    """A rowid table with no column that hides the rowid's names."""
    columns = {c["name"].lower() for c in inspect(conn).get_columns(table)}
    return not {"rowid", "_rowid_", "oid"} & columns and not _without_rowid(conn, table)


def _without_rowid(conn: Connection, table: str) -> bool:
    sql = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}
    ).scalar()
    return "WITHOUT ROWID" in (sql or "").upper()


def prepare(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Read once per step: the date column, the key and its range, the archive table's
    shape, that the tables it writes keep a batch's writes as its transaction does, and
    what a DELETE from the table sets off beyond its rows."""

    def compute() -> dict[str, Any]:
        conn = ctx.connection
        table = params["table"]
        if ctx.dialect == "sqlite":
            # Again at every start: a saved plan may run after the table (or its
            # archive table) gained an index or trigger that calls the application's code.
            refuse_purge_app_code(conn, table, params["date_column"], params.get("archive_table"))
            refuse_reached_app_code(conn, table)
        indexes, column = date_column_of(ctx, table, params["date_column"])
        key = walk_key(conn, table, indexes)
        copied: list[str] = []
        # At every start, as when the job was planned: a table altered since to an
        # engine without transactions would keep a rolled-back batch's writes.
        if params.get("archive_table"):
            copied = check_archive_table(conn, table, params["archive_table"])
        else:
            check_durable(conn, table, None)
        # Rows archived to a file without RETURNING are read by name (MySQL's SELECT *
        # leaves invisible columns out).
        by_name = params.get("archive_file") and ctx.dialect not in RETURNING
        read = table_columns(conn, table) if by_name else []
        batch = BatchSql(ctx, params, key, copied=copied, read=read)
        low, high = key_span(ctx, table, batch)
        batch.by_range = is_integer(high) and not params.get("max_rows")
        progress = ctx.load_progress() or {}
        if "batches" in progress:
            # A walk under way goes on (and previews) as it began, whatever the
            # statistics `walk: auto` read say since.
            batch.by_pages = progress.get("walk") == "pages"
        else:
            batch.by_pages = walks_pages(conn, batch.table, params, key, batch.by_range)
        # With what the step is judged with: its batches hold to it (reach.py).
        reach = read_reach(
            conn, batch.table, table, batch.archive_table, params.get("archive_table")
        )
        conn.commit()
        return {
            "column": column,
            "key": key,
            "batch": batch,
            "bounds": (low, high),
            "reach": reach,
        }

    key = f"purge {params['table']!r} {params['date_column']!r} {params.get('archive_table')!r}"
    return cached(ctx, key, compute)


def render_purge(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    """What the step sends of the table: the reads at its start, then what the batches
    send: the first batch's form (no lower bound), then the rest. Plain key ranges start
    below the lowest key, so every batch has a lower bound, as every page range has,
    but where the lowest key is the least of its type (batchsql.LEAST_KEY)."""
    prepared = prepare(params, ctx)
    batch: BatchSql = prepared["batch"]
    start = _start_reads(ctx, batch)
    low = prepared["bounds"][0]
    # A walk from the least key of its type has no key below it to start after: its
    # first batch's statements have no lower bound (batches.Walk, open_below).
    from_least = batch.by_range and is_integer(low) and open_below(low - 1)
    if batch.by_pages or (batch.by_range and not from_least):
        return start + batch.statements(first=False) + _stop_reads(ctx, batch, params)
    shown = batch.statements(first=True)
    rest = [sql for sql in batch.statements(first=False) if sql not in shown]
    return start + shown + rest + _stop_reads(ctx, batch, params)


def _start_reads(ctx: ToolContext, batch: BatchSql) -> list[str]:
    """The reads of the table itself a purge sends before its batches: the key's ends
    (where the walk ends; sent while the step is prepared), and, held to max_share (and
    not let past it by a person), the count of the rows the share is of (a full read of
    the table, which a DBA weighs as any other), at its first start and on a resume."""
    reads = [batch.bounds()]
    progress = ctx.load_progress() or {}
    limited = ctx.max_share is not None and ctx.max_share < 1
    if limited and not progress.get("share_passed"):
        reads.append(COUNT_AT_START.format(table=batch.table))
    return reads


def _stop_reads(ctx: ToolContext, batch: BatchSql, params: Mapping[str, Any]) -> list[str]:
    """The read a purge held to max_share sends where it stops at a limit (and, asked
    again after such a stop, before the question): the rows older than the cutoff left,
    which the stop's reason, the question and the yes after it are about."""
    if ctx.max_share is None or ctx.max_share >= 1:
        return []
    return [COUNT_LEFT.format(table=batch.table, date_column=ctx.quote(params["date_column"]))]


def estimate_purge(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """How many rows would go, of how many, and what would slow the purge: estimated
    from statistics or a sample on PostgreSQL and MySQL, counted on SQLite. For the
    preview and the prompt only: the purge holds max_share on what it deletes
    (share.py), and a purge that stopped there says so here."""
    conn = ctx.connection
    prepared = prepare(params, ctx)
    column = prepared["column"]
    cut = params.get("cutoff")
    zone = cutoffs.compared_in(conn, column)
    if cut is None:
        cut = cutoffs.cutoff_for(conn, column, params["retention_days"])
    else:
        # Before anyone is asked: read in another zone than its count's, the cutoff is
        # another moment (and maybe younger than the retention allows: said first).
        require_counted(column, cut, params)
        hold_to_zone(column, cut, zone, counted_zone(params), COUNTED)
        cutoffs.no_newer_than(conn, column, cut, params["retention_days"])
    found = None
    if ctx.dialect != "sqlite":
        table, key, bounds = params["table"], prepared["key"], prepared["bounds"]
        bound = column.bind(cut)
        found = estimate_rows(
            conn, ctx.quote, table, key, column, bound, lambda: bounds, remembered(ctx, table)
        )
    estimated = found is not None
    if found is not None:
        total, older = found.rows, found.older
    else:
        total, older = count_older(ctx, params, column, cut)
    max_rows = params.get("max_rows")
    estimate: dict[str, Any] = {
        "rows_to_delete": older,
        "table_rows": total,
        "estimated": estimated,
        "cutoff": cut,
        "retention_days": params["retention_days"],
        "key": prepared["key"],
        "rows_this_run": min(older, max_rows) if max_rows else older,
        "warnings": [],
    }
    if found is not None:
        estimate["how"] = found.how
    if zone is not None:
        estimate["cutoff_zone"] = zone
        ctx.step_cache[cutoffs.ZONE_SHOWN] = zone
    clock = shown_clock(conn, column, zone, params)
    if clock is not None:
        estimate["cutoff_clock"] = clock
    # It stopped at max_share in an earlier go: going on needs a person's yes, to the
    # rows left now.
    estimate.update(stop_figures(params, ctx, prepared["batch"].table))
    about = "about " if estimated else ""
    if max_rows and older > max_rows:
        estimate["warnings"].append(
            f"{about}{older:,} rows are older than the cutoff; this run stops after "
            f"max_rows={max_rows:,} and the next run goes on"
        )
    estimate["warnings"].extend(_index_warnings(params, prepared))
    return estimate


def _index_warnings(params: Mapping[str, Any], prepared: Mapping[str, Any]) -> list[str]:
    """What a date column without an index costs the purge, as the preview says it."""
    if prepared["column"].indexed:
        return []
    if prepared["batch"].by_pages:
        return [
            f"{params['date_column']} has no index: once its batches have walked the "
            "table's pages, the purge's last look for rows older than the cutoff reads "
            "the table again"
        ]
    return [
        f"{params['date_column']} has no index: batches walk {prepared['key']} and test "
        "each row's date, so where old and new rows are mixed a batch reads more rows "
        "than it deletes"
    ]


def hold_to_zone(
    column: cutoffs.DateColumn, cut: Any, zone: str | None, shown: Any, who: str
) -> None:
    """Refuse, before any batch, a cutoff this session reads in time zone `zone` where
    it was shown read in `shown` (by `who`): the same text is another moment there, and
    other rows would go (or younger ones: said before the retention's own refusal)."""
    if zone is None or shown is None or shown == zone:
        return
    raise StepFailed(
        f"the cutoff {cut} of {column.table}.{column.column} was shown read in time zone "
        f"{shown} ({who}), but this session reads it in time zone {zone}, where it is "
        "another moment; no batch was sent in this session: set the session's time_zone "
        f"to {shown} for this target, or preview the purge again"
    )


def require_counted(column: cutoffs.DateColumn, cut: Any, params: Mapping[str, Any]) -> None:
    """A cutoff given to the purge of a column the session's time zone reads (MariaDB's
    TIMESTAMP) comes with the count that read it (`counted`, its output): without it the
    zone it was read in is unknown, and a session of another zone would delete by
    another moment (a plan drafted or written without it). Refused before any batch."""
    if not column.zoned or counted_zone(params) is not None:
        return
    raise StepFailed(
        f"the cutoff {cut} of {column.table}.{column.column} is given without the count "
        "that read it (the purge's `counted`: that count_table_rows step's output), and "
        "this column's cutoff is read in the session's time zone, so the zone it was "
        "read in is unknown; give `counted` with the cutoff, or leave the cutoff out "
        "(the purge then reads its own); no batch was sent"
    )


# Who showed the zone a count step's output (`counted`, a purge's param) names.
COUNTED = "the count that made it"


def shown_clock(
    conn: Connection, column: cutoffs.DateColumn, zone: str | None, params: Mapping[str, Any]
) -> str | None:
    """The clock the purge's cutoff reads on (cutoffs.clock_of): that of the count that
    made it, where it was given one, at no statement more; else the session's now."""
    counted = params.get("counted")
    made = counted.get("cutoff_clock") if isinstance(counted, Mapping) else None
    if params.get("cutoff") is not None and isinstance(made, str):
        return made
    return cutoffs.clock_of(conn, column, zone)


def counted_zone(params: Mapping[str, Any]) -> Any:
    """The time zone the count that made the purge's cutoff read it in (its output, the
    purge's `counted`: a log cleanup's first step, in its own session); None: none."""
    counted = params.get("counted")
    return counted.get("cutoff_zone") if isinstance(counted, Mapping) else None
