"""count_table_rows and delete_old_records: purge old rows in short, resumable batches.

A purge walks the table's key upwards. Each batch finds the key below which the next
`n` old rows lie, deletes the old rows up to it and commits; the batch size follows
the time batches take, so that each holds its locks for about max_batch_ms whatever
the rows cost. Before a batch commits, a durable checkpoint records where it ends, how
many rows it deleted and how long the archive file is with them; after a crash the
purge looks whether that batch's rows are still there to know whether it committed,
and cuts the archive file back to the length of the last committed batch, so no row
is counted (or archived) twice and none is skipped. An archive table gets its copy in
the batch's own transaction. A lost connection (a server restart, a terminated
backend) is rolled back and reconnected with backoff, and the purge goes on from its
checkpoint the same way; a server that stays away, or stays busy past the throttle's
longest wait, stops the step resumably with the reason.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell import cutoff as cutoffs
from aishell.archive import ArchiveFile
from aishell.catalog import table_columns
from aishell.errors import StepFailed, StepInterrupted, TargetError
from aishell.handlers import Handler, cached
from aishell.registry import RiskLevel, ToolContext
from aishell.throttle import Throttle

MAX_BATCH = 1_000_000
# Batches grow at most this much at a time, so one slow stretch of the table cannot
# meet a batch sized for a fast one.
MAX_GROWTH = 2.0
THROTTLE_CHECK_SECONDS = 1.0
THROTTLE_WAIT_SECONDS = 1.0
# Defaults of max_throttle_wait_seconds and reconnect_seconds (the tool's schema and the
# agent's config say the same).
MAX_THROTTLE_WAIT = 1800.0
RECONNECT_SECONDS = 120.0
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 15.0
MAX_LOST_IN_A_ROW = 5
# A lost session: PostgreSQL's server shutting down or starting up (SQLSTATE class 08 is
# a broken connection); MySQL's "server has gone away" and "lost connection".
LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
LOST_MYSQL_CODES = frozenset({2006, 2013})


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


@dataclass
class _Attempt:
    """One run of the step, across the reconnects within it: its clock, its deadline and
    the figures it reports."""

    started: float
    deadline: float | None
    deadline_reason: str | None
    resumed: bool
    size: int
    durations: list[float] = field(default_factory=list)
    throttled_seconds: float = 0.0
    deleted_here: int = 0
    reconnects: int = 0
    # Connections lost since the last batch committed: a server that drops every new
    # session is not reconnected to for ever.
    lost_in_a_row: int = 0


def _purge(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    prepared = _prepare(params, ctx)
    started = time.monotonic()
    deadline, deadline_reason = _deadline(params, ctx, started)
    attempt = _Attempt(
        started,
        deadline,
        deadline_reason,
        resumed=bool(ctx.load_progress()),
        size=int(params["batch_size"]),
    )
    while True:
        try:
            return _purge_from_checkpoint(params, ctx, prepared, attempt)
        except DBAPIError as exc:
            if not _connection_lost(exc, conn):
                raise
            attempt.lost_in_a_row += 1
            if attempt.lost_in_a_row > MAX_LOST_IN_A_ROW:
                raise _stopped_resumably(
                    ctx,
                    f"lost the connection to the server {attempt.lost_in_a_row} times with no "
                    f"batch done in between (last: {_first_line(exc)})",
                    "check the server's log for why it ends the purge's sessions",
                ) from None
            # What the lost session had not committed went with it; the checkpoint
            # says how far the purge got, exactly as after a crash.
            _reconnect(params, ctx, exc, attempt)


def _purge_from_checkpoint(
    params: Mapping[str, Any], ctx: ToolContext, prepared: dict[str, Any], attempt: _Attempt
) -> dict[str, Any]:
    """The purge from its last durable checkpoint: a first start, a resume after a
    crash and a retry after a lost connection all begin here."""
    conn = ctx.connection
    column, key, batch = prepared["column"], prepared["key"], prepared["batch"]
    progress: dict[str, Any] = dict(ctx.load_progress() or {})
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

    archive = _open_archive(params, ctx, archive_bytes) if params.get("archive_file") else None
    throttle: Throttle | None = None
    try:
        throttle = _throttle(params, ctx)
        # The target's connection autocommits each statement; a batch is one transaction.
        conn.execution_options(isolation_level=_batch_isolation(ctx.dialect, params))
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
            attempt,
            state={
                "after": after,
                "deleted": deleted,
                "batches": batches,
                "archive_offset": archive.offset if archive else None,
                **({"end": progress["end"]} if "end" in progress else {}),
            },
        )
    finally:
        _end_batches(conn)
        if archive is not None:
            archive.close()
        for _name, replica in throttle.replicas if throttle else ():
            replica.close()


def _open_archive(params: Mapping[str, Any], ctx: ToolContext, keep: int | None) -> ArchiveFile:
    """The archive file, cut back to the length checkpointed with the last committed
    batch: rows written for a batch that never committed are still in the table."""
    path = Path(params["archive_file"])
    if keep is not None:
        size = path.stat().st_size if path.exists() else 0
        if size < keep:
            # Deleted rows whose only copy was in the file: going on would hide the loss.
            raise StepFailed(
                f"archive file {path} holds {size:,} bytes, fewer than the {keep:,} this purge "
                "wrote and checkpointed: rows archived by its earlier batches are missing; put "
                f"the file back, then `aishell resume {ctx.run_id}`"
            )
    return ArchiveFile(path, keep_bytes=keep)


def _end_batches(conn: Connection) -> None:
    """Roll back what is left open; a live connection goes back to autocommit, as every
    step expects, and a lost one is left for the reconnect to renew."""
    with suppress(DBAPIError):
        # A transaction whose commit failed is no longer active, but still has to end.
        if conn.get_transaction() is not None or conn.invalidated:
            conn.rollback()
    if conn.invalidated or conn.get_transaction() is not None:
        return
    # A commit that failed (SQLite's lock wait ran out) can leave the driver's own
    # transaction open, and switching to autocommit would commit it.
    with suppress(conn.dialect.loaded_dbapi.Error):
        conn.connection.dbapi_connection.rollback()  # type: ignore[union-attr]
    conn.execution_options(isolation_level="AUTOCOMMIT")


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
        max_wait_seconds=float(params.get("max_throttle_wait_seconds", MAX_THROTTLE_WAIT)),
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
    attempt: _Attempt,
    state: dict[str, Any],
) -> dict[str, Any]:
    conn = ctx.connection
    size = attempt.size
    largest = int(params.get("max_batch_size", MAX_BATCH))
    target = params["max_batch_ms"] / 1000
    sleep = params.get("sleep_ms", 0) / 1000
    max_rows = params.get("max_rows")
    expected = params.get("expected_rows")
    deadline = attempt.deadline
    durations = attempt.durations
    last_check = 0.0
    stopped_by: str | None = None
    complete = False

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

    # Before the first batch writes anything: the archive file's length from here on is
    # what a resume cuts it back to, whenever the process dies.
    checkpoint()
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
            stopped_by = attempt.deadline_reason
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
            waited, stop, still_busy = _wait_while_busy(ctx, throttle, deadline)
            attempt.throttled_seconds += waited
            last_check = time.monotonic()
            if still_busy is not None:
                checkpoint()
                raise _stopped_resumably(
                    ctx,
                    f"the server stayed busy for {waited:.0f}s ({still_busy}), the longest a "
                    f"purge waits (max_throttle_wait_seconds: {throttle.max_wait_seconds:g})",
                    "raise purge.max_throttle_wait_seconds in the log_cleanup agent's config "
                    "to wait longer",
                )
            if stop:
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
        # Durable before the commit: after a crash, a resume looks whether this batch's
        # rows are still there to know whether it committed, and cuts the archive file
        # back to the length before it if not.
        checkpoint(
            {"upper": upper, "rows": count, "archive_offset": archive_offset},
        )
        conn.commit()
        attempt.lost_in_a_row = 0
        elapsed = time.perf_counter() - t0
        durations.append(elapsed)
        state.update(
            after=upper,
            deleted=state["deleted"] + count,
            batches=state["batches"] + 1,
            archive_offset=archive_offset,
        )
        attempt.deleted_here += count
        visited = n if by_range else count
        if visited > 0 and elapsed > 0:
            ideal = visited * target / elapsed
            size = attempt.size = int(max(1, min(ideal, size * MAX_GROWTH, largest)))
        running = time.monotonic() - attempt.started
        ctx.report(
            {
                "rows_deleted": state["deleted"],
                "expected_rows": expected,
                "rows_per_second": round(attempt.deleted_here / running) if running > 0 else None,
                "batch_size": size,
                "batches": state["batches"],
            }
        )
        if sleep:
            time.sleep(sleep)
    checkpoint()
    seconds = time.monotonic() - attempt.started
    output: dict[str, Any] = {
        "table": params["table"],
        "rows_deleted": state["deleted"],
        "rows_deleted_this_attempt": attempt.deleted_here,
        "batches": state["batches"],
        "cutoff": cut,
        "key": key,
        "last_key": state["after"],
        "complete": complete,
        "stopped_by": stopped_by,
        "resumed": attempt.resumed,
        "reconnects": attempt.reconnects,
        "seconds": round(seconds, 3),
        "rows_per_second": round(attempt.deleted_here / seconds) if seconds > 0 else None,
        "longest_batch_ms": round(max(durations) * 1000, 1) if durations else None,
        "median_batch_ms": round(statistics.median(durations) * 1000, 1) if durations else None,
        "final_batch_size": size,
        "throttled_seconds": round(attempt.throttled_seconds, 1),
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
        # One transaction holds the copy and the delete (on PostgreSQL one statement):
        # both commit, or neither, so a batch done again never copies a row twice.
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
) -> tuple[float, bool, str | None]:
    """Wait while the server is busy, at most the throttle's longest wait. Returns the
    seconds waited, whether to stop (asked to, or the deadline came), and the reason
    the server was still busy when the longest wait ran out (None if it did not)."""
    reason = throttle.busy()
    ctx.connection.commit()
    if reason is None:
        return 0.0, False, None
    ctx.record_event("throttled", {"reason": reason})
    began = time.monotonic()
    while reason is not None:
        ctx.report({"throttled": reason})
        waited = time.monotonic() - began
        if ctx.should_stop() or (deadline is not None and time.monotonic() >= deadline):
            return waited, True, None
        if waited >= throttle.max_wait_seconds:
            ctx.record_event(
                "throttle_gave_up", {"reason": reason, "waited_seconds": round(waited, 1)}
            )
            return waited, False, reason
        time.sleep(min(THROTTLE_WAIT_SECONDS, throttle.max_wait_seconds - waited))
        reason = throttle.busy()
        ctx.connection.commit()
    waited = time.monotonic() - began
    ctx.record_event("throttle_released", {"waited_seconds": round(waited, 1)})
    ctx.report({"throttled": None})
    return waited, False, None


# --- a lost server -------------------------------------------------------------------------


def _connection_lost(exc: DBAPIError, conn: Connection) -> bool:
    """Did the purge's own session go (a server restart, a terminated backend, a broken
    network), rather than a statement fail?"""
    if conn.invalidated:
        return True
    orig = exc.orig
    sqlstate = str(getattr(orig, "sqlstate", None) or "")
    if sqlstate.startswith("08") or sqlstate in LOST_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in LOST_MYSQL_CODES


def _reconnect(
    params: Mapping[str, Any], ctx: ToolContext, lost: DBAPIError, attempt: _Attempt
) -> None:
    """Reconnect with backoff, for at most reconnect_seconds (and never past the step's
    deadline); then the step stops resumably, naming the cause."""
    conn = ctx.connection
    ours = conn.invalidated
    budget = float(params.get("reconnect_seconds", RECONNECT_SECONDS))
    began = time.monotonic()
    until, limit = began + budget, f"reconnect_seconds: {budget:g}"
    if attempt.deadline is not None and attempt.deadline < until:
        until, limit = attempt.deadline, attempt.deadline_reason or "the step's deadline"
    cause = _first_line(lost)
    ctx.record_event("connection_lost", {"error": cause})
    delay, tries, last = RECONNECT_FIRST_DELAY, 0, cause
    while True:
        with suppress(DBAPIError):
            conn.rollback()
        tries += 1
        try:
            # An invalidated connection opens a new session on its next statement.
            conn.execute(text("SELECT 1")).scalar()
            conn.rollback()
            # The new session starts as the target's sessions do; a step expects
            # autocommit between its transactions.
            conn.execution_options(isolation_level="AUTOCOMMIT")
        except DBAPIError as exc:
            ours, last = True, _first_line(exc)
        else:
            if not ours:
                raise lost  # another session (a replica's) failed; this one is fine
            attempt.reconnects += 1
            ctx.record_event(
                "reconnected",
                {"attempts": tries, "seconds": round(time.monotonic() - began, 1)},
            )
            return
        if ctx.should_stop():
            raise StepInterrupted(
                f"stopped while reconnecting after {cause}; `aishell resume` goes on from "
                "the last checkpoint"
            )
        wait = delay * random.uniform(0.5, 1.0)  # jitter: many runs do not retry at once
        if time.monotonic() + wait > until:
            raise _stopped_resumably(
                ctx,
                f"lost the connection to the server ({cause}) and could not reconnect "
                f"within {time.monotonic() - began:.0f}s ({limit}; {tries} tries, last: {last})",
                "purge.reconnect_seconds in the log_cleanup agent's config sets how long "
                "to keep trying",
            )
        time.sleep(wait)
        delay = min(delay * 2, RECONNECT_MAX_DELAY)


def _stopped_resumably(ctx: ToolContext, why: str, hint: str) -> StepFailed:
    """The step's failure, one line: why, where the checkpoint stands, how to go on."""
    progress = ctx.load_progress() or {}
    batches, rows = int(progress.get("batches", 0)), int(progress.get("rows_deleted", 0))
    # A batch checkpointed but not known to have committed: the resume looks.
    doubt = " (and one batch in doubt, which the resume checks)" if progress.get("pending") else ""
    return StepFailed(
        f"{why}; stopped after {batches} batches and {rows:,} rows{doubt}, checkpointed: "
        f"`aishell resume {ctx.run_id}` goes on from there ({hint})",
        {"rows_deleted": rows, "batches": batches, "resumable": True},
    )


def _first_line(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    text_ = str(inner).strip()
    return text_.splitlines()[0] if text_ else type(inner).__name__


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
