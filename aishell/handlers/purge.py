"""count_table_rows and delete_old_records: purge old rows in short, resumable batches.

A purge walks the table's key upwards. Each batch finds the key below which the next
`n` old rows lie, deletes the old rows up to it and commits; the batch size follows
the time batches take, so that each holds its locks for about max_batch_ms whatever
the rows cost. Before a batch commits, a durable checkpoint records where it ends and
how many rows it deleted; after a crash the purge looks whether that batch's rows are
still there to know whether it committed, so no row is counted (or archived) twice
and none is skipped.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from aishell import cutoff as cutoffs
from aishell.archive import ArchiveFile
from aishell.catalog import table_columns
from aishell.errors import StepInterrupted, TargetError
from aishell.handlers import Handler, cached
from aishell.registry import RiskLevel, ToolContext
from aishell.throttle import Throttle

MAX_BATCH = 1_000_000
# Batches grow at most this much at a time, so one slow stretch of the table cannot
# meet a batch sized for a fast one.
MAX_GROWTH = 2.0
THROTTLE_CHECK_SECONDS = 1.0
THROTTLE_WAIT_SECONDS = 1.0


# --- count_table_rows ----------------------------------------------------------------


def _count(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = ctx.quote(params["table"])
    if not params.get("date_column"):
        return {"row_count": conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()}
    column = cutoffs.describe(conn, params["table"], params["date_column"])
    cut = params.get("cutoff")
    if cut is None:
        if params.get("retention_days") is None:
            raise TargetError("count_table_rows needs retention_days or cutoff with date_column")
        cut = cutoffs.cutoff_for(conn, column, params["retention_days"])
    total, older = _count_older(ctx, params, column, cut)
    return {
        "row_count": total,
        "older_rows": older,
        "cutoff": cut,
        "date_column": params["date_column"],
        "date_kind": column.kind,
    }


def _count_older(
    ctx: ToolContext, params: Mapping[str, Any], column: cutoffs.DateColumn, cut: Any
) -> tuple[int, int]:
    """The table's rows, and those older than the cutoff, in one scan."""
    total, older = ctx.connection.execute(
        text(
            f"SELECT count(*), sum(CASE WHEN {ctx.quote(params['date_column'])} < :cutoff "
            f"THEN 1 ELSE 0 END) FROM {ctx.quote(params['table'])}"
        ),
        {"cutoff": column.bind(cut)},
    ).one()
    return int(total), int(older or 0)


count_table_rows = Handler(
    sql_templates=(
        "SELECT count(*), sum(CASE WHEN {date_column} < :cutoff THEN 1 ELSE 0 END) FROM {table}",
    ),
    run_fn=_count,
)


# --- the key a purge walks -------------------------------------------------------------


def walk_key(conn: Connection, table: str) -> str:
    """A single-column key that orders the table: its primary key, a unique NOT NULL
    column, or SQLite's rowid. Anything else is refused with the reason."""
    inspector = inspect(conn)
    columns = {c["name"]: c for c in inspector.get_columns(table)}
    primary = inspector.get_pk_constraint(table).get("constrained_columns") or []
    if len(primary) == 1:
        return str(primary[0])
    if (
        conn.dialect.name == "sqlite"
        and not primary
        and not {"rowid", "_rowid_", "oid"} & {c.lower() for c in columns}
        and not _without_rowid(conn, table)
    ):
        return "rowid"
    for index in inspector.get_indexes(table):
        names = index.get("column_names") or []
        if (
            index.get("unique")
            and len(names) == 1
            and names[0] in columns
            and not columns[names[0]].get("nullable", True)
        ):
            return str(names[0])
    why = (
        f"its primary key has {len(primary)} columns ({', '.join(primary)})"
        if primary
        else "it has no primary key"
    )
    raise TargetError(
        f"table {table} cannot be purged in batches: {why}, and no single-column unique "
        "NOT NULL key to walk; add one"
    )


