"""The share limit a purge holds on what it does, not on what it expects: the table's rows
are counted once, exactly, when the step first starts; every batch's rows are the rows
its DELETE reported; and no batch may take the count past max_share of those rows
without a person's yes to that very step.

Why an exact count, and not the estimate: statistics and samples describe the table as
it was when they were made, or as a few evenly placed ranges see it. A stats reset, a
missed ANALYZE, or keys clustered where the samples do not fall make an estimate say 30%
where the purge deletes 90%. A count(*) reads the table once (PostgreSQL: a sequential
or index-only scan; InnoDB: its smallest index), and nothing the data holds can make it
larger than the rows there are. It is kept in the checkpoint, so a resume measures the
share against the same figure, unless the table has shrunk since: another session may
delete rows while the purge waits, and then the same figure would let the purge take
nearly all of what is left. So a resume (or a retry) still held to the limit counts the
table again, and the share is of the smaller of the two: the count at the start, or the
rows now with those the purge has deleted added back. A table that grew keeps the first
figure.

The batch that would pass the limit is never sent: an integer key's range is never
wider than the rows still allowed (the key is unique, so the range holds no more rows
than keys), any other key's batch asks for no more old rows than are allowed, and a
batch whose DELETE still reports more (rows written into its range meanwhile) is rolled
back before it commits. When no row is allowed and an old row is left, the step stops,
checkpointed, waiting for `aishell approve RUN --step N`, and counts the rows older than
the cutoff that are left (up to the rows the table held: COUNT_LEFT), which its reason
says: that is what a yes after the stop is given for, unless it is asked about again
(a resume: fresh_stop counts them again, and the question says those). After that yes
the purge goes on from its checkpoint for those rows (with the slack any approval has:
rows that came in meanwhile are a new fact) and stops again, asking, where more old
rows are left: rows grown old while the run waited, or a count the server refused.

Any yes the step runs on (a flag, the prompt, `aishell approve`) was given for the rows
older than the cutoff its question showed, and where those were counted (SQLite, a key
that is not an integer, the rows left at a stop) the purge holds to them too, by the
rows it deletes: past them, with the same slack, it stops as it stops at max_share. A
yes kept across a resume holds as it was. Rows the statistics estimated are an "about"
whose error is no row grown old: there max_share holds alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from sqlalchemy.exc import DBAPIError

from aishell.errors import NamedApprovalNeeded, StatementRefused
from aishell.handlers.purge import cutoff as cutoffs
from aishell.sqltext import text
from aishell.tool.context import ToolContext
from aishell.units import percent

# The answers that are a person's yes to the step by its number: `aishell approve RUN
# --step N`, or "yes" at a prompt that showed why (a flag or "all" never reaches a step
# whose reasons only a person may waive).
NAMED = ("aishell approve", "prompt")
COUNT_AT_START = "SELECT count(*) FROM {table}"
# The rows older than the cutoff left at a stop, reading at most :n of them.
COUNT_LEFT = (
    "SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {date_column} < :cutoff LIMIT :n) "
    "aishell_left"
)
# Where a stopped purge's estimate keeps the rows left counted as it is asked about
# again (fresh_stop): what a yes to that question is given for.
LEFT_ASKED = "share_left_now"
# How many more rows than a yes after a stop was given for the purge may delete before
# it stops again: the slack any approval has (executor/resume.py), for rows written
# with old dates while it runs; more is a new fact a person has to see.
_LEFT_SLACK = (1.05, 10)


@dataclass(frozen=True)
class RowsLeft:
    """The rows older than the cutoff counted left at a stop: exactly `rows`, at least
    `rows` where the count stopped at its bound, or not counted (`unknown` says why)."""

    rows: int | None
    at_least: bool = False
    unknown: str = ""

    @property
    def shown(self) -> str:
        if self.rows is None:
            return f"the rows older than the cutoff left could not be counted ({self.unknown})"
        are = "row older than the cutoff is" if self.rows == 1 else "rows older than the cutoff are"
        return f"{'at least ' if self.at_least else ''}{self.rows:,} {are} left"

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "at_least": self.at_least, "unknown": self.unknown}

    @classmethod
    def kept(cls, found: Any) -> RowsLeft | None:
        """As a checkpoint keeps it (to_dict); None for none."""
        if not isinstance(found, Mapping):
            return None
        rows = found.get("rows")
        return cls(
            rows if isinstance(rows, int) else None,
            bool(found.get("at_least")),
            str(found.get("unknown") or ""),
        )


@dataclass
class ShareLimit:
    """max_share of the rows the table held when the purge started (or the larger share
    a person approved by name, as the prompt showed it), and whether a person let the
    purge go past it after it stopped there."""

    max_share: float
    rows_at_start: int
    table: str
    passed: bool = False
    # The stop waiting for (or given) a person's yes: its reason and how many approvals
    # the step had when it stopped (those after it are the ones that count).
    stop: dict[str, Any] | None = None
    # A yes by name to a step whose estimate was over max_share covers the share it was
    # shown (in whole percent, rounded up, as the prompt printed it), and no more.
    approved_percent: int = 0
    # The step's approvals already taken into account.
    approvals_seen: int = 0
    # The rows the table held when the purge first started, where a later count (with
    # the rows the purge had deleted) found fewer and rows_at_start is that count.
    rows_first_counted: int | None = None
    # The rows older than the cutoff counted left at the last stop.
    left: RowsLeft | None = None
    # Past a stop, a person's yes by name: the rows left it was given for (the count at
    # the stop), which the purge may delete past the stop's rows and no more. None with
    # `passed`: no such hold (a checkpoint written before yeses were held to what was
    # left).
    approved_left: int | None = None
    # The step's latest yes (by flag, prompt or `aishell approve`): the rows older than
    # the cutoff it was given for, the most rows the purge may have deleted in all under
    # it (those deleted before it, and those rows with the approvals' slack), and how
    # many approvals the step had with it. Rows that grow old or are written with old
    # dates while the purge runs are no rows a person approved.
    approved: dict[str, int] | None = None
    # Counts the rows older than the cutoff left now (share_limit makes it); not kept.
    count_left: Callable[[], RowsLeft] | None = field(default=None, repr=False, compare=False)

    @property
    def share(self) -> Fraction:
        return max(Fraction(repr(self.max_share)), Fraction(self.approved_percent, 100))

    @property
    def allowance(self) -> int:
        """The most rows the purge may delete: exact arithmetic, so 0.29 of 100 is 29."""
        return math.floor(self.share * self.rows_at_start)

    def room(self, deleted: int) -> int | None:
        """The rows the purge may still delete; None when it is not limited."""
        if self.passed:
            if self.approved_left is None:
                return None
            factor, plus = _LEFT_SLACK
            stopped_at = int((self.stop or {}).get("rows_deleted") or 0)
            covered = stopped_at + math.floor(self.approved_left * factor) + plus
            return max(0, covered - deleted)
        return max(0, min(self.allowance, self._approved_most()) - deleted)

    def _approved_most(self) -> int:
        most = (self.approved or {}).get("most")
        return most if isinstance(most, int) else self.allowance

    def hold_to_approval(self, approvals: list[dict[str, Any]], deleted: int) -> None:
        """Held to the rows its latest yes was given for, from the rows deleted when the
        purge first ran under it: a yes kept across a resume holds as it was."""
        yeses = [i for i, a in enumerate(approvals) if a.get("decision") == "approved"]
        if not yeses or (self.approved or {}).get("from", 0) > yeses[-1]:
            return
        given = approvals[yeses[-1]].get("given_for")
        counted = isinstance(given, Mapping) and given.get("counted") is True
        rows = _whole(given.get("rows")) if isinstance(given, Mapping) else None
        if rows is None or not counted:
            # Given for no count, or for the statistics' "about": an estimate's error is
            # no row grown old, and a nightly yes would stop at it; the share limit holds.
            return
        factor, plus = _LEFT_SLACK
        most = deleted + math.floor(rows * factor) + plus
        self.approved = {"rows": rows, "most": most, "from": yeses[-1] + 1}

    def progress(self) -> dict[str, Any]:
        """What the checkpoint keeps of the limit."""
        return {
            "rows_at_start": self.rows_at_start,
            "share_stop": self.stop,
            "share_passed": self.passed,
            "share_approved_percent": self.approved_percent,
            "share_approvals_seen": self.approvals_seen,
            "rows_first_counted": self.rows_first_counted,
            "share_left": self.left.to_dict() if self.left is not None else None,
            "share_approved_left": self.approved_left,
            "share_approved_rows": self.approved,
        }

    def reason(self, deleted: int) -> str:
        """Why the purge stops at `deleted` rows, with the rows older than the cutoff it
        counts left now; from here the limit holds again, and only a new yes by name to
        the step lets the purge go on (for what is left: share_limit)."""
        if self.passed and self.approved_left is not None:
            head = (
                f"the purge stopped after the {self.approved_left:,} rows older than the "
                "cutoff a person approved when it stopped at max_share "
                f"({percent(self.max_share)}): it deleted {deleted:,} rows in all, and its "
                "next batch would delete more"
            )
        else:
            head = self._share_reason(deleted)
        self.left = self.count_left() if self.count_left is not None else None
        self.passed, self.approved_left = False, None
        return head if self.left is None else f"{head}; {self.left.shown}"

    def left_figures(self, deleted: int) -> dict[str, Any]:
        """What a stop's output says of what is left: the rows older than the cutoff,
        and the table's rows by the purge's own count (those it held, less those it
        deleted), which the yes after the stop is judged against (executor/attempts.py)."""
        if self.left is None:
            return {}
        rows = self.left.rows
        figures: dict[str, Any] = {
            "old_rows_left": rows,
            "table_rows_now": max(self.rows_at_start - deleted, rows or 0),
        }
        if self.left.at_least:
            figures["old_rows_left_at_least"] = True
        if rows is None:
            figures["old_rows_left_unknown"] = self.left.unknown
        return figures

    def _share_reason(self, deleted: int) -> str:
        if self._approved_most() < self.allowance:
            shown = (self.approved or {}).get("rows", 0)
            return (
                f"the purge stopped at the rows its approval covers: it was approved for "
                f"{shown:,} rows older than the cutoff and deleted {deleted:,} in all; more "
                "rows are older than the cutoff than were approved (written or grown old "
                "since), and its next batch would delete more"
            )
        limit = f"max_share ({percent(self.max_share)})"
        if self.approved_percent > self.max_share * 100:
            ceiling = percent(self.max_share)
            limit = f"the {self.approved_percent}% a person approved (max_share {ceiling})"
        held = f"{self.rows_at_start:,} rows {self.table} held when it started"
        if self.rows_first_counted is not None:
            held = (
                f"{self.rows_at_start:,} rows {self.table} held when the purge resumed, its "
                f"own deleted rows added back ({self.rows_first_counted:,} when it started)"
            )
        return (
            f"the purge stopped at {limit}: it deleted {deleted:,} of the {held}, and its "
            "next batch would delete more"
        )


def share_limit(
    params: Mapping[str, Any],
    ctx: ToolContext,
    table_sql: str,
    progress: Mapping[str, Any],
    deleted: int,
) -> ShareLimit | None:
    """The step's limit, with the table's rows counted now: at the step's first start,
    and on a resume still held to it, where fewer rows than its checkpoint's with the
    `deleted` rows added back lower it (the module's docstring); None when the policy
    sets none (or allows every row)."""
    max_share = ctx.max_share
    if max_share is None or max_share >= 1:
        return None
    rows = progress.get("rows_at_start")
    first = progress.get("rows_first_counted")
    passed = bool(progress.get("share_passed"))
    if not isinstance(rows, int) or not passed:
        conn = ctx.connection
        now = int(conn.execute(text(COUNT_AT_START.format(table=table_sql))).scalar_one())
        conn.commit()
        if not isinstance(rows, int):
            rows = now
        elif now + deleted < rows:
            first = first if isinstance(first, int) else rows
            rows = now + deleted
    limit = ShareLimit(
        max_share,
        rows,
        str(params["table"]),
        passed=passed,
        stop=progress.get("share_stop"),
        approved_percent=int(progress.get("share_approved_percent") or 0),
        approvals_seen=int(progress.get("share_approvals_seen") or 0),
        rows_first_counted=first if isinstance(first, int) else None,
        left=RowsLeft.kept(progress.get("share_left")),
        approved_left=_whole(progress.get("share_approved_left")),
        approved=_kept_approval(progress.get("share_approved_rows")),
    )
    # Up to one row past the rows the table held: a bounded read, and past it a table
    # grown by rows with old dates says so ("at least").
    limit.count_left = lambda: _rows_left(params, ctx, table_sql, limit.rows_at_start + 1)
    _with_approvals(limit, ctx, deleted)
    return limit


def _with_approvals(limit: ShareLimit, ctx: ToolContext, deleted: int) -> None:
    """The limit as the step's approvals since its checkpoint move it: a yes by name
    past a stop or over max_share, and the rows its latest yes was given for."""
    approvals = ctx.step_approvals()

    def named_since(seen: int) -> Mapping[str, Any] | None:
        later = approvals[seen:]
        named = [a for a in later if a.get("decision") == "approved" and a.get("how") in NAMED]
        return named[-1] if named else None

    if limit.stop is not None and not limit.passed:
        # A yes by name after it stopped at the limit: it goes on for what was left,
        # as the yes was given for it, and stops again where more is left.
        yes = named_since(int(limit.stop.get("approvals", 0)))
        if yes is not None:
            limit.passed, limit.approved_left = True, _approved_left(limit.left, yes)
    elif named_since(limit.approvals_seen) is not None:
        limit.approved_percent = max(
            limit.approved_percent, _shown_percent(ctx.step_cache.get("estimate"))
        )
    limit.approvals_seen = len(approvals)
    limit.hold_to_approval(approvals, deleted)


def _kept_approval(found: Any) -> dict[str, int] | None:
    """ShareLimit.approved as a checkpoint keeps it."""
    if not isinstance(found, Mapping):
        return None
    kept = {k: _whole(found.get(k)) for k in ("rows", "most", "from")}
    return {k: v for k, v in kept.items() if v is not None} if kept["most"] is not None else None


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _approved_left(left: RowsLeft | None, yes: Mapping[str, Any]) -> int:
    """The rows left a yes after a stop covers: those its question counted, asked again
    after the stop (fresh_stop, in the estimate it was given for), else those counted at
    the stop, which its reason showed (an estimate the question showed beside them is no
    count, and may be off either way); where neither was counted, the rows the yes was
    given for (`given_for`), else none."""
    given = yes.get("given_for")
    effect = given.get("effect") if isinstance(given, Mapping) else None
    asked = RowsLeft.kept(effect.get(LEFT_ASKED) if isinstance(effect, Mapping) else None)
    if asked is not None and asked.rows is not None:
        return asked.rows
    if left is not None and left.rows is not None:
        return left.rows
    rows = _whole(given.get("rows")) if isinstance(given, Mapping) else None
    return rows if rows is not None else 0


def _rows_left(params: Mapping[str, Any], ctx: ToolContext, table_sql: str, most: int) -> RowsLeft:
    """The rows older than the checkpoint's cutoff left in the table, reading at most
    `most` of them, on the purge's own session (its time zone compares the cutoff as
    its batches did). A read the guard or the server refuses leaves them unknown: the
    yes after the stop then covers no more than its question showed."""
    conn = ctx.connection
    cut = (ctx.load_progress() or {}).get("cutoff")
    if cut is None:
        return RowsLeft(None, unknown="its checkpoint holds no cutoff")
    table, date = str(params["table"]), str(params["date_column"])
    sql = COUNT_LEFT.format(table=table_sql, date_column=ctx.quote(date))
    try:
        bound = cutoffs.describe(conn, table, date).bind(cut)
        counted = int(conn.execute(text(sql), {"cutoff": bound, "n": most}).scalar_one())
    except StatementRefused as exc:
        return RowsLeft(None, unknown=str(exc).strip().splitlines()[0])
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise  # the purge's own loss: it reconnects and stops here again
        said = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
        return RowsLeft(None, unknown=said[0] if said else "the server refused the count")
    finally:
        if not conn.invalidated:
            conn.rollback()
    return RowsLeft(counted, at_least=counted >= most)


def _shown_percent(estimate: Mapping[str, Any] | None) -> int:
    """The share of the table the step's estimate said it would delete, in whole percent
    rounded up (0 without one): what a person saw when they approved it by name."""
    going, total = (estimate or {}).get("rows_this_run"), (estimate or {}).get("table_rows")
    if not isinstance(going, int) or not isinstance(total, int) or total <= 0:
        return 0
    return min(100, math.ceil(Fraction(going * 100, total)))


def stop_at_limit(
    ctx: ToolContext, limit: ShareLimit, deleted: int, output: dict[str, Any]
) -> NamedApprovalNeeded:
    """The step's stop at the limit (the caller checkpoints `limit.stop`, with its
    reason, first), its output saying what is left."""
    why = str((limit.stop or {}).get("reason") or limit.reason(deleted))
    run = ctx.run_id or "RUN"
    return NamedApprovalNeeded(
        f"{why}; checkpointed: `aishell approve {run} --step N` (this step's number), then "
        f"`aishell resume {run}` goes on from there",
        [why],
        {**output, **limit.left_figures(deleted)},
    )


def stop_figures(params: Mapping[str, Any], ctx: ToolContext, table_sql: str) -> dict[str, Any]:
    """What a purge's estimate carries of a stop waiting for a person (none: {}): its
    reason (`share_stop`), which the policy makes a reason only a person may pass, and
    the rows left counted as it is asked about again (LEFT_ASKED), which a yes to that
    question covers."""
    stopped = fresh_stop(params, ctx, table_sql)
    if stopped is None:
        return {}
    figures: dict[str, Any] = {"share_stop": stopped.reason}
    if stopped.left is not None:
        figures[LEFT_ASKED] = stopped.left.to_dict()
    return figures


def fresh_stop(params: Mapping[str, Any], ctx: ToolContext, table_sql: str) -> FreshStop | None:
    """A stop waiting for a person's yes as it is asked about again (a resume, a preview):
    its reason with the rows older than the cutoff left counted now, not those counted
    when it stopped (rows grow old while a run waits, other sessions delete some), read
    as the stop read them (at most one row past the rows the table held at the start).
    Where they cannot be counted now, the stop's own figure stays, and says so."""
    progress = ctx.load_progress() or {}
    stopped = pending_stop(progress)
    if stopped is None:
        return None
    kept = RowsLeft.kept(progress.get("share_left"))
    said = f"; {kept.shown}" if kept is not None else ""
    if not said or not stopped.endswith(said):
        return FreshStop(stopped, None)  # a stop whose reason names no count of its own
    start = progress.get("rows_at_start")
    most = (start if isinstance(start, int) else 0) + 1
    now = _rows_left(params, ctx, table_sql, most)
    head = stopped[: -len(said)]
    if now.rows is None:
        return FreshStop(f"{head}{said} when it stopped (not counted again: {now.unknown})", None)
    return FreshStop(f"{head}; {now.shown}", now)


@dataclass(frozen=True)
class FreshStop:
    """A pending stop's reason as asked about again, and the rows left counted for it
    (None: not counted again)."""

    reason: str
    left: RowsLeft | None


def pending_stop(progress: Mapping[str, Any] | None) -> str | None:
    """The reason a purge stopped at its limit and waits for a person, if it does: what
    its estimate carries to the policy, and so to the prompt, before it runs again."""
    if not progress or progress.get("share_passed"):
        return None
    stop = progress.get("share_stop")
    return str(stop["reason"]) if isinstance(stop, dict) and stop.get("reason") else None
