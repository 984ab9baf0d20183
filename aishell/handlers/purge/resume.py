"""delete_old_records' run: the purge from its last durable checkpoint. A first start, a
resume after a crash and a retry after a lost connection all begin there: the session
the checkpoint names is made sure to be over (indoubt.py), then a batch checkpointed but
not known to have committed is judged by a witness of its own transaction (indoubt.py,
pages.py), never by what its key range holds since, and the archive file is cut
back to the length of the last committed batch (by that batch's own bytes only:
ownership.py), so no row is counted (or archived) twice and none is skipped."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.handlers.purge import cutoff as cutoffs
from aishell.handlers.purge.archive import open_archive
from aishell.handlers.purge.attempt import Attempt, deadline_of, first_line, stopped_resumably
from aishell.handlers.purge.batches import first_batch, run_batches
from aishell.handlers.purge.batchsql import BatchSql
from aishell.handlers.purge.indoubt import KeyBatch, server_word, session_of, settle_session
from aishell.handlers.purge.pages import PageWalk, page
from aishell.handlers.purge.prepare import (
    COUNTED,
    counted_zone,
    hold_to_zone,
    prepare,
    require_counted,
    shown_clock,
)
from aishell.handlers.purge.reconnect import MAX_LOST_IN_A_ROW, connection_lost, reconnect
from aishell.handlers.purge.share import share_limit
from aishell.handlers.purge.throttle import Throttle
from aishell.handlers.purge.waits import make_throttle
from aishell.sqltext import text
from aishell.targets.sessionbusy import cut_if_abandoned_past
from aishell.tool.context import ToolContext

# What a page walk's checkpoint holds of where it is (pages.py).
_PAGE_STATE = ("page", "stop", "round")


def purge(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    prepared = prepare(params, ctx)
    started = time.monotonic()
    deadline, deadline_reason = deadline_of(params, ctx, started)
    first = first_batch(params)
    attempt = Attempt(
        started,
        deadline,
        deadline_reason,
        resumed=bool(ctx.load_progress()),
        size=first,
        stretch=first,
    )
    while True:
        try:
            # Past its deadline (the window's end, its run time) a batch whose
            # connection went silent would wait out the step's limit (a day).
            with cut_if_abandoned_past(conn, attempt.deadline):
                return _purge_from_checkpoint(params, ctx, prepared, attempt)
        except DBAPIError as exc:
            if not connection_lost(exc, conn):
                raise
            attempt.lost_in_a_row += 1
            if attempt.lost_in_a_row > MAX_LOST_IN_A_ROW:
                raise stopped_resumably(
                    ctx,
                    f"lost the connection to the server {attempt.lost_in_a_row} times with no "
                    f"batch done in between (last: {first_line(exc)})",
                    "check the server's log for why it ends the purge's sessions",
                ) from None
            # What the lost session had not committed went with it; the checkpoint
            # says how far the purge got, exactly as after a crash.
            reconnect(params, ctx, exc, attempt)


@dataclass
class _Checkpoint:
    """Where the last durable checkpoint left the purge, its batch in doubt settled."""

    cut: Any
    bound: Any  # the cutoff as the value the date column is compared with
    after: Any
    deleted: int
    batches: int
    archive_bytes: int | None
    progress: dict[str, Any]
    # The pending checkpoint of a batch that did not commit (its archive bytes are cut).
    doubt: dict[str, Any] | None = None
    # The time zone the session reads the cutoff in, where it reads it in one.
    zone: str | None = None
    # The clock the cutoff's value reads on, where it has no offset (cutoffs.clock_of).
    clock: str | None = None


def _last_checkpoint(
    params: Mapping[str, Any],
    ctx: ToolContext,
    column: cutoffs.DateColumn,
    batch: BatchSql,
    session: dict[str, Any] | None,
) -> _Checkpoint:
    """The checkpoint's cutoff, key, rows, batches and archive length; a batch it holds as
    pending counts as done when a witness of its own transaction says it committed (the
    server's word on it, its archived keys gone from the table, its copy in the archive
    table; indoubt.KeyBatch), asked once the session that sent it is over."""
    conn = ctx.connection
    progress: dict[str, Any] = dict(ctx.load_progress() or {})
    # Before anything is read: the old session may hold the batch's locks, and its
    # COMMIT may still land.
    settle_session(ctx, progress.get("session"), session)
    retention = params["retention_days"]
    cut = progress.get("cutoff", params.get("cutoff"))
    given = cut is not None
    if not given:
        cut = cutoffs.cutoff_for(conn, column, retention)
    elif "cutoff" not in progress:
        require_counted(column, cut, params)
    zone = cutoffs.compared_in(conn, column)
    _hold_to_shown_zone(ctx, column, cut, zone, progress, counted_zone(params))
    if given:
        cutoffs.no_newer_than(conn, column, cut, retention)
    bound = column.bind(cut)
    after = progress.get("last_key")
    deleted = int(progress.get("rows_deleted", 0))
    batches = int(progress.get("batches", 0))
    archive_bytes = progress.get("archive_offset")
    pending = progress.get("pending")
    doubt = None
    if pending and batch.by_pages:
        if _page_batch_committed(conn, batch, progress, pending, bound):
            progress["page"], deleted, batches = (
                pending["page"],
                deleted + pending["rows"],
                batches + 1,
            )
            archive_bytes = pending.get("archive_offset", archive_bytes)
        else:
            doubt = pending
    elif pending:
        # The checkpoint was written before that batch's commit: did the commit happen?
        judged = KeyBatch(ctx, batch, pending, after, bound, params.get("archive_file"))
        if judged.committed():
            after, deleted, batches = pending["upper"], deleted + pending["rows"], batches + 1
            archive_bytes = pending.get("archive_offset", archive_bytes)
        else:
            doubt = pending
    clock = shown_clock(conn, column, zone, params)
    conn.commit()
    return _Checkpoint(
        cut, bound, after, deleted, batches, archive_bytes, progress, doubt, zone, clock
    )


def _hold_to_shown_zone(
    ctx: ToolContext,
    column: cutoffs.DateColumn,
    cut: Any,
    zone: str | None,
    progress: Mapping[str, Any],
    counted: Any,
) -> None:
    """Refuse, before any batch of this session, a cutoff this session would read in
    another time zone than the one shown beside it (its checkpoint's, the count that
    made it, the estimate the step was judged on, the saved plan's preview, its
    approval): the same text would be another moment, and other rows would go."""
    for who, shown in _zones_shown(ctx, progress, counted):
        hold_to_zone(column, cut, zone, shown, who)


def _zones_shown(
    ctx: ToolContext, progress: Mapping[str, Any], counted: Any
) -> list[tuple[str, Any]]:
    # `counted`: the zone of the count that made the cutoff (a log cleanup's first step),
    # read in its own session; the purge may run in another (a resume).
    found: list[tuple[str, Any]] = [
        ("its checkpoint", progress.get("cutoff_zone")),
        (COUNTED, counted),
        ("the estimate it was judged on", ctx.step_cache.get(cutoffs.ZONE_SHOWN)),
    ]
    if ctx.reviewed_estimate is not None:
        found.append(("the saved plan's preview", ctx.reviewed_estimate.get("cutoff_zone")))
    approved = [a for a in ctx.step_approvals() if a.get("decision") == "approved"]
    given = approved[-1].get("given_for") if approved else None
    effect = given.get("effect") if isinstance(given, Mapping) else None
    if isinstance(effect, Mapping):
        found.append(("its approval", effect.get("cutoff_zone")))
    return found


def _page_batch_committed(
    conn: Connection,
    batch: BatchSql,
    progress: Mapping[str, Any],
    pending: Mapping[str, Any],
    bound: Any,
) -> bool:
    """Whether a page batch checkpointed as pending committed: the server's word on its
    transaction; where that settles nothing (see indoubt.server_word), whether its
    pages still hold old rows."""
    # With an archive, a batch the server may have seen commit counts as committed: its
    # pages may hold old rows either way, and cutting the archived copy of a batch that
    # did commit would lose its rows for good, a worse harm than a row archived twice.
    archived = bool(batch.archive_table or batch.archive_file)
    word = server_word(conn, pending, unsure=True if archived else None)
    if word is not None:
        return word
    left = conn.execute(
        text(f"SELECT 1 FROM {batch.table} WHERE {batch.range(False)} LIMIT 1"),
        {"low": page(int(progress["page"])), "high": page(int(pending["page"])), "cutoff": bound},
    ).first()
    return left is None


def _walk_of(ctx: ToolContext, batch: BatchSql, progress: Mapping[str, Any]) -> None:
    """The walk a checkpoint was made by goes on the same way (a purge checkpointed by
    key goes on by key); a first start walks as prepare() chose."""
    if "batches" in progress:
        batch.by_pages = progress.get("walk") == "pages"


def _purge_from_checkpoint(
    params: Mapping[str, Any], ctx: ToolContext, prepared: dict[str, Any], attempt: Attempt
) -> dict[str, Any]:
    """The purge from its last durable checkpoint: a first start, a resume after a
    crash and a retry after a lost connection all begin here."""
    conn = ctx.connection
    column, batch = prepared["column"], prepared["batch"]
    # This attempt's session, named in every checkpoint from here on.
    session = session_of(conn)
    _walk_of(ctx, batch, ctx.load_progress() or {})
    point = _last_checkpoint(params, ctx, column, batch, session)
    # Counted at the step's first start, before its first batch's checkpoint, and again
    # on a resume still held to the limit.
    limit = share_limit(params, ctx, batch.table, point.progress, point.deleted)
    archive = None
    if params.get("archive_file"):
        archive, ctx = open_archive(params, ctx, point.archive_bytes, point.progress, point.doubt)
    throttle: Throttle | None = None
    try:
        throttle = make_throttle(params, ctx)
        # The target's connection autocommits each statement; a batch is one transaction.
        conn.execution_options(isolation_level=_batch_isolation(ctx.dialect, params))
        return run_batches(
            params,
            ctx,
            batch,
            prepared["bounds"],
            point.bound,
            point.cut,
            prepared["key"],
            archive,
            throttle,
            attempt,
            state={
                "after": point.after,
                "deleted": point.deleted,
                "batches": point.batches,
                "archive_offset": archive.offset if archive else None,
                "session": session,
                "cutoff_zone": point.zone,
                "cutoff_clock": point.clock,
                "archive_overlaps": _archive_overlaps(ctx, batch, prepared["bounds"], point),
                **{k: point.progress[k] for k in ("end", *_PAGE_STATE) if k in point.progress},
            },
            limit=limit,
            walk_kind=PageWalk if batch.by_pages else None,
            reach=prepared["reach"],
        )
    finally:
        _end_batches(conn)
        if archive is not None:
            archive.close()
        for _name, replica in throttle.replicas if throttle else ():
            replica.close()


def _archive_overlaps(
    ctx: ToolContext, batch: BatchSql, bounds: tuple[Any, Any], point: _Checkpoint
) -> bool | None:
    """Whether an earlier purge's rows lie in the archive table where this purge's
    batches archive theirs (one archive table, day after day, keys interleaved with the
    rows kept): then a batch in doubt's own copy cannot be told from them by its rows in
    the archive's key range alone, and each batch counts them as it goes. Asked at the
    step's first start, kept in its checkpoints; None where a batch in doubt has another
    witness (PostgreSQL's server, an archive file) or no archive table."""
    if ctx.dialect == "postgresql" or not batch.archive_table or batch.key == "rowid":
        return None
    if point.progress:
        found = point.progress.get("archive_overlaps")
        return found if isinstance(found, bool) else None
    low = bounds[0]
    if low is None:
        return False
    row = ctx.connection.execute(text(batch.archived_from()), {"low": low}).first()
    ctx.connection.rollback()
    return row is not None


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
