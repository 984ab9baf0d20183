"""The batches of a purge: walking the table's key upwards from the checkpoint, each
batch deleting (and archiving) the old rows up to the next key and committing, its size
following the time batches take so that each holds its locks for about max_batch_ms.

An integer key is walked in plain key ranges. Before each batch a read finds the first
old row of the stretch ahead; the batch's range starts there, and a stretch without
old rows is passed with that read alone, the walk going on at the next key past it
(which the same read finds). A read locks nothing: on MySQL a DELETE locks
every row it reads, old or not, and its range scan of kept rows cost 1.5 times the read.

Before a batch commits, a durable checkpoint records where it ends, how many rows it
deleted, the session that sends it, and where its archive bytes start and end and their
digest (on PostgreSQL its transaction's id); only then are those bytes written, and then
the batch commits. After a crash the resume (resume.py) makes sure that session is over,
then asks a witness of that transaction whether it committed (indoubt.KeyBatch)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any, NoReturn

from aishell.errors import StepFailed, StepInterrupted, TargetError
from aishell.handlers.purge.archivefile import ArchiveFile
from aishell.handlers.purge.attempt import Attempt, stopped_resumably
from aishell.handlers.purge.batchsql import (
    BatchSql,
    is_integer,
    open_below,
    past_gap,
    plain_key,
)
from aishell.handlers.purge.batchwork import OverLimit, delete_batch
from aishell.handlers.purge.cutoff import zone_moved
from aishell.handlers.purge.indoubt import transaction_of
from aishell.handlers.purge.ownership import BatchBytes, write_batch
from aishell.handlers.purge.reach import TableReach, changed_since
from aishell.handlers.purge.share import ShareLimit, stop_at_limit
from aishell.handlers.purge.throttle import Throttle
from aishell.handlers.purge.waits import THROTTLE_CHECK_SECONDS, rest, wait_while_busy
from aishell.sqltext import text
from aishell.tool.context import ToolContext
from aishell.units import exact, percent, took

MAX_BATCH = 1_000_000


def largest_batch(params: Mapping[str, Any]) -> int:
    """The most rows one batch may hold: the job's max_batch_size, else MAX_BATCH."""
    return int(params.get("max_batch_size") or MAX_BATCH)


def first_batch(params: Mapping[str, Any]) -> int:
    """The first batch's rows: batch_size, never over largest_batch, whoever made the
    params (a plan file, an LLM)."""
    return min(int(params["batch_size"]), largest_batch(params))


# Batches grow at most this much at a time, so one slow stretch of the table cannot
# meet a batch sized for a fast one.
MAX_GROWTH = 2.0


def run_batches(
    params: Mapping[str, Any],
    ctx: ToolContext,
    batch: BatchSql,
    bounds: tuple[Any, Any],
    bound: Any,
    cut: Any,
    key: str,
    archive: ArchiveFile | None,
    throttle: Throttle,
    attempt: Attempt,
    state: dict[str, Any],
    limit: ShareLimit | None = None,
    walk_kind: type[Walk] | None = None,
    reach: TableReach | None = None,
) -> dict[str, Any]:
    """Batches from `state` (the checkpoint's key, rows and batches) until no old row is
    left, a limit is reached, or the step is asked to stop; the step's output. At
    `limit` (max_share) the step stops waiting for a person (NamedApprovalNeeded).
    `walk_kind`: the walk (pages.PageWalk on PostgreSQL 14+; by default the key's).
    `reach`: what a batch set off when the step was judged, its archive copy and the
    keys that act included, which every batch holds to (reach.py)."""
    kind = walk_kind or Walk
    walk = kind(
        params,
        ctx,
        batch,
        bound,
        cut,
        key,
        archive,
        throttle,
        attempt,
        state,
        bounds,
        limit,
        reach,
    )
    # Before the first batch writes anything: the archive file's length from here on is
    # what a resume cuts it back to, whenever the process dies.
    walk.checkpoint()
    while True:
        if ctx.should_stop():
            walk.checkpoint()
            raise StepInterrupted(
                f"stopped after {state['batches']} batch{'' if state['batches'] == 1 else 'es'} "
                f"and {state['deleted']:,} row{'' if state['deleted'] == 1 else 's'}; "
                "`aishell resume` goes on from there"
            )
        now = time.monotonic()
        if walk.ends_before_batch(now):
            break
        if walk.throttle_due(now) and walk.waited_out_throttle():
            continue  # the checks above end the loop
        if not walk.next_batch():
            break
        if walk.sleep and not walk.passed:
            rest(ctx, walk.sleep, walk.attempt.deadline)
    walk.checkpoint()
    return walk.output()


