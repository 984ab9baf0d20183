"""The page walk: on PostgreSQL 14+ a purge deletes over ranges of the heap's pages
(TID range scans), reading the table once in its physical order as one DELETE does,
where a key range's batch reads its rows through the key's index. By default (`walk:
auto`) a table whose integer key follows the heap's order (pg_stats.correlation, as
ANALYZE measured it) walks the key instead: its index reads the heap in that same
order, and a key walk needs no look past its end (below), a row keeping its key when
an UPDATE moves it.

Each batch deletes the old rows of pages [low, high) (`ctid >= '(low,0)' AND ctid <
'(high,0)'`), reads its transaction's id, checkpoints itself as pending with that id,
writes its archive bytes and commits; the checkpoint's next page is the resume point.
After a crash the server says whether that transaction committed (pg_xact_status), so a
batch is never judged by what its pages hold since (resume.py). Batches are sized in
pages by the time they take, as the key walk sizes its batches, and no larger than the
pages a batch could delete in twice the aim if every row on them were old (the cost of
a row and of a page measured from the batches so far): a stretch of kept pages, read
fast, does not size a batch for a stretch of old rows after it.

Nothing older than the cutoff is left, whatever writers do meanwhile: pages appended to
the table during the walk (new rows, and row versions an UPDATE moved there) are walked
too, up to the table's length when the walk reaches its end. An UPDATE can also move an
old row into a page already done (into space a VACUUM freed there), so then a look for
rows older than the cutoff left anywhere (by the date column's index when it has one,
else a scan of the table) takes their keys, and a batch deletes them by key, wherever
they have moved since; the look is repeated until it finds none (at most MAX_LOOKS
times). A row deleted by a batch is gone; a row a batch did not see is seen by a later
batch or by the look: none is deleted twice or missed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from aishell.handlers.purge.attempt import stopped_resumably
from aishell.handlers.purge.batches import MAX_GROWTH, OverLimit, Walk, delete_batch
from aishell.handlers.purge.batchsql import KEYS, PAGES_SQL, PART, XACT_SQL, BatchSql
from aishell.handlers.purge.ownership import BatchBytes
from aishell.sqltext import display, text

# A batch whose pages turn out all old takes at most about this many times the aim.
WORST_FACTOR = 2.0
# What deleting a row costs until a batch has measured it (a fast server's figure:
# batches start small and are sized from what they measure).
DEFAULT_ROW_SECONDS = 2e-6
# Rows a page holds when the table's statistics do not say (8 kB pages, ~150-byte rows).
DEFAULT_ROWS_PER_PAGE = 50.0
# The most keys one look past the pages deletes in a batch, and the looks that may find
# old rows (moved into pages already done, or written with old dates meanwhile) before
# the step stops and says so.
LOOK_ROWS = 10_000
MAX_LOOKS = 20
_SIZE_SQL = (
    "SELECT reltuples, relpages FROM pg_catalog.pg_class WHERE oid = CAST(:relation AS regclass)"
)
# The table goes to these as a bound value, its quoted name as SQL writes it: text()'s
# colon escapes (sqltext.display) would be part of the value.
_KIND_SQL = "SELECT relkind FROM pg_catalog.pg_class WHERE oid = CAST(:relation AS regclass)"
# How closely the key's order follows the heap's, as ANALYZE last measured it.
_CORRELATION_SQL = (
    "SELECT s.correlation FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON "
    "n.oid = c.relnamespace JOIN pg_catalog.pg_stats s ON s.schemaname = n.nspname AND "
    "s.tablename = c.relname WHERE c.oid = CAST(:relation AS regclass) AND s.attname = :key "
    "AND NOT s.inherited"
)
# `walk: auto` walks an integer key whose order follows the heap's at least this closely
# (pg_stats.correlation; 1: the same order). Its batches' index range scans then read
# the heap in order, as the page walk does, and, a row keeping its key when an UPDATE
# moves it, the walk needs no look for old rows left past its end: the page walk's
# second read of the table (docs/performance.md). Without statistics: pages.
KEY_ORDER_CORRELATION = 0.9


def walks_pages(
    conn: Connection, table_sql: str, params: Mapping[str, Any], key: str, integer_key: bool
) -> bool:
    """Whether the purge of this table walks its pages (page_rule); `key`: the key it
    would walk otherwise, unquoted; `integer_key`: walked in plain key ranges."""
    dialect = conn.dialect.name
    version = tuple(v for v in conn.dialect.server_version_info or (0,) if isinstance(v, int))
    if not page_rule(dialect, version, "r", params):
        return False  # the table's kind need not be read
    relation = {"relation": display(table_sql)}
    kind = conn.execute(text(_KIND_SQL), relation).scalar()
    in_order = False
    if params.get("walk", "auto") == "auto" and integer_key:
        correlation = conn.execute(text(_CORRELATION_SQL), {**relation, "key": key}).scalar()
        in_order = correlation is not None and float(correlation) >= KEY_ORDER_CORRELATION
    return page_rule(dialect, version, str(kind), params, key_in_order=in_order)


def page_rule(
    dialect: str,
    version: tuple[int, ...],
    kind: str,
    params: Mapping[str, Any],
    key_in_order: bool = False,
) -> bool:
    """Pages on PostgreSQL 14+ (TID range scans), for an ordinary table (`kind` r: a
    partitioned table's pages are its partitions'), unless a cap on rows (max_rows)
    asks for batches counted in rows, the job says `walk: keys`, or it says `walk: auto`
    (the default) and an integer key follows the heap's order (`key_in_order`). Elsewhere,
    and otherwise, key ranges (batches.py)."""
    walk = params.get("walk", "auto")
    return (
        (walk == "pages" or (walk == "auto" and not key_in_order))
        and not params.get("max_rows")
        and dialect == "postgresql"
        and version >= (14,)
        and kind == "r"
    )


def page(number: int) -> str:
    """The tid of a page's first line pointer: '(number,0)'."""
    return f"({number},0)"


