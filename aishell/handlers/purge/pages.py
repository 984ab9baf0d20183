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
fast, does not size a batch for a stretch of old rows after it. Nor larger than the
pages max_batch_size rows fill at the most old rows a page has held so far; before a
batch has measured that, at the statistics' rows per page while the table has not
outgrown them since ANALYZE, else at the most rows a page can hold. A batch whose DELETE
finds more than max_batch_size rows all the same is undone and its pages walked again in
fewer pages: no batch commits more.

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
from aishell.handlers.purge.batches import MAX_GROWTH, Walk, largest_batch
from aishell.handlers.purge.batchsql import KEYS, PAGES_SQL, PART, BatchSql
from aishell.handlers.purge.batchwork import OverLimit, delete_batch
from aishell.handlers.purge.indoubt import transaction_of
from aishell.handlers.purge.ownership import BatchBytes
from aishell.sqltext import display, text

# A batch whose pages turn out all old takes at most about this many times the aim.
WORST_FACTOR = 2.0
# What deleting a row costs until a batch has measured it (a fast server's figure:
# batches start small and are sized from what they measure).
DEFAULT_ROW_SECONDS = 2e-6
# The most rows a page can hold (an 8 kB page of tuples without a column: PostgreSQL's
# MaxHeapTuplesPerPage). A batch's first pages are sized by it where the statistics do
# not describe the table as it is now, so that the batch holds at most batch_size rows
# however narrow they are.
MOST_ROWS_PER_PAGE = 291.0
# The statistics' rows per page (reltuples / relpages) are taken while the table has
# grown no more than this since they were made (relpages against its length now): rows
# added since (with autovacuum off, or between its runs) may be much narrower.
STATS_GROWTH = 1.2
# The most keys one look past the pages deletes in a batch, and the looks that may find
# old rows (moved into pages already done, or written with old dates meanwhile) before
# the step stops and says so.
LOOK_ROWS = 10_000
MAX_LOOKS = 20
# The oid is compared with the regclass by pg_catalog's own operator: an operator a
# database defines over (oid, regclass) exactly would be chosen over it.
_SIZE_SQL = (
    "SELECT reltuples, relpages FROM pg_catalog.pg_class "
    "WHERE oid OPERATOR(pg_catalog.=) CAST(:relation AS pg_catalog.regclass)"
)
# The table goes to these as a bound value, its quoted name as SQL writes it: text()'s
# colon escapes (sqltext.display) would be part of the value.
_KIND_SQL = (
    "SELECT relkind FROM pg_catalog.pg_class "
    "WHERE oid OPERATOR(pg_catalog.=) CAST(:relation AS pg_catalog.regclass)"
)
# How closely the key's order follows the heap's, as ANALYZE last measured it.
_CORRELATION_SQL = (
    "SELECT s.correlation FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON "
    "n.oid = c.relnamespace JOIN pg_catalog.pg_stats s ON s.schemaname = n.nspname AND "
    "s.tablename = c.relname "
    "WHERE c.oid OPERATOR(pg_catalog.=) CAST(:relation AS pg_catalog.regclass) "
    "AND s.attname = :key "
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
    """What a page and a row cost a batch, measured; the most old rows a page has held.
    Until a batch has measured that, the statistics' rows per page or, `guessed`, the
    most a page can hold: the first measure replaces a guess."""

    rows_per_page: float
    guessed: bool = False
    page_seconds: float | None = None
    row_seconds: float | None = None

    def measure(self, pages: int, rows: int, elapsed: float) -> None:
        if rows == 0:
            self.page_seconds = elapsed / pages
            return
        reading = (self.page_seconds or 0.0) * pages
        self.row_seconds = max(elapsed - reading, elapsed / 4) / rows
        self.crowded(pages, rows)

    def crowded(self, pages: int, rows: int) -> None:
        """`rows` old rows were found on `pages` pages (a batch committed, or one undone
        for holding too many)."""
        found = rows / pages
        self.rows_per_page = found if self.guessed else max(self.rows_per_page, found)
        self.guessed = False

    def worst_page(self) -> float:
        """A page's cost if every row on it is old."""
        row = DEFAULT_ROW_SECONDS if self.row_seconds is None else self.row_seconds
        return (self.page_seconds or 0.0) + self.rows_per_page * row


@dataclass
class PageWalk(Walk):
    """The walk over the table's pages (see the module's docstring)."""

    costs: _Costs = field(init=False)
    pages: int = field(init=False)
    # The keys a look past the pages found that batches have yet to delete.
    left: list[Any] = field(init=False, default_factory=list)

    def __post_init__(self, bounds: tuple[Any, Any]) -> None:
        params, state, conn = self.params, self.state, self.ctx.connection
        self.largest = largest_batch(params)
        self.target = params["max_batch_ms"] / 1000
        self.sleep = params.get("sleep_ms", 0) / 1000
        self.max_rows = None
        self.expected = params.get("expected_rows")
        self.end = None
        self.by_range = False
        tuples, relpages = conn.execute(
            text(_SIZE_SQL), {"relation": display(self.batch.table)}
        ).one()
        if "stop" not in state:
            state.update(page=0, stop=table_pages(conn, self.batch), round=0)
        conn.commit()
        # The table's length when the walk started, against the pages ANALYZE counted.
        current = bool(relpages and tuples and tuples > 0)
        current = current and state["stop"] <= relpages * STATS_GROWTH
        per_page = float(tuples) / relpages if current else 0.0
        if per_page >= 1:
            self.costs = _Costs(per_page)
        else:
            self.costs = _Costs(MOST_ROWS_PER_PAGE, guessed=True)
        first = int(min(int(params["batch_size"]), self.largest) / self.costs.rows_per_page)
        self.pages = max(1, min(first, self.most_pages))

    @property
    def most_pages(self) -> int:
        """The pages of max_batch_size rows, at the most old rows a page has held."""
        return max(1, int(self.largest / self.costs.rows_per_page))

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
        # A batch holds at most max_batch_size rows, whatever its pages turn out to hold.
        most = self.largest if room is None else min(room, self.largest)
        if high - low == 1 and 0 < most < self.costs.rows_per_page and not self.costs.guessed:
            # Pages have held more old rows than a batch may take: part of one at a time,
            # without first deleting (and undoing) the whole page.
            return self._part_of_page(low, most)
        values = {"low": page(low), "high": page(high), "cutoff": self.bound}
        t0 = time.perf_counter()
        try:
            count, archived = delete_batch(conn, self.batch, values, False, self.archive, most=most)
        except OverLimit as over:
            # More old rows than max_batch_size, or than max_share still allows: undone;
            # fewer pages, down to one, of which the rows allowed; with none allowed
            # (max_share), the step stops for a person's yes.
            conn.rollback()
            found = int(over.args[0])
            self.costs.crowded(high - low, found)
            if high - low > 1:
                self.pages = max(1, (high - low) * most // found)
                return True
            if most == 0:
                self._stop_at_limit()
            return self._part_of_page(low, most)
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
        where: dict[str, Any] = {"page": resume_page, "rows": count}
        if count:
            where.update(transaction_of(conn))
        state["archive_offset"] = self._commit_pending(where, archived)
        self.attempt.lost_in_a_row = 0
        state["deleted"] += count
        state["batches"] += 1
        self.attempt.deleted_here += count

    def _part_of_page(self, low: int, room: int) -> bool:
        """Delete `room` of the old rows of page `low` and commit; the page stays the
        resume point (its other old rows go in the batches after, or wait for a
        person's yes to pass max_share), unless it held fewer: then it is done."""
        conn = self.ctx.connection
        values = {"low": page(low), "high": page(low + 1), "cutoff": self.bound, "n": room}
        count, archived = delete_batch(
            conn, self.batch, values, False, self.archive, most=room, form=PART
        )
        resume = low + 1 if count < room else low
        self._committed(count, archived, resume)
        self.state["page"] = resume
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
        # most_pages follows the rows per page just measured, not the statistics.
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
        if self.left:
            return self._delete_left()
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
        self.left = keys
        return self._delete_left()

    def _delete_left(self) -> bool:
        """Delete the old rows of the next max_batch_size keys a look found and commit
        (a key is one row at most); the look's other keys go in the batches after."""
        keys, self.left = self.left[: self.largest], self.left[self.largest :]
        values = {"keys": keys, "cutoff": self.bound}
        conn = self.ctx.connection
        count, archived = delete_batch(conn, self.batch, values, False, self.archive, form=KEYS)
        self._committed(count, archived, self.state["page"])
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
