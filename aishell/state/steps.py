"""Steps of a run, the audit of every statement a step sends, and where a long step
has got to."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update

from aishell.state.core import EVENT, Hot, StoreCore
from aishell.state.schema import events, runs, statements, step_progress, steps
from aishell.state.values import dumps, loads, new_id, now

# How long the end of a replayable step may wait for the next commit: what another
# process sees of a run lags at most this much, and a crash loses at most this much of
# steps that a resume then runs again.
RIDE_SECONDS = 1.0

# Statements on the hot path of every step, built once (see core.Hot).
_STEP_STARTED = Hot(
    update(steps)
    .where((steps.c.run_id == bindparam("b_run")) & (steps.c.idx == bindparam("b_idx")))
    .values(
        status="running",
        status_seal=bindparam("status_seal"),
        resolved_params=bindparam("resolved_params"),
        sql=bindparam("sql"),
        attempts=bindparam("attempts"),
        started_at=bindparam("started_at"),
        error=None,
        risk_level=func.coalesce(bindparam("risk_level"), steps.c.risk_level),
    )
)
_STEP_FINISHED = Hot(
    update(steps)
    .where((steps.c.run_id == bindparam("b_run")) & (steps.c.idx == bindparam("b_idx")))
    .values(
        status=bindparam("status"),
        status_seal=bindparam("status_seal"),
        output=bindparam("output"),
        output_seal=bindparam("output_seal"),
        error=bindparam("error"),
        finished_at=bindparam("finished_at"),
        sql=func.coalesce(bindparam("sql"), steps.c.sql),
        resolved_params=func.coalesce(bindparam("resolved_params"), steps.c.resolved_params),
    )
)
# A purge saves its progress before every batch commits.
_PROGRESS_SAVED = Hot(
    update(step_progress)
    .where(
        (step_progress.c.run_id == bindparam("b_run"))
        & (step_progress.c.step_idx == bindparam("b_idx"))
    )
    .values(progress=bindparam("progress"), updated_at=bindparam("updated_at"))
)
_PROGRESS_FIRST = Hot(insert(step_progress), ("run_id", "step_idx", "progress", "updated_at"))
_STATEMENT_STARTED = Hot(
    insert(statements), ("run_id", "step_idx", "attempt", "sql", "parameters", "started_at")
)
_STATEMENT_READ = Hot(
    insert(statements),
    (
        "run_id",
        "step_idx",
        "attempt",
        "sql",
        "parameters",
        "started_at",
        "finished_at",
        "rows",
        "error",
    ),
)
_STATEMENT_FINISHED = Hot(
    update(statements)
    .where(statements.c.id == bindparam("b_id"))
    .values(finished_at=bindparam("finished_at"), rows=bindparam("rows"), error=bindparam("error"))
)


@dataclass
class Read:
    """A statement a step sent whose audit row need not be durable before it runs (a read,
    a repeatable write): recorded when it completes, with the step's next commit."""

    run_id: str
    index: int
    attempt: int
    sql: str
    parameters: Any
    started_at: str = field(default_factory=now)