def table_pages(conn: Connection, batch: BatchSql) -> int:
    """The table's length in pages now."""
    return int(conn.execute(text(PAGES_SQL), {"relation": display(batch.table)}).scalar_one())


@dataclass
class _Costs:
    """What a page and a row cost a batch, measured; rows a page holds."""

    rows_per_page: float
    page_seconds: float | None = None
    row_seconds: float | None = None

    def measure(self, pages: int, rows: int, elapsed: float) -> None:
        if rows == 0:
            self.page_seconds = elapsed / pages
            return
        reading = (self.page_seconds or 0.0) * pages
        self.row_seconds = max(elapsed - reading, elapsed / 4) / rows
        self.rows_per_page = max(self.rows_per_page, rows / pages)

    def worst_page(self) -> float:
        """A page's cost if every row on it is old."""
        row = DEFAULT_ROW_SECONDS if self.row_seconds is None else self.row_seconds
        return (self.page_seconds or 0.0) + self.rows_per_page * row


@dataclass
class PageWalk(Walk):
    """The walk over the table's pages (see the module's docstring)."""

    costs: _Costs = field(init=False)
    pages: int = field(init=False)
    most_pages: int = field(init=False)

    def __post_init__(self, bounds: tuple[Any, Any]) -> None:
        params, state, conn = self.params, self.state, self.ctx.connection
        self.largest = int(params.get("max_batch_size", 1_000_000))
        self.target = params["max_batch_ms"] / 1000
        self.sleep = params.get("sleep_ms", 0) / 1000
        self.max_rows = None
        self.expected = params.get("expected_rows")
        self.end = None
        self.by_range = False
        tuples, relpages = conn.execute(
            text(_SIZE_SQL), {"relation": display(self.batch.table)}
        ).one()
        per_page = float(tuples) / relpages if relpages and tuples and tuples > 0 else 0.0
        self.costs = _Costs(per_page if per_page >= 1 else DEFAULT_ROWS_PER_PAGE)
        if "stop" not in state:
            state.update(page=0, stop=table_pages(conn, self.batch), round=0)
        conn.commit()
        per = self.costs.rows_per_page
        self.pages = max(1, int(int(params["batch_size"]) / per))
        self.most_pages = max(1, int(self.largest / per))

    def checkpoint(self, pending: dict[str, Any] | None = None) -> None:
        state = self.state
        self.ctx.save_progress(
            {
                "cutoff": self.cut,
                "key": self.key,
                "walk": "pages",
                "page": state["page"],
                "stop": state["stop"],
                "round": state["round"],
                "rows_deleted": state["deleted"],
                "batches": state["batches"],
                "archive_offset": state["archive_offset"],
                "session": state.get("session"),
                "pending": pending,
                **(self.limit.progress() if self.limit is not None else {}),
            }
        )

    def next_batch(self) -> bool:
        """Delete (and archive) the next pages' old rows and commit; at the end of the
        pages, walk those appended meanwhile, then look for old rows left; False when
        none is left."""
        conn, state = self.ctx.connection, self.state
        self.passed = False
        if state["page"] >= state["stop"]:
            return self._go_round()
        low = state["page"]
        high = min(low + self.pages, state["stop"])
        room = self.limit.room(state["deleted"]) if self.limit is not None else None
        values = {"low": page(low), "high": page(high), "cutoff": self.bound}
        t0 = time.perf_counter()
        try:
            count, archived = delete_batch(conn, self.batch, values, False, self.archive, most=room)
        except OverLimit as over:
            # More old rows than max_share still allows: undone; fewer pages, down to
            # one, of which the rows still allowed; with none allowed, the step stops
            # for a person's yes.
            conn.rollback()
            assert room is not None
            if high - low > 1:
                self.pages = max(1, (high - low) * room // int(over.args[0]))
                return True
            if room == 0:
                self._stop_at_limit()
            return self._part_of_page(low, room)
        self._committed(count, archived, high)
        elapsed = time.perf_counter() - t0
        self.attempt.durations.append(elapsed)
        state["page"] = high
        self._size(high - low, count, elapsed)
        # The rows the next batch's pages hold, for the progress report.
        self.attempt.size = int(self.pages * self.costs.rows_per_page)
        self._report()
        return True

    def _committed(self, count: int, archived: BatchBytes | None, resume_page: int) -> None:
        """Commit a batch that deleted `count` rows (its archive first), checkpointing
        its transaction id, so that a resume after a commit in doubt asks the server
        whether it landed; `resume_page`: where the walk goes on."""
        conn, state = self.ctx.connection, self.state
        # No row deleted, no transaction id: nothing for a resume to judge.
        xid = conn.execute(text(XACT_SQL)).scalar() if count else None
        state["archive_offset"] = self._commit_pending(
            {"page": resume_page, "rows": count, "xid": xid}, archived
        )
        self.attempt.lost_in_a_row = 0
        state["deleted"] += count
        state["batches"] += 1
        self.attempt.deleted_here += count

    def _part_of_page(self, low: int, room: int) -> bool:
        """Delete `room` of the old rows of page `low` and commit; the page stays the
        resume point (its other old rows wait for a person's yes to pass max_share)."""
        conn = self.ctx.connection
        values = {"low": page(low), "high": page(low + 1), "cutoff": self.bound, "n": room}
        count, archived = delete_batch(
            conn, self.batch, values, False, self.archive, most=room, form=PART
        )
        self._committed(count, archived, low)
        self._report()
        return True

    def _size(self, pages: int, rows: int, elapsed: float) -> None:
        """The next batch's pages: by the time this one took (growing at most
        MAX_GROWTH times), and no more than the pages it could delete in WORST_FACTOR
        times the aim were every row on them old."""
        if elapsed <= 0:
            return
        self.costs.measure(pages, rows, elapsed)
        ideal = pages * self.target / elapsed
        worst = WORST_FACTOR * self.target / self.costs.worst_page()
        size = min(ideal, pages * MAX_GROWTH, worst, self.most_pages)
        self.pages = int(max(1, size))

    def _go_round(self) -> bool:
        """At the end of the pages: walk those appended since; then look for old rows
        left anywhere (moved by an UPDATE into a page already done) and delete them by
        their keys, wherever they move meanwhile; False when the look finds none."""
        conn, state = self.ctx.connection, self.state
        length = table_pages(conn, self.batch)
        conn.commit()
        if length > state["stop"]:
            state["stop"] = length  # appended while the walk went on: walked too
            return True
        values = {"cutoff": self.bound, "n": LOOK_ROWS}
        keys = list(conn.execute(text(self.batch.old_keys()), values).scalars())
        conn.commit()
        if not keys:
            self.complete = True
            return False
        if state["round"] >= MAX_LOOKS:
            self.checkpoint()
            raise stopped_resumably(
                self.ctx,
                f"rows older than the cutoff were still found after {MAX_LOOKS} looks past "
                f"the end of {self.params['table']}'s pages (rows written with old dates "
                "while the purge runs?)",
                "let the writers of old rows finish first",
            )
        state["round"] += 1
        room = self.limit.room(state["deleted"]) if self.limit is not None else None
        if room is not None:
            if room == 0:
                self._stop_at_limit()
            keys = keys[:room]  # a key is one row at most
        self.ctx.record_event("purge_rows_left", {"look": state["round"], "rows": len(keys)})
        values = {"keys": keys, "cutoff": self.bound}
        count, archived = delete_batch(conn, self.batch, values, False, self.archive, form=KEYS)
        self._committed(count, archived, state["page"])
        self._report()
        return True

    def output(self) -> dict[str, Any]:
        output = super().output()
        state = self.state
        output.update(
            walk="pages",
            last_key=None,
            last_page=state["page"],
            pages=state["stop"],
            looks=state["round"],
            final_batch_pages=self.pages,
        )
        return output
