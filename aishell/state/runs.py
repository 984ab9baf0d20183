"""Runs: what a run was started with, its status, and requests to stop it."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from aishell.errors import RunNotFound
from aishell.state.approvals import ApprovalRepository
from aishell.state.beats import with_beats
from aishell.state.core import Hot
from aishell.state.processes import current_user, process_started
from aishell.state.runlist import LISTED, LIVE, newest_runs, run_row
from aishell.state.schema import TABLE_DONE, approvals, events, run_controls, runs, steps
from aishell.state.seals import check_step
from aishell.state.values import dumps, loads, now

# Longer than any run id a store makes (values.new_run_id: 12 characters), with room.
LONGEST_RUN_ID = 64

# Read between every two steps: built once, like the statements in steps.py.
_STOP_REQUESTED = Hot(
    select(run_controls.c.requested_by).where(run_controls.c.run_id == bindparam("b_run"))
)


class RunRepository(ApprovalRepository):
    """Runs, with their steps, approvals and events as get_run shows them."""

    def create_run(
        self,
        *,
        run_id: str,
        agent: str,
        target: str,
        dialect: str,
        job: dict[str, Any],
        plan: dict[str, Any],
        plan_hash: str,
        tool_fingerprints: dict[str, str],
        dry_run: bool,
        safety_level: str,
        step_rows: Sequence[dict[str, Any]],
    ) -> None:
        at = now()
        trusted = {
            "agent": agent,
            "target": target,
            "dialect": dialect,
            "job": dumps(job),
            "plan": dumps(plan),
            "plan_hash": plan_hash,
            "tool_fingerprints": dumps(tool_fingerprints),
            "dry_run": dry_run,
            "safety_level": safety_level,
        }
        with self._tx() as conn:
            conn.execute(
                insert(runs).values(
                    run_id=run_id,
                    **trusted,
                    seal=self._sealed("run", run_id, trusted),
                    status="running",
                    created_at=at,
                    pid=os.getpid(),
                    hostname=socket.gethostname(),
                    pid_started=process_started(os.getpid()),
                    started_by=current_user(),
                )
            )
            if step_rows:
                _insert_steps(conn, run_id, step_rows, self._step_seal)
            self._event(conn, run_id, None, "run_started", {"dry_run": dry_run, "job": job})

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        with self._tx() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(status=status, finished_at=now(), error=error)
            )
            self._event(conn, run_id, None, "run_finished", {"status": status, "error": error})

    def get_run(self, run_id: str) -> dict[str, Any]:
        """A run with its steps, approvals and events; a unique id prefix is enough."""
        run = self.run_head(run_id)
        full_id = run["run_id"]
        run["steps"] = self.run_steps(full_id)
        run["approvals"] = self._approvals_of(full_id)
        run["events"] = self._events_of(full_id)
        return run

    def run_part(self, run_id: str, start: int, limit: int) -> dict[str, Any]:
        """A run as get_run reads it, but `limit` of its steps from the index `start` on,
        with the decisions and events of those steps and the run's own events. The whole
        run is checked first (check_runs, whose memory stays the same whatever its size):
        a step changed outside aishell anywhere in it refuses every part, as it refuses
        get_run. Besides: `sizes` (run_sizes), and `next_step`, the index the next part
        begins at (None: this part holds the last step)."""
        run = self.run_head(run_id)
        full_id = run["run_id"]
        self.check_runs([full_id])
        found = self.run_steps(full_id, start, limit + 1)
        shown = found[:limit]
        end = shown[-1]["index"] + 1 if shown else start
        run["steps"] = shown
        run["approvals"] = self._approvals_of(full_id, steps=(start, end))
        run["events"] = self._events_of(full_id, (start, end))
        run["sizes"] = self.run_sizes(full_id)
        run["next_step"] = found[-1]["index"] if len(found) > limit else None
        return run

    def _events_of(self, run_id: str, steps: tuple[int, int] | None = None) -> list[Any]:
        """The run's events, oldest first: every one, or the run's own and those of the
        steps from `steps`' first index up to its second."""
        # Each table's outcome in a shared step is in that step's output too.
        query = select(events).where((events.c.run_id == run_id) & (events.c.kind != TABLE_DONE))
        if steps is not None:
            query = query.where(
                events.c.step_idx.is_(None) | events.c.step_idx.between(steps[0], steps[1] - 1)
            )
        found = [
            {"at": r.at, "step_index": r.step_idx, "kind": r.kind, "data": loads(r.data)}
            for r in self._conn.execute(query.order_by(events.c.id))
        ]
        self._conn.rollback()
        return found

    def run_head(self, run_id: str) -> dict[str, Any]:
        """A run's own row, as the lists show it, checked against its signature; a unique
        id prefix is enough. What get_run reads first; a page reads its steps by part."""
        if not run_id.strip():
            raise RunNotFound("The run id is empty; give a run's id (`aishell runs list`)")
        if len(run_id) > LONGEST_RUN_ID or "\x00" in run_id:
            # No run has one: SQLite's LIKE refuses so long a pattern, and PostgreSQL any
            # text with a NUL in it (a web view's path may hold either).
            cut = "…" if len(run_id) > LONGEST_RUN_ID else ""
            raise RunNotFound(
                f"No run with id '{run_id[:LONGEST_RUN_ID]}{cut}' in {self.location}; "
                "`aishell runs list` shows them"
            )
        self.flush()
        # Two rows at most: the second says the prefix is ambiguous.
        rows = self._conn.execute(
            with_beats(select(runs))
            .where(runs.c.run_id.startswith(run_id, autoescape=True))
            .limit(2)
        ).all()
        self._conn.rollback()
        if not rows:
            raise RunNotFound(
                f"No run with id '{run_id}' in {self.location}; `aishell runs list` shows them"
            )
        if len(rows) > 1:
            raise RunNotFound(f"Run id '{run_id}' is ambiguous; give more characters")
        self._verify("run", rows[0].run_id, rows[0]._mapping, f"run {rows[0].run_id}")
        return self._run_dict(rows[0]._mapping)

    def run_steps(
        self, run_id: str, start: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """A run's steps (its full id) from index `start` on, in order, `limit` of them at
        most (None: every one), each checked against its signature."""
        query = select(steps).where((steps.c.run_id == run_id) & (steps.c.idx >= start))
        found = self._conn.execute(query.order_by(steps.c.idx).limit(limit)).all()
        self._conn.rollback()
        self._check_steps(run_id, found)
        return [_step_dict(r) for r in found]

    def run_decisions(self, run_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
        """`limit` of a run's decisions (its full id) past the first `offset`, oldest
        first, each checked against its signature."""
        return self._approvals_of(run_id, offset, limit)

    def run_sizes(self, run_id: str) -> dict[str, int]:
        """How many steps and decisions a run (its full id) has, counted by the store."""
        counted = {
            name: select(func.count()).select_from(table).where(table.c.run_id == run_id)
            for name, table in (("steps", steps), ("approvals", approvals))
        }
        found = {
            name: int(self._conn.execute(query).scalar_one()) for name, query in counted.items()
        }
        self._conn.rollback()
        return found

    def check_runs(self, run_ids: Sequence[str], page: int = 1000) -> None:
        """Refuse, as get_run does, a run, step or decision of these runs (full ids) the
        home's key did not sign as it is. Of a step only what its signatures cover is
        read (never its params or SQL), `page` rows at a time, so its memory stays the
        same whatever a run's size. A store without the key checks nothing."""
        if self._key is None:
            return
        signed = (steps.c.idx, steps.c.status, steps.c.status_seal, steps.c.output)
        for run_id in run_ids:
            self.run_head(run_id)
            start = 0
            while found := self._conn.execute(
                select(*signed, steps.c.output_seal)
                .where((steps.c.run_id == run_id) & (steps.c.idx >= start))
                .order_by(steps.c.idx)
                .limit(page)
            ).all():
                self._check_steps(run_id, found)
                start = found[-1].idx + 1
            self._conn.rollback()
            offset = 0
            while decided := self._approvals_of(run_id, offset, page):
                offset += len(decided)

    def get_plan(self, run_id: str) -> dict[str, Any]:
        """The plan a run was started with, exactly as stored."""
        row = self._conn.execute(select(runs).where(runs.c.run_id == run_id)).first()
        self._conn.rollback()
        if row is None:
            raise RunNotFound(f"No run with id '{run_id}' in {self.location}")
        self._verify("run", run_id, row._mapping, f"run {run_id}")
        plan: dict[str, Any] = json.loads(row.plan)
        return plan

    def reopen_run(self, run_id: str, reason: str) -> None:
        """Mark a run running again in this process (resume)."""
        with self._tx() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(
                    status="running",
                    finished_at=None,
                    error=None,
                    pid=os.getpid(),
                    hostname=socket.gethostname(),
                    pid_started=process_started(os.getpid()),
                )
            )
            conn.execute(delete(run_controls).where(run_controls.c.run_id == run_id))
            self._event(conn, run_id, None, "run_resumed", {"by": current_user(), "reason": reason})

    def step_outputs(self, run_id: str) -> list[Any]:
        """The outputs of a run's steps (its full id), in order, each checked against its
        signature as get_run checks it: what planning reads of an earlier run, without
        the params, SQL, approvals and events get_run reads besides."""
        self.flush()
        found = self._conn.execute(
            select(
                steps.c.idx,
                steps.c.status,
                steps.c.status_seal,
                steps.c.output,
                steps.c.output_seal,
            )
            .where(steps.c.run_id == run_id)
            .order_by(steps.c.idx)
        ).all()
        self._conn.rollback()
        self._check_steps(run_id, found)
        return [loads(r.output) for r in found]

    def _check_steps(self, run_id: str, rows: Sequence[Any]) -> None:
        """Refuse a step row whose status or output this home's key did not sign."""
        if self._key is not None:
            for r in rows:
                check_step(self._key, run_id, r.idx, r._mapping, f"run {run_id}'s step {r.idx}")

    def list_runs(
        self,
        status: str | None = None,
        limit: int = 50,
        targets: Sequence[str] | None = None,
        after: str | None = None,
    ) -> list[dict[str, Any]]:
        """The newest runs first; only those of `targets` when given (None: every run);
        `after`: only those listed after that run (its full id), the next page of a list
        that ended with it. runlist.read_runs reads the same of a SQLite store without
        SQLAlchemy. The store sorts and cuts: a store of 10,000 runs sends `limit` rows
        of the columns a list shows (never a plan), but where the status asked is one a
        stored "running" may show as, which only the rows' processes tell."""
        listed = select(*(runs.c[name] for name in LISTED))
        query = with_beats(listed).order_by(runs.c.created_at.desc(), runs.c.run_id)
        if targets is not None:
            query = query.where(runs.c.target.in_(list(targets)))
        if status in LIVE:
            query = query.where(runs.c.status.in_(list(LIVE)))
        else:
            query = query.limit(limit)
            if status:
                query = query.where(runs.c.status == status)
        if after is not None:
            query = query.where(self._listed_after(after))
        result = newest_runs((row._mapping for row in self._conn.execute(query)), status, limit)
        self._conn.rollback()
        return result

    def _listed_after(self, run_id: str) -> Any:
        """Where a run listed after `run_id` is (newest first, then by id), as a clause:
        a page of the list goes on from the last run of the one before, whatever runs
        began since."""
        created = None
        if "\x00" not in run_id:  # none has one; PostgreSQL refuses the text
            created = self._conn.execute(
                select(runs.c.created_at).where(runs.c.run_id == run_id)
            ).scalar()
        if created is None:
            raise RunNotFound(
                f"No run with id '{run_id[:LONGEST_RUN_ID]}' in {self.location}; "
                "`aishell runs list` shows them"
            )
        # The first term bounds the read of the index (ix_runs_newest) from that run on.
        return (runs.c.created_at <= created) & (
            (runs.c.created_at < created) | (runs.c.run_id > run_id)
        )

    _run_dict = staticmethod(run_row)

    # Stop requests (`aishell stop`): a row in run_controls that the loop reads between
    # steps.

    def request_stop(self, run_id: str, by: str) -> None:
        with self._tx() as conn:
            conn.execute(delete(run_controls).where(run_controls.c.run_id == run_id))
            conn.execute(
                insert(run_controls).values(run_id=run_id, stop_requested_at=now(), requested_by=by)
            )
            self._event(conn, run_id, None, "stop_requested", {"by": by})

    def stop_requested(self, run_id: str) -> str | None:
        """Who asked the run to stop, or None."""
        rows = self._send(_STOP_REQUESTED, {"b_run": run_id}).fetchall()
        self._conn.rollback()
        return rows[0][0] if rows else None


def _step_dict(r: Any) -> dict[str, Any]:
    return {
        "index": r.idx,
        "step_id": r.step_id,
        "tool": r.tool,
        "risk_level": r.risk_level,
        "params": loads(r.resolved_params) or loads(r.params),
        "planned_params": loads(r.params),
        "sql": loads(r.sql),
        "status": r.status,
        "attempts": r.attempts,
        "output": loads(r.output),
        "error": r.error,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
    }


def _insert_steps(
    conn: Connection,
    run_id: str,
    step_rows: Sequence[dict[str, Any]],
    sealed: Callable[[str, int, str, str | None], str | None],
) -> None:
    """A new run's steps, pending: one statement for every step (executemany), since a
    statement built per step cost more than the run's checkpoints. `sealed`: signs each
    one's status (None from a store without the key)."""
    conn.execute(
        insert(steps),
        [
            {
                "run_id": run_id,
                "idx": row["index"],
                "step_id": row["step_id"],
                "tool": row["tool"],
                "subject": row.get("subject"),
                "risk_level": row["risk_level"],
                "params": dumps(row["params"]),
                "status": "pending",
                "status_seal": sealed(run_id, row["index"], "status", "pending"),
                "attempts": 0,
            }
            for row in step_rows
        ],
    )
