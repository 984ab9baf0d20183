"""What the store says about every target at once: the newest run of each, the refusal of
its fleet task's last delivery, the steps waiting for a person's approval, and the
backups each has. One query per aspect for all targets (never one per target), so a
view of a hundred databases costs as much as a view of one. Nothing here writes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Select, func, select

from aishell.state.backups import in_place, sealed
from aishell.state.beats import with_beats
from aishell.state.core import StoreCore
from aishell.state.fleet import last_change, reasons_kept, standing_refusal
from aishell.state.runlist import LISTED
from aishell.state.runs import RunRepository
from aishell.state.schema import backups, fleet_runs, runs, steps
from aishell.state.values import loads

# Rows a read of steps' outputs holds at once (step_figures): its memory stays the same
# whatever a run's size.
_OUTPUTS_AT_ONCE = 1000
# Run ids one statement binds (step_figures).
_IDS_AT_ONCE = 500

WAITING = "waiting_approval"
# When a waiting step's run stopped to wait, and which steps wait: a step waiting in a
# run that waits (steps_waiting, waiting_counts).
_SINCE = func.coalesce(runs.c.finished_at, runs.c.created_at)
_BOTH_WAIT = (runs.c.status == WAITING) & (steps.c.status == WAITING)


def _waiting() -> Select[Any]:
    """Every step waiting in a run that waits, oldest first (steps_waiting)."""
    return (
        select(
            runs.c.run_id,
            runs.c.target,
            runs.c.agent,
            _SINCE.label("since"),
            steps.c.idx.label("index"),
            steps.c.step_id,
            steps.c.tool,
            steps.c.risk_level,
            steps.c.error.label("reason"),
        )
        .join(steps, steps.c.run_id == runs.c.run_id)
        .where(_BOTH_WAIT)
        .order_by(_SINCE, runs.c.run_id, steps.c.idx)
    )


class FleetReadings(StoreCore):
    """Reads across targets, each one statement."""

    def delivery_refusals(self, found: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """By run id, of the runs given (as last_runs gives them): the refusal of its
        fleet task's last delivery that still stands, as `fleet show` gives it
        (standing_refusal). Only an interrupted run can have one, so only those are read:
        their fleet jobs in one statement, those jobs' refusals in another."""
        interrupted = {r["run_id"] for r in found if r["status"] == "interrupted"}
        if not interrupted:
            return {}
        self.flush()
        linked = self._conn.execute(
            select(
                fleet_runs.c.fleet_id, fleet_runs.c.target, fleet_runs.c.run_id, last_change()
            ).where(fleet_runs.c.run_id.in_(sorted(interrupted)))
        ).all()
        if not linked:
            self._conn.rollback()
            return {}
        oldest = min(row[3] or 0 for row in linked)
        # A reason kept before every run's last change stands for none of them.
        reasons = reasons_kept(self._conn, (row[0] for row in linked), oldest, self._key)
        self._conn.rollback()
        shown: dict[str, dict[str, Any]] = {}
        for fleet_id, target, run_id, last in linked:
            run = {"status": "interrupted", "changed": last}
            refused = standing_refusal(run, reasons.get(fleet_id, {}).get(target))
            if refused is not None:
                shown[run_id] = refused
        return shown

    def last_runs(self, targets: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """The newest run of each target (of `targets`, or every one), as list_runs shows
        a run: a run stored running whose process is gone (or, on another host, whose
        beat has lapsed) reads interrupted."""
        where = None if targets is None else runs.c.target.in_(list(targets))
        return {run["target"]: run for run in self._newest((runs.c.target,), where)}

    def last_real_runs(self) -> dict[tuple[str, str], dict[str, Any]]:
        """By (target, agent): the newest run that was no dry run (a preview changed
        nothing), as last_runs shows it, however many runs are newer."""
        found = self._newest((runs.c.target, runs.c.agent), runs.c.dry_run.is_(False))
        return {(run["target"], run["agent"]): run for run in found}

    def _newest(self, each: tuple[Any, ...], where: Any) -> list[dict[str, Any]]:
        """The newest run of each group of runs alike in `each`, of those `where` takes.
        The ranking reads the ids alone: ranking whole rows (each with its plan) cost a
        store of 10,000 runs half a second."""
        self.flush()
        newest = func.row_number().over(
            partition_by=each, order_by=(runs.c.created_at.desc(), runs.c.run_id.desc())
        )
        ranked = select(runs.c.run_id, newest.label("newest"))
        if where is not None:
            ranked = ranked.where(where)
        ranked_rows = ranked.subquery()
        listed = select(*(runs.c[name] for name in LISTED))
        newest_rows = with_beats(listed).join_from(
            runs, ranked_rows, ranked_rows.c.run_id == runs.c.run_id
        )
        rows = self._conn.execute(newest_rows.where(ranked_rows.c.newest == 1)).all()
        self._conn.rollback()
        return [RunRepository._run_dict(row._mapping) for row in rows]

    def steps_waiting(self, targets: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every step waiting for a person's approval in a run that waits for it, oldest
        first, as the view and the metrics count them (`waiting_approvals` is the list
        `aishell approvals` shows, with each request's reasons); `since`: when its run
        stopped to wait (as the approval_waiting alert counts it)."""
        self.flush()
        query = _waiting()
        if targets is not None:
            query = query.where(runs.c.target.in_(list(targets)))
        rows = self._conn.execute(query).all()
        self._conn.rollback()
        return [dict(row._mapping) for row in rows]

    def waiting_page(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """`limit` of the steps steps_waiting lists, past the first `offset`, and how many
        it lists in all: the store counts them in the same statement (one pass over the
        waiting runs' steps), and sends the page's rows alone."""
        self.flush()
        total = func.count().over().label("total")
        query = _waiting().add_columns(total).offset(offset or None).limit(limit)
        rows = self._conn.execute(query).all()
        if rows:
            counted = int(rows[0].total)
        else:  # past the end (or none waits): the count alone
            counted = sum(each["waiting"] for each in self.waiting_counts().values())
        self._conn.rollback()
        return [{k: v for k, v in row._mapping.items() if k != "total"} for row in rows], counted

    def waiting_counts(self, targets: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Per target (of `targets`, or every one) with a step steps_waiting lists: how
        many (`waiting`) and since when the oldest waits (`oldest_since`), counted by the
        store, not by reading each step."""
        self.flush()
        query = (
            select(runs.c.target, func.count(), func.min(_SINCE))
            .join(steps, steps.c.run_id == runs.c.run_id)
            .where(_BOTH_WAIT)
            .group_by(runs.c.target)
        )
        if targets is not None:
            query = query.where(runs.c.target.in_(list(targets)))
        rows = self._conn.execute(query).all()
        self._conn.rollback()
        return {target: {"waiting": n, "oldest_since": oldest} for target, n, oldest in rows}

    def step_figures(
        self, run_ids: Sequence[str], rows_purged: Mapping[str, str]
    ) -> dict[str, tuple[dict[str, int], int | None]]:
        """By run (full ids): its steps by status, counted by the store, and the rows its
        purges deleted (None: it has no step of a tool in `rows_purged`, which maps each
        tool that deletes rows to its output's field counting them). Only those steps'
        outputs are read, a page at a time: the metrics of a run of 100,000 steps cost
        what one of ten does. Nothing is checked against its signature (check_runs does)."""
        found: dict[str, tuple[dict[str, int], int | None]] = {r: ({}, None) for r in run_ids}
        if not run_ids:
            return found
        self.flush()
        rows: dict[str, int] = {}
        # The ids bound a page at a time: a store may hold more target and agent pairs
        # than SQLite binds values in one statement (32,766).
        ids = list(run_ids)
        for at in range(0, len(ids), _IDS_AT_ONCE):
            page = ids[at : at + _IDS_AT_ONCE]
            self._count_steps(page, found)
            self._count_purged(page, rows_purged, rows)
        self._conn.rollback()
        return {r: (counts, rows.get(r)) for r, (counts, _) in found.items()}

    def _count_steps(
        self, run_ids: list[str], found: dict[str, tuple[dict[str, int], int | None]]
    ) -> None:
        counted = self._conn.execute(
            select(steps.c.run_id, steps.c.status, func.count(), func.min(steps.c.idx))
            .where(steps.c.run_id.in_(run_ids))
            .group_by(steps.c.run_id, steps.c.status)
        ).all()
        # In the order of each status's first step: the order the text lists them in.
        for run_id, status, n, _ in sorted(counted, key=lambda row: (row[0], row[3])):
            found[run_id][0][status] = int(n)

    def _count_purged(
        self, run_ids: list[str], rows_purged: Mapping[str, str], rows: dict[str, int]
    ) -> None:
        outputs = (
            select(steps.c.run_id, steps.c.tool, steps.c.output)
            .where(steps.c.run_id.in_(run_ids) & steps.c.tool.in_(list(rows_purged)))
            .execution_options(yield_per=_OUTPUTS_AT_ONCE)
        )
        for run_id, tool, output in self._conn.execute(outputs):
            shown = loads(output)
            deleted = shown.get(rows_purged[tool]) if isinstance(shown, dict) else None
            rows[run_id] = rows.get(run_id, 0) + int(deleted or 0)

    def backup_targets(
        self, configured: Sequence[str], offset: int, limit: int
    ) -> tuple[list[str], int]:
        """The target names from the `offset`-th on, at most `limit`, of `configured` and
        those the catalog keeps a backup row under (not deleted), by name; and how many
        there are, counted by the store. Only names are read, never a row's fields."""
        self.flush()
        named = backups.c.deleted_at.is_(None) & backups.c.target.not_in(list(configured))
        others = self._conn.execute(
            select(backups.c.target)
            .where(named)
            .group_by(backups.c.target)
            .order_by(backups.c.target)
            .limit(offset + limit)
        ).scalars()
        shown = sorted({*configured, *others})[offset : offset + limit]
        total = self._conn.execute(
            select(func.count(func.distinct(backups.c.target))).where(named)
        ).scalar_one()
        self._conn.rollback()
        return shown, len(set(configured)) + int(total)

    def backup_counts(self, names: Sequence[str]) -> dict[str, int]:
        """Per target of `names`: how many backup rows the catalog keeps (not deleted),
        signed or not, in place or not, counted by the store."""
        self.flush()
        counted = self._conn.execute(
            select(backups.c.target, func.count())
            .where(backups.c.deleted_at.is_(None) & backups.c.target.in_(list(names)))
            .group_by(backups.c.target)
        ).all()
        self._conn.rollback()
        return {target: int(n) for target, n in counted}

    def newest_kept(self, names: Sequence[str], looked: int) -> dict[str, str]:
        """Per target of `names`: when its newest backup of any kind still kept was taken,
        of whatever database, among its `looked` newest rows not deleted: only one in
        place (in_place, as retention judges it) and whose row the home's key signed as
        it is (sealed). One statement for every target; its rows are read newest first
        and no further than each target's answer."""
        self.flush()
        rank = (
            func.row_number()
            .over(
                partition_by=backups.c.target,
                order_by=(backups.c.created_at.desc(), backups.c.id.desc()),
            )
            .label("rank")
        )
        ranked = (
            select(backups.c.id, rank)
            .where(backups.c.deleted_at.is_(None) & backups.c.target.in_(list(names)))
            .subquery()
        )
        # Every column: a row is counted only as the home's key signed it (sealed).
        query = (
            select(backups, runs.c.hostname)
            .join(ranked, ranked.c.id == backups.c.id)
            .outerjoin(runs, runs.c.run_id == backups.c.run_id)
            .where(ranked.c.rank <= looked)
            .order_by(ranked.c.rank, backups.c.target)
        )
        found: dict[str, str] = {}
        with self._conn.execute(query) as rows:
            # A target answered: its older rows are not checked against their signature.
            for row in sealed(self._key, (r for r in rows if r.target not in found)):
                manifest = loads(row.manifest)
                said = manifest.get("hostname") if isinstance(manifest, dict) else None
                if in_place(row.path, row.size_bytes, said or row.hostname):
                    found[row.target] = row.created_at
                    if len(found) == len(names):
                        break
        self._conn.rollback()
        return found