class StepRepository(StoreCore):
    """A step's start and end, its statements, and its progress."""

    def set_step_status(
        self, run_id: str, index: int, status: str, error: str | None = None
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                update(steps)
                .where((steps.c.run_id == run_id) & (steps.c.idx == index))
                .values(
                    status=status,
                    status_seal=self._step_seal(run_id, index, "status", status),
                    error=error,
                )
            )
            self._event(conn, run_id, index, f"step_{status}", {"error": error} if error else {})

    def step_durations(self, tool: str, subject: str | None, limit: int = 5) -> list[float]:
        """Seconds the latest successful real runs of a tool on a subject took."""
        query = (
            select(steps.c.started_at, steps.c.finished_at)
            .join(runs, runs.c.run_id == steps.c.run_id)
            .where(
                (steps.c.tool == tool)
                & (steps.c.subject == subject)
                & (steps.c.status == "succeeded")
                & (runs.c.dry_run.is_(False))
            )
            .order_by(steps.c.finished_at.desc())
            .limit(limit)
        )
        rows = self._conn.execute(query).all()
        self._conn.rollback()
        return [
            (
                datetime.fromisoformat(r.finished_at) - datetime.fromisoformat(r.started_at)
            ).total_seconds()
            for r in rows
            if r.started_at and r.finished_at
        ]

    def step_started(
        self,
        run_id: str,
        index: int,
        resolved_params: Any,
        sql: list[str],
        attempt: int,
        *,
        durable: bool = True,
        risk_level: str | None = None,
    ) -> None:
        """Mark a step running. Not durable: it commits with the step's first statement's
        audit row, before that statement runs, or with the step's end. `risk_level`: the
        step's risk as judged now (raised from its tool's where the server runs user
        code for it), as runs show it."""
        at = now()
        writes: list[tuple[Hot, dict[str, Any]]] = [
            (
                _STEP_STARTED,
                {
                    "b_run": run_id,
                    "b_idx": index,
                    "status_seal": self._step_seal(run_id, index, "status", "running"),
                    "resolved_params": dumps(resolved_params),
                    "sql": dumps(sql),
                    "attempts": attempt,
                    "started_at": at,
                    "risk_level": risk_level,
                },
            ),
            (
                EVENT,
                {
                    "run_id": run_id,
                    "step_idx": index,
                    "at": at,
                    "kind": "step_started",
                    "data": dumps({"attempt": attempt}),
                },
            ),
        ]
        self._queued.extend(writes)
        if durable:
            self.flush()
        else:
            self._unsaved_start = (run_id, index)

    def step_finished(
        self,
        run_id: str,
        index: int,
        status: str,
        *,
        output: Any = None,
        error: str | None = None,
        sql: list[str] | None = None,
        resolved_params: Any = None,
        replayable: bool = False,
        output_text: str | None = None,
    ) -> None:
        """Record a step's end; its output and status commit together. `output_text`:
        the output as dumps() already wrote it, stored as it is.

        `replayable`: running the step again does what it did (it only read, or made
        quick repeatable writes). While nothing of the step is committed yet, its end
        then rides with the next commit, as its start did, within RIDE_SECONDS: lost
        in a crash, the store shows the step not begun, and a resume runs it."""
        at = now()
        stored = output_text
        if stored is None and output is not None:
            stored = dumps(output)
        writes: list[tuple[Hot, dict[str, Any]]] = [
            (
                _STEP_FINISHED,
                {
                    "b_run": run_id,
                    "b_idx": index,
                    "status": status,
                    "status_seal": self._step_seal(run_id, index, "status", status),
                    "output": stored,
                    "output_seal": self._step_seal(run_id, index, "output", stored),
                    "error": error,
                    "finished_at": at,
                    "sql": None if sql is None else dumps(sql),
                    "resolved_params": None if resolved_params is None else dumps(resolved_params),
                },
            ),
            (
                EVENT,
                {
                    "run_id": run_id,
                    "step_idx": index,
                    "at": at,
                    "kind": f"step_{status}",
                    "data": dumps({"error": error} if error else {}),
                },
            ),
        ]
        self._queued.extend(writes)
        rides = (
            replayable
            and self._unsaved_start == (run_id, index)
            and time.monotonic() - self._committed_at < RIDE_SECONDS
        )
        if not rides:
            self.flush()

    # The audit of every statement an operation sends.

    def statement_started(
        self, run_id: str, index: int, attempt: int, sql: str, parameters: Any = None
    ) -> int:
        """Written, and durable, before the statement is sent."""
        with self._hot_tx():
            result = self._send(
                _STATEMENT_STARTED,
                {
                    "run_id": run_id,
                    "step_idx": index,
                    "attempt": attempt,
                    "sql": sql,
                    "parameters": dumps(parameters) if parameters else None,
                    "started_at": now(),
                },
            )
            return new_id(result)

    def statement_finished(self, statement_id: int, rows: int | None, error: str | None) -> None:
        """Completed with the next commit: a crash before it leaves the step in doubt anyway."""
        self._queued.append(
            (
                _STATEMENT_FINISHED,
                {"b_id": statement_id, "finished_at": now(), "rows": rows, "error": error},
            )
        )

    def statement_read(self, read: Read, rows: int | None, error: str | None) -> None:
        """A read's audit row, sent and completed: committed with the next commit."""
        self._queued.append(
            (
                _STATEMENT_READ,
                {
                    "run_id": read.run_id,
                    "step_idx": read.index,
                    "attempt": read.attempt,
                    "sql": read.sql,
                    "parameters": dumps(read.parameters) if read.parameters else None,
                    "started_at": read.started_at,
                    "finished_at": now(),
                    "rows": rows,
                    "error": error,
                },
            )
        )

    def list_statements(
        self, run_id: str, steps: tuple[int, int] | None = None
    ) -> list[dict[str, Any]]:
        """The statements a run sent, in order: every one, or those of the steps from
        `steps`' first index up to its second."""
        self.flush()
        query = select(statements).where(statements.c.run_id == run_id)
        if steps is not None:
            query = query.where(statements.c.step_idx.between(steps[0], steps[1] - 1))
        rows = self._conn.execute(query.order_by(statements.c.id)).all()
        self._conn.rollback()
        return [
            {
                "step_index": r.step_idx,
                "attempt": r.attempt,
                "sql": r.sql,
                "parameters": loads(r.parameters),
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "rows": r.rows,
                "error": r.error,
            }
            for r in rows
        ]

    # Where a long step has got to (a purge's last key and rows deleted).

    def save_progress(
        self, run_id: str, index: int, progress: dict[str, Any], *, durable: bool = True
    ) -> None:
        """Durable when it returns: a purge writes it before its batch commits. Not
        `durable` (core._hot_tx): kept across a crash of this process, durable with the
        store's next durable commit; for progress whose loss only repeats idempotent
        work (the tables a step of VACUUMs did)."""
        values = {"progress": dumps(progress), "updated_at": now()}
        with self._hot_tx(durable):
            if self._send(_PROGRESS_SAVED, {"b_run": run_id, "b_idx": index, **values}).rowcount:
                return
            self._send(_PROGRESS_FIRST, {"run_id": run_id, "step_idx": index, **values})

    def get_progress(self, run_id: str, index: int) -> dict[str, Any] | None:
        self.flush()
        row = self._conn.execute(
            select(step_progress.c.progress).where(
                (step_progress.c.run_id == run_id) & (step_progress.c.step_idx == index)
            )
        ).first()
        self._conn.rollback()
        return loads(row[0]) if row else None

    def step_events(self, run_id: str, index: int, kind: str) -> list[Any]:
        """The data of a step's events of one kind, oldest first (what a step over many
        tables recorded of each table it did)."""
        self.flush()
        rows = self._conn.execute(
            select(events.c.data)
            .where((events.c.run_id == run_id) & (events.c.step_idx == index))
            .where(events.c.kind == kind)
            .order_by(events.c.id)
        ).all()
        self._conn.rollback()
        return [loads(r.data) for r in rows]

    def runs_progressing_with(
        self, key: str, value: str, finished: Collection[str], besides: str
    ) -> list[tuple[str, str]]:
        """The runs, but `besides`, not in a `finished` status, one of whose long steps
        holds `key`: `value` in its progress (a purge's archive file): (run_id, status)."""
        self.flush()
        rows = self._conn.execute(
            select(step_progress.c.run_id, step_progress.c.progress, runs.c.status)
            .join(runs, runs.c.run_id == step_progress.c.run_id)
            .where(
                runs.c.status.not_in(list(finished)),
                step_progress.c.run_id != besides,
                step_progress.c.progress.contains(f'"{key}"'),
            )
        ).all()
        self._conn.rollback()
        return [(r.run_id, r.status) for r in rows if loads(r.progress).get(key) == value]
