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
checkpointed, waiting for `aishell approve RUN --step N`; after that approval the purge
goes on from its checkpoint and does not stop for the same limit again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from aishell.errors import NamedApprovalNeeded
from aishell.sqltext import text
from aishell.tool.context import ToolContext
from aishell.units import percent

# The answers that are a person's yes to the step by its number: `aishell approve RUN
# --step N`, or "yes" at a prompt that showed why (a flag or "all" never reaches a step
# whose reasons only a person may waive).
NAMED = ("aishell approve", "prompt")
COUNT_AT_START = "SELECT count(*) FROM {table}"


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
            return None
        return max(0, self.allowance - deleted)

    def progress(self) -> dict[str, Any]:
        """What the checkpoint keeps of the limit."""
        return {
            "rows_at_start": self.rows_at_start,
            "share_stop": self.stop,
            "share_passed": self.passed,
            "share_approved_percent": self.approved_percent,
            "share_approvals_seen": self.approvals_seen,
            "rows_first_counted": self.rows_first_counted,
        }

    def reason(self, deleted: int) -> str:
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
    )
    approvals = ctx.step_approvals()

    def named_since(seen: int) -> bool:
        later = approvals[seen:]
        return any(a.get("decision") == "approved" and a.get("how") in NAMED for a in later)

    if limit.stop is not None and not limit.passed:
        # A yes by name after it stopped at the limit: it goes on, and stops no more.
        limit.passed = named_since(int(limit.stop.get("approvals", 0)))
    elif named_since(limit.approvals_seen):
        limit.approved_percent = max(
            limit.approved_percent, _shown_percent(ctx.step_cache.get("estimate"))
        )
    limit.approvals_seen = len(approvals)
    return limit


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
    """The step's stop at the limit (the caller checkpoints `limit.stop` first)."""
    why = limit.reason(deleted)
    run = ctx.run_id or "RUN"
    return NamedApprovalNeeded(
        f"{why}; checkpointed: `aishell approve {run} --step N` (this step's number), then "
        f"`aishell resume {run}` goes on from there",
        [why],
        output,
    )


def pending_stop(progress: Mapping[str, Any] | None) -> str | None:
    """The reason a purge stopped at its limit and waits for a person, if it does: what
    its estimate carries to the policy, and so to the prompt, before it runs again."""
    if not progress or progress.get("share_passed"):
        return None
    stop = progress.get("share_stop")
    return str(stop["reason"]) if isinstance(stop, dict) and stop.get("reason") else None