def _without_rowid(conn: Connection, table: str) -> bool:
    sql = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}
    ).scalar()
    return "WITHOUT ROWID" in (sql or "").upper()


# --- the statements of one batch ---------------------------------------------------------


class _Batch:
    """The SQL of one batch for a table, key, date column and archive."""

    def __init__(self, ctx: ToolContext, params: Mapping[str, Any], key: str) -> None:
        q = ctx.quote
        self.dialect = ctx.dialect
        self.table, self.key = q(params["table"]), q(key) if key != "rowid" else "rowid"
        self.date = q(params["date_column"])
        self.archive_table = q(params["archive_table"]) if params.get("archive_table") else None
        self.archive_file = bool(params.get("archive_file"))
        # Integer keys are walked in plain key ranges (unless a cap on rows needs each
        # batch's old rows counted first); see _batches.
        self.by_range = False

    def range(self, first: bool) -> str:
        lower = "" if first else f"{self.key} > :after AND "
        return f"{lower}{self.key} <= :upper AND {self.date} < :cutoff"

    def upper(self, first: bool) -> str:
        lower = "" if first else f"{self.key} > :after AND "
        return (
            f"SELECT max(aishell_k) FROM (SELECT {self.key} AS aishell_k FROM {self.table} "
            f"WHERE {lower}{self.date} < :cutoff ORDER BY {self.key} LIMIT :n) aishell_batch"
        )

    def bounds(self) -> str:
        return f"SELECT min({self.key}), max({self.key}) FROM {self.table}"

    def delete(self, first: bool) -> str:
        return f"DELETE FROM {self.table} WHERE {self.range(first)}"

    def returning(self) -> bool:
        # MySQL has no DELETE ... RETURNING; it locks the rows it archives instead.
        return self.dialect in ("postgresql", "sqlite")

    def statements(self, first: bool) -> list[str]:
        """What one batch sends, in order (shown in previews and approvals). Walking
        plain key ranges, the batch's end is computed, not looked up."""
        return ([] if self.by_range else [self.upper(first)]) + self.work(first)

    def work(self, first: bool) -> list[str]:
        """The statements that delete (and archive) one batch's rows."""
        delete = self.delete(first)
        if self.archive_table and self.dialect == "postgresql":
            return [
                f"WITH aishell_gone AS ({delete} RETURNING *) "
                f"INSERT INTO {self.archive_table} SELECT * FROM aishell_gone"
            ]
        if self.archive_table:
            return [
                f"INSERT INTO {self.archive_table} SELECT * FROM {self.table} "
                f"WHERE {self.range(first)}",
                delete,
            ]
        if self.archive_file and self.returning():
            return [f"{delete} RETURNING *"]
        if self.archive_file:
            return [f"SELECT * FROM {self.table} WHERE {self.range(first)} FOR UPDATE", delete]
        return [delete]


