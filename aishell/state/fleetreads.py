"""What the store says about every target at once: the newest run of each, the steps
waiting for a person's approval, and the backups each has. One query per aspect for
all targets (never one per target), so a view of a hundred databases costs as much
as a view of one. Nothing here writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, select

from aishell.state.backups import PROVEN
from aishell.state.core import StoreCore
from aishell.state.runs import RunRepository
from aishell.state.schema import backups, runs, steps

WAITING = "waiting_approval"


class FleetReadings(StoreCore):
    """Reads across targets, each one statement."""

    def last_runs(self, targets: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """The newest run of each target (of `targets`, or every one), as list_runs shows
        a run: a run stored running whose process is gone reads interrupted."""
        self.flush()
        newest = func.row_number().over(
            partition_by=runs.c.target, order_by=(runs.c.created_at.desc(), runs.c.run_id.desc())
        )
        ranked = select(runs, newest.label("newest"))
        if targets is not None:
            ranked = ranked.where(runs.c.target.in_(list(targets)))
        ranked_rows = ranked.subquery()
        rows = self._conn.execute(select(ranked_rows).where(ranked_rows.c.newest == 1)).all()
        self._conn.rollback()
        return {row.target: RunRepository._run_dict(row._mapping) for row in rows}

    def steps_waiting(self, targets: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every step waiting for a person's approval in a run that waits for it, oldest
        first, as the view and the metrics count them (`waiting_approvals` is the list
        `aishell approvals` shows, with each request's reasons); `since`: when its run
        stopped to wait (as the approval_waiting alert counts it)."""
        self.flush()
        since = func.coalesce(runs.c.finished_at, runs.c.created_at)
        query = (
            select(
                runs.c.run_id,
                runs.c.target,
                runs.c.agent,
                since.label("since"),
                steps.c.idx.label("index"),
                steps.c.step_id,
                steps.c.tool,
                steps.c.risk_level,
                steps.c.error.label("reason"),
            )
            .join(steps, steps.c.run_id == runs.c.run_id)
            .where((runs.c.status == WAITING) & (steps.c.status == WAITING))
            .order_by(since, runs.c.run_id, steps.c.idx)
        )
        if targets is not None:
            query = query.where(runs.c.target.in_(list(targets)))
        rows = self._conn.execute(query).all()
        self._conn.rollback()
        return [dict(row._mapping) for row in rows]

    def backup_summary(self) -> dict[str, dict[str, Any]]:
        """Per target: when its newest restore-proven backup was taken (None: it has
        none), when its newest backup of any kind still kept was, and how many are kept."""
        self.flush()
        kept = backups.c.deleted_at.is_(None)
        rows = self._conn.execute(
            select(
                backups.c.target,
                func.max(case((PROVEN, backups.c.created_at))).label("proven_at"),
                func.max(case((kept, backups.c.created_at))).label("newest_at"),
                func.sum(case((kept, 1), else_=0)).label("kept"),
            ).group_by(backups.c.target)
        ).all()
        self._conn.rollback()
        return {
            row.target: {
                "proven_at": row.proven_at,
                "newest_at": row.newest_at,
                "kept": int(row.kept or 0),
            }
            for row in rows
        }