@dataclass
class Walk:
    """One attempt's walk up the key: what its batches need, the state its checkpoints
    save, and how it ended."""

    params: Mapping[str, Any]
    ctx: ToolContext
    batch: BatchSql
    bound: Any
    cut: Any
    key: str
    archive: ArchiveFile | None
    throttle: Throttle
    attempt: Attempt
    state: dict[str, Any]
    bounds: InitVar[tuple[Any, Any]]
    limit: ShareLimit | None = None
    reach: TableReach | None = None
    last_check: float = 0.0
    stopped_by: str | None = None
    complete: bool = False
    # Whether the last step of the walk passed a stretch without old rows.
    passed: bool = False
    largest: int = field(init=False)
    target: float = field(init=False)
    sleep: float = field(init=False)
    max_rows: int | None = field(init=False)
    expected: int | None = field(init=False)
    end: Any = field(init=False)
    by_range: bool = field(init=False)

    def __post_init__(self, bounds: tuple[Any, Any]) -> None:
        params, state = self.params, self.state
        self.largest = largest_batch(params)
        self.target = params["max_batch_ms"] / 1000
        self.sleep = params.get("sleep_ms", 0) / 1000
        self.max_rows = params.get("max_rows")
        self.expected = params.get("expected_rows")
        # Integer keys are walked in key ranges, sized by time like any batch: no
        # statement but the delete itself reads the rows. Other keys, or a cap on rows,
        # take the key below which the next n old rows lie.
        if "end" not in state:
            low, high = bounds
            state["end"] = high
            if state["after"] is None and is_integer(low):
                state["after"] = low - 1
        self.end = state["end"]
        self.by_range = self.batch.by_range and is_integer(self.end) and is_integer(state["after"])

    def checkpoint(self, pending: dict[str, Any] | None = None) -> None:
        self.ctx.save_progress(
            {
                "cutoff": self.cut,
                "key": self.key,
                "last_key": self.state["after"],
                "end": self.end,
                "rows_deleted": self.state["deleted"],
                "batches": self.state["batches"],
                "archive_offset": self.state["archive_offset"],
                "session": self.state.get("session"),
                "cutoff_zone": self.state.get("cutoff_zone"),
                "archive_overlaps": self.state.get("archive_overlaps"),
                "pending": pending,
                **(self.limit.progress() if self.limit is not None else {}),
            }
        )

    def ends_before_batch(self, now: float) -> bool:
        """Whether the deadline or max_rows ends the walk here."""
        durations, deleted = self.attempt.durations, self.state["deleted"]
        expected_batch = durations[-1] if durations else 0.0
        deadline = self.attempt.deadline
        if deadline is not None and now + expected_batch >= deadline:
            self.stopped_by = self.attempt.deadline_reason
            return True
        if self.max_rows is not None and deleted >= self.max_rows:
            self.stopped_by = f"max_rows ({self.max_rows:,}) reached"
            return True
        # The rows expected (an estimate) only size the progress bar: the walk ends at
        # the end of the key range, so no old row there is left for being unexpected.
        return False

    def throttle_due(self, now: float) -> bool:
        return self.throttle.active and now - self.last_check >= THROTTLE_CHECK_SECONDS

    def waited_out_throttle(self) -> bool:
        """Wait while the server is busy; whether the wait was cut short to stop. A server
        busy past the longest wait stops the step resumably."""
        throttle = self.throttle
        waited, stop, still_busy = wait_while_busy(self.ctx, throttle, self.attempt.deadline)
        self.attempt.throttled_seconds += waited
        self.last_check = time.monotonic()
        if still_busy is not None:
            self.checkpoint()
            raise stopped_resumably(
                self.ctx,
                f"the server stayed busy for {took(waited, 0)} ({still_busy}), the longest a "
                f"purge waits (max_throttle_wait_seconds: {exact(throttle.max_wait_seconds)})",
                "raise purge.max_throttle_wait_seconds in the log_cleanup agent's config "
                "to wait longer",
            )
        return stop

    def _at_first_old(self) -> bool:
        """Integer keys: move the walk to just below the first old row of the stretch
        ahead; False when the stretch held none and the walk has passed it. The stretch
        grows while stretches come out empty, as batches grow, by the time each took."""
        conn, attempt, state = self.ctx.connection, self.attempt, self.state
        after = state["after"]
        upper = min(after + attempt.stretch, self.end)
        t0 = time.perf_counter()
        found, beyond = conn.execute(
            text(self.batch.first_old(open_below(after))),
            {"after": after, "upper": upper, "cutoff": self.bound},
        ).one()
        if found is not None:
            state["after"] = found - 1  # keys between had no old row
            # The batch's write follows in the same transaction (one round trip less);
            # on SQLite in one of its own: a read that went on into the write could not
            # take the write lock once another session had written.
            if self.ctx.dialect == "sqlite":
                conn.commit()
            return True
        conn.commit()
        state["after"] = past_gap(upper, beyond, self.end)
        elapsed = time.perf_counter() - t0
        ideal = (upper - after) * self.target / elapsed if elapsed > 0 else self.largest
        grown = min(ideal, attempt.stretch * MAX_GROWTH, self.largest)
        attempt.stretch = int(max(attempt.stretch, grown))
        return False

    def _upper(self, first: bool, n: int, values: dict[str, Any]) -> Any:
        """The key the next batch ends at; None when no old row is left."""
        after, conn = self.state["after"], self.ctx.connection
        if self.end is None or (self.by_range and after >= self.end):
            return None
        if self.by_range:
            return min(after + n, self.end)
        upper = plain_key(conn.execute(text(self.batch.upper(first)), values).scalar())
        if upper is not None and (isinstance(upper, bool) or not isinstance(upper, int | str)):
            conn.rollback()
            raise TargetError(
                f"the key {self.key} holds {type(upper).__name__} values; a purge walks "
                "integer or text keys"
            )
        return upper

    def next_batch(self) -> bool:
        """Delete (and archive) the next batch and commit it; False when none is left."""
        conn, attempt, state = self.ctx.connection, self.attempt, self.state
        self.passed = False
        if self.by_range and state["after"] < self.end and not self._at_first_old():
            self.passed = True
            return True
        size = attempt.size
        n = size if self.max_rows is None else max(1, min(size, self.max_rows - state["deleted"]))
        # The rows max_share still allows: an integer key's range is no wider (a unique
        # key holds no more rows than keys), another key's batch asks for no more. With
        # none allowed, a batch of one only looks whether an old row is left.
        room = self.limit.room(state["deleted"]) if self.limit is not None else None
        if room is not None:
            n = max(1, min(n, room))
        first = open_below(state["after"])
        values = {"after": state["after"], "cutoff": self.bound, "n": n}
        t0 = time.perf_counter()
        upper = self._upper(first, n, values)
        if upper is None:
            conn.commit()
            self.complete = True
            return False
        if room == 0:
            conn.commit()
            self._stop_at_limit()
        values["upper"] = upper
        try:
            count, archived = delete_batch(conn, self.batch, values, first, self.archive, most=room)
        except OverLimit:
            # Rows written into the range since it was sized: undone before they count;
            # the next batch is sized from what is there now.
            conn.rollback()
            return True
        archive_offset = self._commit(upper, count, archived, first, values)
        attempt.lost_in_a_row = 0
        elapsed = time.perf_counter() - t0
        attempt.durations.append(elapsed)
        state.update(
            after=upper,
            deleted=state["deleted"] + count,
            batches=state["batches"] + 1,
            archive_offset=archive_offset,
        )
        attempt.deleted_here += count
        visited = n if self.by_range else count
        if visited > 0 and elapsed > 0:
            ideal = visited * self.target / elapsed
            attempt.size = int(max(1, min(ideal, size * MAX_GROWTH, self.largest)))
        self._report()
        return True

    def _commit(
        self,
        upper: Any,
        count: int,
        archived: BatchBytes | None,
        first: bool = False,
        values: dict[str, Any] | None = None,
    ) -> int | None:
        where: dict[str, Any] = {"upper": upper, "rows": count}
        conn = self.ctx.connection
        if count and self.ctx.dialect == "postgresql":
            # After a crash the server says whether this transaction committed
            # (pg_xact_status), whatever its key range holds by then.
            where.update(transaction_of(conn))
        elif count and values is not None and self.batch.shares_archive_range(first, self.state):
            # The rows in the batch's key range of the archive table with its copy, seen
            # inside its transaction: what a resume finds if, and only if, it committed
            # (indoubt.KeyBatch).
            sql = text(self.batch.archived_in_range(first))
            where["archived"] = int(conn.execute(sql, values).scalar() or 0)
        return self._commit_pending(where, archived)

    def _commit_pending(self, where: dict[str, Any], archived: BatchBytes | None) -> int | None:
        """Checkpoint the batch as pending (`where`: where it ends, its rows), write its
        archive bytes, commit; returns the archive file's length with them."""
        state = self.state
        self._hold_to_reach()
        # Durable before the archive write and the commit: after a crash, a resume looks
        # whether this batch committed, and if not cuts off the archive bytes it finds to
        # be exactly this batch's.
        pending = {**where, "archive_offset": state["archive_offset"]}
        if archived is not None:
            pending.update(archived.pending())
        self.checkpoint(pending)
        archive_offset: int | None = state["archive_offset"]
        if archived is not None and self.archive is not None:
            # The copy is on disk before the delete can commit.
            archive_offset = write_batch(self.archive, archived)
        self.ctx.connection.commit()
        return archive_offset

    def _hold_to_reach(self) -> None:
        """After the batch's DELETE, before anything of it is durable: what the DELETE
        sets off is still what the step was judged with, or the batch is rolled back
        (its archive copy in a table with it; its bytes for a file not yet written) and
        the step stops, for its resume to judge it again. A session whose time zone
        moved (code the DELETE ran set it) has its batch rolled back, and the step fails."""
        conn, shown = self.ctx.connection, self.state.get("cutoff_zone")
        changed = None
        if self.reach is not None:
            # The session's zone is read in the reach's own statement: no round trip more.
            self.reach, changed = changed_since(conn, self.reach, zone=shown is not None)
        moved = zone_moved(conn, shown, self.reach.zone if self.reach else None)
        if moved is not None:
            conn.rollback()
            self.checkpoint()
            raise StepFailed(
                f"the session's time zone became {moved} during a batch of "
                f"{self.params['table']}; its cutoff {self.cut} was shown in "
                f"{shown}, and the batch was rolled back"
            )
        if changed is None:
            return
        self.ctx.connection.rollback()
        self.checkpoint()
        raise stopped_resumably(
            self.ctx,
            f"the code and foreign keys a batch of {self.params['table']} sets off beyond "
            f"its own rows changed while the purge ran ({changed}), and the batch that "
            "found it was rolled back",
            "it judges the step again first, asking for the approval they need now",
        )

    def _stop_at_limit(self) -> NoReturn:
        """Stop before the batch that would pass max_share: checkpointed, waiting for a
        person's yes to this step (its approvals so far are not that yes)."""
        assert self.limit is not None
        deleted = self.state["deleted"]
        self.limit.stop = {
            "reason": self.limit.reason(deleted),
            "rows_deleted": deleted,
            "approvals": len(self.ctx.step_approvals()),
        }
        self.stopped_by = f"max_share ({percent(self.limit.max_share)}) reached"
        self.checkpoint()
        raise stop_at_limit(self.ctx, self.limit, deleted, self.output())

    def _report(self) -> None:
        attempt = self.attempt
        running = time.monotonic() - attempt.started
        self.ctx.report(
            {
                "rows_deleted": self.state["deleted"],
                "expected_rows": self.expected,
                "rows_per_second": round(attempt.deleted_here / running) if running > 0 else None,
                "batch_size": attempt.size,
                "batches": self.state["batches"],
            }
        )

    def output(self) -> dict[str, Any]:
        attempt, state, durations = self.attempt, self.state, self.attempt.durations
        seconds = time.monotonic() - attempt.started
        output: dict[str, Any] = {
            "table": self.params["table"],
            "rows_deleted": state["deleted"],
            "rows_deleted_this_attempt": attempt.deleted_here,
            "batches": state["batches"],
            "cutoff": self.cut,
            **{k: state[k] for k in ("cutoff_zone", "cutoff_clock") if state.get(k)},
            "key": self.key,
            "last_key": state["after"],
            "complete": self.complete,
            "stopped_by": self.stopped_by,
            "resumed": attempt.resumed,
            "reconnects": attempt.reconnects,
            "seconds": round(seconds, 3),
            "rows_per_second": round(attempt.deleted_here / seconds) if seconds > 0 else None,
            "longest_batch_ms": round(max(durations) * 1000, 1) if durations else None,
            "median_batch_ms": round(statistics.median(durations) * 1000, 1) if durations else None,
            "final_batch_size": attempt.size,
            "throttled_seconds": round(attempt.throttled_seconds, 1),
            "large_purge": state["deleted"] >= self.params.get("statistics_after_rows", 10_000),
        }
        if self.archive is not None:
            output["archive_file"] = str(self.archive.path)
        if self.params.get("archive_table"):
            output["archive_table"] = self.params["archive_table"]
        return output