def _prepare(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Read once per step: the date column, the key and its range, the archive table's
    shape."""

    def compute() -> dict[str, Any]:
        conn = ctx.connection
        table = params["table"]
        column = cutoffs.describe(conn, table, params["date_column"])
        key = walk_key(conn, table)
        if params.get("archive_table"):
            check_archive_table(conn, table, params["archive_table"])
        batch = _Batch(ctx, params, key)
        low, high = conn.execute(text(batch.bounds())).one()
        batch.by_range = _is_integer(high) and not params.get("max_rows")
        return {"column": column, "key": key, "batch": batch, "bounds": (low, high)}

    key = f"purge {params['table']!r} {params['date_column']!r} {params.get('archive_table')!r}"
    return cached(ctx, key, compute)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_archive_table(conn: Connection, table: str, archive: str) -> None:
    """Refuse an archive table that is the purged table itself, or not shaped like it."""
    if _same_table(conn, table, archive):
        # Rows copied into the table they are deleted from would be counted as
        # archived and deleted while the table kept them all.
        raise TargetError(
            f"the archive table {archive!r} is the table being purged ({table!r}); "
            "archive into another table"
        )
    wanted = table_columns(conn, table)
    found = table_columns(conn, archive)
    if not found:
        raise TargetError(
            f"archive table {archive} does not exist; create it with the columns of {table} "
            f"in the same order (e.g. CREATE TABLE {archive} (LIKE {table}) on PostgreSQL, "
            f"CREATE TABLE {archive} LIKE {table} on MySQL)"
        )
    if found != wanted:
        raise TargetError(
            f"archive table {archive} has columns ({', '.join(found)}), "
            f"not those of {table} ({', '.join(wanted)}) in the same order"
        )


def _same_table(conn: Connection, table: str, other: str) -> bool:
    """Whether two names reach one table, as the server resolves a quoted name: SQLite
    folds ASCII case; MySQL folds case when lower_case_table_names is 1 or 2;
    PostgreSQL matches exactly (compared by the table's oid where it exists)."""
    if table == other:
        return True
    dialect = conn.dialect.name
    if dialect == "sqlite":
        # NOCASE folds ASCII letters only, exactly as SQLite matches table names.
        same = conn.execute(text("SELECT :a = :b COLLATE NOCASE"), {"a": table, "b": other})
        return bool(same.scalar())
    if dialect in ("mysql", "mariadb"):
        folding = int(conn.execute(text("SELECT @@lower_case_table_names")).scalar() or 0)
        return folding != 0 and table.lower() == other.lower()
    if dialect == "postgresql":
        oids = [
            conn.execute(
                text(
                    "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relname = :t AND n.nspname = current_schema()"
                ),
                {"t": name},
            ).scalar()
            for name in (table, other)
        ]
        return oids[0] is not None and oids[0] == oids[1]
    return False


def _render(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    """What the batches send: the first batch's form (no lower bound), then the rest."""
    batch = _prepare(params, ctx)["batch"]
    shown = batch.statements(first=True)
    return shown + [sql for sql in batch.statements(first=False) if sql not in shown]


def _estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Exactly how many rows would go, of how many, and what would slow the purge."""
    conn = ctx.connection
    prepared = _prepare(params, ctx)
    column = prepared["column"]
    cut = params.get("cutoff")
    if cut is None:
        cut = cutoffs.cutoff_for(conn, column, params["retention_days"])
    else:
        cutoffs.no_newer_than(conn, column, cut, params["retention_days"])
    total, older = _count_older(ctx, params, column, cut)
    max_rows = params.get("max_rows")
    estimate: dict[str, Any] = {
        "rows_to_delete": older,
        "table_rows": total,
        "cutoff": cut,
        "retention_days": params["retention_days"],
        "key": prepared["key"],
        "rows_this_run": min(older, max_rows) if max_rows else older,
        "warnings": [],
    }
    if max_rows and older > max_rows:
        estimate["warnings"].append(
            f"{older:,} rows are older than the cutoff; this run stops after "
            f"max_rows={max_rows:,} and the next run goes on"
        )
    if not column.indexed:
        estimate["warnings"].append(
            f"{params['date_column']} has no index: batches walk {prepared['key']} and test "
            "each row's date, so where old and new rows are mixed a batch reads more rows "
            "than it deletes"
        )
    return estimate


# --- delete_old_records ------------------------------------------------------------------


def _purge(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    prepared = _prepare(params, ctx)
    column, key, batch = prepared["column"], prepared["key"], prepared["batch"]
    progress: dict[str, Any] = dict(ctx.load_progress() or {})
    resumed = bool(progress)
    retention = params["retention_days"]
    cut = progress.get("cutoff", params.get("cutoff"))
    if cut is None:
        cut = cutoffs.cutoff_for(conn, column, retention)
    else:
        cutoffs.no_newer_than(conn, column, cut, retention)
    bound = column.bind(cut)
    after = progress.get("last_key")
    deleted = int(progress.get("rows_deleted", 0))
    batches = int(progress.get("batches", 0))
    archive_bytes = progress.get("archive_offset")
    pending = progress.get("pending")
    if pending:
        # The checkpoint was written before that batch's commit: did the commit happen?
        first = after is None
        left = conn.execute(
            text(f"SELECT 1 FROM {batch.table} WHERE {batch.range(first)} LIMIT 1"),
            {"after": after, "upper": pending["upper"], "cutoff": bound},
        ).first()
        if left is None:
            after, deleted, batches = pending["upper"], deleted + pending["rows"], batches + 1
            archive_bytes = pending.get("archive_offset", archive_bytes)
    conn.commit()

    archive = None
    if params.get("archive_file"):
        archive = ArchiveFile(Path(params["archive_file"]), keep_bytes=archive_bytes)
    throttle = _throttle(params, ctx)
    # The target's connection autocommits each statement; a batch is one transaction.
    conn.execution_options(isolation_level=_batch_isolation(ctx.dialect, params))
    try:
        return _batches(
            params,
            ctx,
            batch,
            prepared["bounds"],
            bound,
            cut,
            key,
            archive,
            throttle,
            state={
                "after": after,
                "deleted": deleted,
                "batches": batches,
                "resumed": resumed,
                "archive_offset": archive.offset if archive else None,
                **({"end": progress["end"]} if "end" in progress else {}),
            },
        )
    finally:
        if conn.in_transaction():
            conn.rollback()
        conn.execution_options(isolation_level="AUTOCOMMIT")
        if archive is not None:
            archive.close()
        for _name, replica in throttle.replicas:
            replica.close()


def _batch_isolation(dialect: str, params: Mapping[str, Any]) -> str:
    if dialect == "sqlite":
        return "SERIALIZABLE"  # SQLite's own transactions: one writer at a time
    if dialect == "mysql" and (params.get("archive_file") or params.get("archive_table")):
        # The rows a batch copies are locked, with the gaps between them, until it
        # commits: no other session can slip a row into the batch's range between the
        # copy and the delete.
        return "REPEATABLE READ"
    # No gap locks: inserts of new rows never wait for a batch.
    return "READ COMMITTED"


def _throttle(params: Mapping[str, Any], ctx: ToolContext) -> Throttle:
    replicas = []
    for name in params.get("replicas") or []:
        if ctx.open_target is None:
            raise TargetError(f"replica {name}: other targets cannot be opened here")
        replicas.append((name, ctx.open_target(name)))
    return Throttle(
        ctx.connection,
        max_running=params.get("max_running_queries"),
        max_replica_lag_seconds=params.get("max_replica_lag_seconds"),
        replicas=replicas,
    )


def _batches(
    params: Mapping[str, Any],
    ctx: ToolContext,
    batch: _Batch,
    bounds: tuple[Any, Any],
    bound: Any,
    cut: Any,
    key: str,
    archive: ArchiveFile | None,
    throttle: Throttle,
    state: dict[str, Any],
) -> dict[str, Any]:
    conn = ctx.connection
    size = int(params["batch_size"])
    largest = int(params.get("max_batch_size", MAX_BATCH))
    target = params["max_batch_ms"] / 1000
    sleep = params.get("sleep_ms", 0) / 1000
    max_rows = params.get("max_rows")
    expected = params.get("expected_rows")
    started = time.monotonic()
    deadline, deadline_reason = _deadline(params, ctx, started)
    durations: list[float] = []
    throttled_seconds = 0.0
    last_check = 0.0
    stopped_by: str | None = None
    complete = False
    deleted_here = 0

    # Integer keys are walked in key ranges, sized by time like any batch: no statement
    # but the delete itself reads the rows. Other keys, or a cap on rows, take the key
    # below which the next n old rows lie.
    if "end" not in state:
        low, high = bounds
        state["end"] = high
        if state["after"] is None and _is_integer(low):
            state["after"] = low - 1
    end = state["end"]
    by_range = batch.by_range and _is_integer(end) and _is_integer(state["after"])

    def checkpoint(pending: dict[str, Any] | None = None) -> None:
        ctx.save_progress(
            {
                "cutoff": cut,
                "key": key,
                "last_key": state["after"],
                "end": end,
                "rows_deleted": state["deleted"],
                "batches": state["batches"],
                "archive_offset": state["archive_offset"],
                "pending": pending,
            }
        )

    while True:
        if ctx.should_stop():
            checkpoint()
            raise StepInterrupted(
                f"stopped after {state['batches']} batches and {state['deleted']:,} rows; "
                "`aishell resume` goes on from there"
            )
        now = time.monotonic()
        expected_batch = durations[-1] if durations else 0.0
        if deadline is not None and now + expected_batch >= deadline:
            stopped_by = deadline_reason
            break
        if max_rows is not None and state["deleted"] >= max_rows:
            stopped_by = f"max_rows ({max_rows:,}) reached"
            break
        if expected is not None and state["deleted"] >= expected:
            # Every row the count found older than the cutoff is gone; the rest of the
            # key range holds none of them, so it is not read. Rows written since with
            # old dates wait for the next run (the count after the purge shows them).
            complete = True
            break
        if throttle.active and now - last_check >= THROTTLE_CHECK_SECONDS:
            waited, stopped = _wait_while_busy(ctx, throttle, deadline)
            throttled_seconds += waited
            last_check = time.monotonic()
            if stopped:
                continue  # the checks above end the loop
        n = size if max_rows is None else max(1, min(size, max_rows - state["deleted"]))
        first = state["after"] is None
        values = {"after": state["after"], "cutoff": bound, "n": n}
        t0 = time.perf_counter()
        if end is None or (by_range and state["after"] >= end):
            upper = None
        elif by_range:
            upper = min(state["after"] + n, end)
        else:
            upper = conn.execute(text(batch.upper(first)), values).scalar()
        if upper is None:
            conn.commit()
            complete = True
            break
        if isinstance(upper, bool) or not isinstance(upper, int | str):
            conn.rollback()
            raise TargetError(
                f"the key {key} holds {type(upper).__name__} values; a purge walks integer "
                "or text keys"
            )
        values["upper"] = upper
        count, archive_offset = _delete_batch(conn, batch, values, first, archive)
        checkpoint(
            {"upper": upper, "rows": count, "archive_offset": archive_offset},
        )
        conn.commit()
        elapsed = time.perf_counter() - t0
        durations.append(elapsed)
        state.update(
            after=upper,
            deleted=state["deleted"] + count,
            batches=state["batches"] + 1,
            archive_offset=archive_offset,
        )
        deleted_here += count
        visited = n if by_range else count
        if visited > 0 and elapsed > 0:
            ideal = visited * target / elapsed
            size = int(max(1, min(ideal, size * MAX_GROWTH, largest)))
        running = time.monotonic() - started
        ctx.report(
            {
                "rows_deleted": state["deleted"],
                "expected_rows": expected,
                "rows_per_second": round(deleted_here / running) if running > 0 else None,
                "batch_size": size,
                "batches": state["batches"],
            }
        )
        if sleep:
            time.sleep(sleep)
    checkpoint()
    seconds = time.monotonic() - started
    output: dict[str, Any] = {
        "table": params["table"],
        "rows_deleted": state["deleted"],
        "rows_deleted_this_attempt": deleted_here,
        "batches": state["batches"],
        "cutoff": cut,
        "key": key,
        "last_key": state["after"],
        "complete": complete,
        "stopped_by": stopped_by,
        "resumed": state["resumed"],
        "seconds": round(seconds, 3),
        "rows_per_second": round(deleted_here / seconds) if seconds > 0 else None,
        "longest_batch_ms": round(max(durations) * 1000, 1) if durations else None,
        "median_batch_ms": round(statistics.median(durations) * 1000, 1) if durations else None,
        "final_batch_size": size,
        "throttled_seconds": round(throttled_seconds, 1),
        "large_purge": state["deleted"] >= params.get("statistics_after_rows", 10_000),
    }
    if archive is not None:
        output["archive_file"] = str(archive.path)
    if params.get("archive_table"):
        output["archive_table"] = params["archive_table"]
    return output


def _delete_batch(
    conn: Connection,
    batch: _Batch,
    values: dict[str, Any],
    first: bool,
    archive: ArchiveFile | None,
) -> tuple[int, int | None]:
    """Delete (and archive) one batch, uncommitted; returns the rows and the archive's end."""
    statements = batch.work(first)
    if archive is None and not batch.archive_table:
        return conn.execute(text(statements[0]), values).rowcount, None
    if batch.archive_table:
        counts = [conn.execute(text(sql), values).rowcount for sql in statements]
        if len(set(counts)) != 1:
            raise TargetError(
                f"archived {counts[0]} rows but deleted {counts[-1]}; the batch was rolled back"
            )
        return counts[0], None
    assert archive is not None
    result = conn.execute(text(statements[0]), values)
    columns, rows = list(result.keys()), result.fetchall()
    if len(statements) == 2:  # MySQL: the rows were selected FOR UPDATE; now delete them
        count = conn.execute(text(statements[1]), values).rowcount
        if count != len(rows):
            raise TargetError(
                f"archived {len(rows)} rows but deleted {count}; the batch was rolled back"
            )
    # The copy is on disk before the delete can commit.
    return len(rows), archive.append(columns, rows)


def _deadline(
    params: Mapping[str, Any], ctx: ToolContext, started: float
) -> tuple[float | None, str | None]:
    deadlines: list[tuple[float, str]] = []
    if params.get("run_time_seconds"):
        seconds = float(params["run_time_seconds"])
        deadlines.append((started + seconds, f"run time ({seconds:g}s) used up"))
    if ctx.ends_at is not None and ctx.seconds_left is not None:
        deadlines.append(
            (started + ctx.seconds_left, f"maintenance window closes at {ctx.ends_at:%H:%M %Z}")
        )
    if not deadlines:
        return None, None
    return min(deadlines)


def _wait_while_busy(
    ctx: ToolContext, throttle: Throttle, deadline: float | None
) -> tuple[float, bool]:
    """Wait while the server is busy; returns the seconds waited and whether to stop."""
    waited = 0.0
    reason = throttle.busy()
    ctx.connection.commit()
    if reason is None:
        return 0.0, False
    ctx.record_event("throttled", {"reason": reason})
    while reason is not None:
        ctx.report({"throttled": reason})
        if ctx.should_stop() or (deadline is not None and time.monotonic() >= deadline):
            return waited, True
        time.sleep(THROTTLE_WAIT_SECONDS)
        waited += THROTTLE_WAIT_SECONDS
        reason = throttle.busy()
        ctx.connection.commit()
    ctx.record_event("throttle_released", {"waited_seconds": waited})
    ctx.report({"throttled": None})
    return waited, False


# Every shape a batch may send, {key} being the key the purge walks; what a step
# runs is rendered from the same _Batch, and the guard lets through nothing else.
_RANGE = "{key} > :after AND {key} <= :upper AND {date_column} < :cutoff"
delete_old_records = Handler(
    sql_templates=(
        "SELECT max(aishell_k) FROM (SELECT {key} AS aishell_k FROM {table} WHERE {key} > :after "
        "AND {date_column} < :cutoff ORDER BY {key} LIMIT :n) aishell_batch",
        f"DELETE FROM {{table}} WHERE {_RANGE}",
        f"DELETE FROM {{table}} WHERE {_RANGE} RETURNING *",
        f"INSERT INTO {{archive_table}} SELECT * FROM {{table}} WHERE {_RANGE}",
        f"WITH aishell_gone AS (DELETE FROM {{table}} WHERE {_RANGE} RETURNING *) "
        "INSERT INTO {archive_table} SELECT * FROM aishell_gone",
    ),
    risk=RiskLevel.MEDIUM,
    effect="deletes rows older than a cutoff",
    run_fn=_purge,
    render_fn=_render,
    estimate_fn=_estimate,
)
