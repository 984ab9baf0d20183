"""The state store: runs, steps, events, approvals and target locks, in state.db.

SQLAlchemy Core over SQLite in WAL mode with synchronous=FULL by default (any
SQLAlchemy URL works, so a team can share one on PostgreSQL). One connection per
process does all the writing: SQLite before 3.51.3 can corrupt a WAL file when two
connections of one process write or checkpoint at once.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Executable,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, ExceptionContext, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.pool import StaticPool

from aishell.config import display_url
from aishell.errors import RunNotFound, StateError, TargetLocked, UsageError

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("agent", String(64), nullable=False),
    Column("target", String(128), nullable=False),
    Column("dialect", String(32), nullable=False),
    Column("job", Text, nullable=False),
    Column("plan", Text, nullable=False),
    Column("plan_hash", String(64), nullable=False),
    Column("tool_fingerprints", Text, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("safety_level", String(16), nullable=False),
    Column("status", String(32), nullable=False, index=True),
    Column("created_at", String(32), nullable=False),
    Column("finished_at", String(32)),
    Column("error", Text),
    Column("pid", Integer),
    Column("hostname", String(255)),
    Column("started_by", String(128)),
)

steps = Table(
    "steps",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("step_id", String(64), nullable=False),
    Column("tool", String(128), nullable=False, index=True),
    Column("subject", String(255)),
    Column("risk_level", String(16), nullable=False),
    Column("params", Text, nullable=False),
    Column("resolved_params", Text),
    Column("sql", Text),
    Column("status", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("output", Text),
    Column("error", Text),
    Column("started_at", String(32)),
    Column("finished_at", String(32)),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("step_idx", Integer),
    Column("at", String(32), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("data", Text, nullable=False),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("step_idx", Integer, nullable=False),
    Column("decision", String(16), nullable=False),
    Column("decided_by", String(128), nullable=False),
    Column("how", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", String(32), nullable=False),
)

backups = Table(
    "backups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target", String(128), nullable=False, index=True),
    Column("run_id", String(32)),
    Column("kind", String(16), nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64)),
    Column("size_bytes", Integer),
    Column("manifest", Text),
    Column("created_at", String(32), nullable=False),
    Column("verified_at", String(32)),
    Column("verification", Text),
    Column("deleted_at", String(32)),
)

target_locks = Table(
    "target_locks",
    metadata,
    Column("target", String(128), primary_key=True),
    Column("run_id", String(32), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("acquired_at", String(32), nullable=False),
)


statements = Table(
    "statements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("step_idx", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("sql", Text, nullable=False),
    Column("parameters", Text),
    Column("started_at", String(32), nullable=False),
    Column("finished_at", String(32)),
    Column("rows", Integer),
    Column("error", Text),
)

run_controls = Table(
    "run_controls",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("stop_requested_at", String(32), nullable=False),
    Column("requested_by", String(128), nullable=False),
)

target_health = Table(
    "target_health",
    metadata,
    Column("target", String(128), primary_key=True),
    Column("consecutive_failures", Integer, nullable=False),
    Column("last_error", Text),
    Column("open_until", String(32)),
)

# Where a long step has got to (a purge's last key and rows deleted), so that a
# resumed step continues from there instead of starting over.
step_progress = Table(
    "step_progress",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("step_idx", Integer, primary_key=True),
    Column("progress", Text, nullable=False),
    Column("updated_at", String(32), nullable=False),
)

# Jobs that run on a schedule (`aishell schedule add`); their timing lives in
# APScheduler's own table in the same store, written only by `aishell schedule serve`.
schedules = Table(
    "schedules",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("cron", String(128), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("words", Text, nullable=False),
    Column("agent", String(64), nullable=False),
    Column("job", Text, nullable=False),
    Column("target", String(128)),
    Column("options", Text, nullable=False),
    Column("paused", Boolean, nullable=False, default=False),
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(128), nullable=False),
)

# Which run each scheduled trigger started.
schedule_runs = Table(
    "schedule_runs",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("schedule", String(128), nullable=False, index=True),
    Column("how", String(16), nullable=False),
    Column("at", String(32), nullable=False),
)

# Plans a model drafted and the validator accepted, by (request, the target's catalog
# fingerprint, model): the same nightly request does not ask the model every night.
plan_cache = Table(
    "plan_cache",
    metadata,
    Column("cache_key", String(64), primary_key=True),
    Column("target", String(128), nullable=False),
    Column("agent", String(64)),
    Column("model", String(256), nullable=False),
    Column("request", Text, nullable=False),
    Column("catalog_fingerprint", String(64), nullable=False),
    Column("answer", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("used_at", String(32), nullable=False),
    Column("uses", Integer, nullable=False, default=0),
)

# Scratch files, scratch databases and child processes, each recorded before it is
# made, with the process that makes it (pid, host, and the pid's start time, since pids
# are reused): what a process that died left behind is found here and removed by the
# next run or `aishell doctor --clean` (aishell/scratch.py).
scratch = Table(
    "scratch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32)),
    Column("target", String(128)),
    Column("kind", String(16), nullable=False),
    Column("name", Text, nullable=False),
    Column("details", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("pid_started", String(32)),
    Column("created_at", String(32), nullable=False),
)

# Each migration takes the schema from the version before it to its own; they only
# add, so an older aishell's data stays readable. The newest key is the version.
MIGRATIONS: dict[int, tuple[Table, ...]] = {
    1: (runs, steps, events, approvals, backups, target_locks),
    2: (statements, run_controls, target_health),
    3: (step_progress,),
    4: (schedules, schedule_runs),
    5: (plan_cache,),
    6: (scratch,),
}
SCHEMA_VERSION = max(MIGRATIONS)

_OPEN_ATTEMPTS = 50

# Statements on the hot path of every step, built once: SQLAlchemy then reuses
# their compiled form instead of rebuilding them per call.
_STEP_STARTED = (
    update(steps)
    .where((steps.c.run_id == bindparam("b_run")) & (steps.c.idx == bindparam("b_idx")))
    .values(
        status="running",
        resolved_params=bindparam("resolved_params"),
        sql=bindparam("sql"),
        attempts=bindparam("attempts"),
        started_at=bindparam("started_at"),
        error=None,
    )
)
_STEP_FINISHED = (
    update(steps)
    .where((steps.c.run_id == bindparam("b_run")) & (steps.c.idx == bindparam("b_idx")))
    .values(
        status=bindparam("status"),
        output=bindparam("output"),
        error=bindparam("error"),
        finished_at=bindparam("finished_at"),
        sql=func.coalesce(bindparam("sql"), steps.c.sql),
        resolved_params=func.coalesce(bindparam("resolved_params"), steps.c.resolved_params),
    )
)
_STOP_REQUESTED = select(run_controls.c.requested_by).where(
    run_controls.c.run_id == bindparam("b_run")
)
_EVENT = insert(events)
_STATEMENT_STARTED = insert(statements)
_STATEMENT_FINISHED = (
    update(statements)
    .where(statements.c.id == bindparam("b_id"))
    .values(finished_at=bindparam("finished_at"), rows=bindparam("rows"), error=bindparam("error"))
)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


class StateStore:
    """All reads and writes of run state; every write is one committed transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        # What errors and messages show: the URL may hold a password.
        self.location = display_url(url)
        self._busy_timeout = _busy_timeout(url)
        # While set (a time.monotonic() deadline), _open retries what opening
        # processes race on, instead of _fault reporting it.
        self._opening_until: float | None = None
        try:
            self.engine = _make_engine(url, self._busy_timeout)
        except ArgumentError:
            raise StateError(
                "The state store's URL (state.url) is not a valid database URL; fix it in the "
                "config"
            ) from None
        except (NoSuchModuleError, ImportError) as exc:
            raise StateError(
                f"The state store {self.location} needs a database driver that is not "
                f"installed ({exc}); install it, or set state.url"
            ) from None
        # Every failure of the store (locked, damaged, read-only, full, unreachable) is
        # one StateError saying where the store is and what to do, whichever statement
        # met it.
        event.listen(self.engine, "handle_error", self._fault)
        # Writes that need not be durable on their own: they commit with the next
        # transaction, which always comes before anything that depends on them.
        self._queued: list[tuple[Executable, dict[str, Any]]] = []
        try:
            self._conn: Connection = self._open()
        except BaseException:
            self.engine.dispose()
            raise

    def close(self) -> None:
        self.flush()
        self._conn.close()
        self.engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._conn.begin():
            for statement, params in self._queued:
                self._conn.execute(statement, params)
            yield self._conn
        self._queued.clear()

    def flush(self) -> None:
        """Commit queued writes now."""
        if self._queued:
            with self._tx():
                pass

    def _open(self) -> Connection:
        # Processes opening a new store at once all find tables missing; the slower
        # ones' CREATEs fail, or SQLite answers "locked" at once (switching to WAL, or
        # two read transactions both trying to write). A second look finds what the
        # first one created. A lock held past the busy timeout is no race: _fault
        # reports it.
        self._opening_until = time.monotonic() + self._busy_timeout
        try:
            for attempt in range(_OPEN_ATTEMPTS):
                conn = None
                try:
                    conn = self._conn = self.engine.connect()
                    self._migrate()
                    return conn
                except (SQLAlchemyError, StateError) as exc:
                    self._queued.clear()
                    if conn is not None:
                        with suppress(SQLAlchemyError, StateError):
                            conn.close()
                    if not (isinstance(exc, DBAPIError) and _raced(exc)):
                        raise
                    if attempt == _OPEN_ATTEMPTS - 1:
                        raise self._error(exc) from None
                    time.sleep(random.uniform(0.01, 0.1))
            raise AssertionError("unreachable")
        finally:
            self._opening_until = None

    def _fault(self, context: ExceptionContext) -> None:
        """The engine's error hook: a failure of the store itself becomes a StateError."""
        exc = context.sqlalchemy_exception
        if context.is_pre_ping or not isinstance(exc, DBAPIError) or not _is_fault(exc):
            # The pool reconnects after a failed ping; a defect, or an IntegrityError
            # that acquire_lock reads, stays what it is.
            return
        opening = self._opening_until
        if opening is not None and _raced(exc):
            waited_out = "locked" in str(exc.orig).lower() and time.monotonic() >= opening
            if not waited_out:
                return  # _open looks again
        raise self._error(exc)

    def _error(self, exc: DBAPIError) -> StateError:
        return state_error(self.location, self.url, exc, self._busy_timeout)

    def _migrate(self, up_to: int = SCHEMA_VERSION) -> None:
        with self._tx() as conn:
            metadata.create_all(conn, tables=[meta])
            row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"The state store {self.location} has schema version {version}, newer than "
                    f"this aishell knows ({SCHEMA_VERSION}); upgrade aishell"
                )
            for number in range(version + 1, up_to + 1):
                metadata.create_all(conn, tables=list(MIGRATIONS[number]))
                self._event(conn, "-", None, "schema_upgraded", {"to": number})
            if up_to > version:
                if row:
                    conn.execute(
                        update(meta).where(meta.c.key == "schema_version").values(value=str(up_to))
                    )
                else:
                    conn.execute(insert(meta).values(key="schema_version", value=str(up_to)))

    @property
    def schema_version(self) -> int:
        row = self._conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
        self._conn.rollback()
        return int(row[0]) if row else 0

    # --- runs ---------------------------------------------------------------------

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
        with self._tx() as conn:
            conn.execute(
                insert(runs).values(
                    run_id=run_id,
                    agent=agent,
                    target=target,
                    dialect=dialect,
                    job=dumps(job),
                    plan=dumps(plan),
                    plan_hash=plan_hash,
                    tool_fingerprints=dumps(tool_fingerprints),
                    dry_run=dry_run,
                    safety_level=safety_level,
                    status="running",
                    created_at=at,
                    pid=os.getpid(),
                    hostname=socket.gethostname(),
                    started_by=_user(),
                )
            )
            for row in step_rows:
                conn.execute(
                    insert(steps).values(
                        run_id=run_id,
                        idx=row["index"],
                        step_id=row["step_id"],
                        tool=row["tool"],
                        subject=row.get("subject"),
                        risk_level=row["risk_level"],
                        params=dumps(row["params"]),
                        status="pending",
                        attempts=0,
                    )
                )
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
        self.flush()
        rows = self._conn.execute(
            select(runs).where(runs.c.run_id.startswith(run_id, autoescape=True))
        ).all()
        self._conn.rollback()
        if not rows:
            raise RunNotFound(f"No run with id '{run_id}' in {self.location}")
        if len(rows) > 1:
            raise RunNotFound(f"Run id '{run_id}' is ambiguous; give more characters")
        run = self._run_dict(rows[0]._mapping)
        full_id = run["run_id"]
        run["steps"] = [
            {
                "index": r.idx,
                "step_id": r.step_id,
                "tool": r.tool,
                "risk_level": r.risk_level,
                "params": _loads(r.resolved_params) or _loads(r.params),
                "planned_params": _loads(r.params),
                "sql": _loads(r.sql),
                "status": r.status,
                "attempts": r.attempts,
                "output": _loads(r.output),
                "error": r.error,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
            }
            for r in self._conn.execute(
                select(steps).where(steps.c.run_id == full_id).order_by(steps.c.idx)
            )
        ]
        run["approvals"] = [
            {k: v for k, v in r._mapping.items() if k not in ("id", "run_id")}
            for r in self._conn.execute(
                select(approvals).where(approvals.c.run_id == full_id).order_by(approvals.c.id)
            )
        ]
        run["events"] = [
            {"at": r.at, "step_index": r.step_idx, "kind": r.kind, "data": _loads(r.data)}
            for r in self._conn.execute(
                select(events).where(events.c.run_id == full_id).order_by(events.c.id)
            )
        ]
        self._conn.rollback()
        return run

    def get_plan(self, run_id: str) -> dict[str, Any]:
        """The plan a run was started with, exactly as stored."""
        row = self._conn.execute(select(runs.c.plan).where(runs.c.run_id == run_id)).first()
        self._conn.rollback()
        if row is None:
            raise RunNotFound(f"No run with id '{run_id}' in {self.location}")
        return json.loads(row[0])

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
                )
            )
            conn.execute(delete(run_controls).where(run_controls.c.run_id == run_id))
            self._event(conn, run_id, None, "run_resumed", {"by": _user(), "reason": reason})

    def set_step_status(
        self, run_id: str, index: int, status: str, error: str | None = None
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                update(steps)
                .where((steps.c.run_id == run_id) & (steps.c.idx == index))
                .values(status=status, error=error)
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

    def record_backup(
        self,
        *,
        target: str,
        kind: str,
        path: str,
        run_id: str | None = None,
        created_at: str | None = None,
        verified_at: str | None = None,
        verification: Any = None,
        sha256: str | None = None,
        size_bytes: int | None = None,
        manifest: Any = None,
    ) -> int:
        with self._tx() as conn:
            result = conn.execute(
                insert(backups).values(
                    target=target,
                    run_id=run_id,
                    kind=kind,
                    path=path,
                    sha256=sha256,
                    size_bytes=size_bytes,
                    manifest=None if manifest is None else dumps(manifest),
                    created_at=created_at or now(),
                    verified_at=verified_at,
                    verification=None if verification is None else dumps(verification),
                )
            )
            return int(result.inserted_primary_key[0])

    def backup_verified(self, path: str, verification: Any, ok: bool) -> None:
        """Store a validation's result with the backup; only a passing one marks it verified."""
        with self._tx() as conn:
            conn.execute(
                update(backups)
                .where(backups.c.path == path)
                .values(
                    verification=dumps(verification),
                    verified_at=now() if ok else None,
                )
            )

    def backup_deleted(self, path: str) -> None:
        with self._tx() as conn:
            conn.execute(update(backups).where(backups.c.path == path).values(deleted_at=now()))

    def list_backups(self, target: str | None = None) -> list[dict[str, Any]]:
        query = (
            select(backups)
            .where(backups.c.deleted_at.is_(None))
            .order_by(backups.c.created_at.desc())
        )
        if target:
            query = query.where(backups.c.target == target)
        rows = [
            {
                **{k: v for k, v in r._mapping.items() if k not in ("manifest", "verification")},
                "manifest": _loads(r.manifest),
                "verification": _loads(r.verification),
            }
            for r in self._conn.execute(query)
        ]
        self._conn.rollback()
        return rows

    def last_verified_backup(self, target: str) -> datetime | None:
        """When the newest verified backup of a target was taken."""
        row = self._conn.execute(
            select(backups.c.created_at)
            .where((backups.c.target == target) & backups.c.verified_at.is_not(None))
            .order_by(backups.c.created_at.desc())
            .limit(1)
        ).first()
        self._conn.rollback()
        return datetime.fromisoformat(row[0]) if row else None

    def list_runs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = select(runs).order_by(runs.c.created_at.desc())
        if status in ("running", "interrupted"):
            query = query.where(runs.c.status.in_(["running", "interrupted"]))
        elif status:
            query = query.where(runs.c.status == status)
        result = []
        for row in self._conn.execute(query):
            run = self._run_dict(row._mapping)
            if status is None or run["status"] == status:
                result.append(run)
            if len(result) >= limit:
                break
        self._conn.rollback()
        return result

    @staticmethod
    def _run_dict(row: Any) -> dict[str, Any]:
        status = row["status"]
        # A run whose process is gone is not running, whatever the row says.
        if status == "running" and not _process_alive(row["pid"], row["hostname"]):
            status = "interrupted"
        return {
            "run_id": row["run_id"],
            "agent": row["agent"],
            "target": row["target"],
            "dialect": row["dialect"],
            "job": _loads(row["job"]),
            "plan_hash": row["plan_hash"],
            "tool_fingerprints": _loads(row["tool_fingerprints"]),
            "dry_run": bool(row["dry_run"]),
            "safety_level": row["safety_level"],
            "status": status,
            "created_at": row["created_at"],
            "finished_at": row["finished_at"],
            "error": row["error"],
            "started_by": row["started_by"],
            "pid": row["pid"],
            "hostname": row["hostname"],
        }

    # --- steps --------------------------------------------------------------------

    def step_started(
        self,
        run_id: str,
        index: int,
        resolved_params: Any,
        sql: list[str],
        attempt: int,
        *,
        durable: bool = True,
    ) -> None:
        """Mark a step running. Not durable: it commits with the step's first statement's
        audit row, before that statement runs, or with the step's end."""
        at = now()
        writes: list[tuple[Executable, dict[str, Any]]] = [
            (
                _STEP_STARTED,
                {
                    "b_run": run_id,
                    "b_idx": index,
                    "resolved_params": dumps(resolved_params),
                    "sql": dumps(sql),
                    "attempts": attempt,
                    "started_at": at,
                },
            ),
            (
                _EVENT,
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
    ) -> None:
        """Record a step's end; its output and status commit together."""
        at = now()
        with self._tx() as conn:
            conn.execute(
                _STEP_FINISHED,
                {
                    "b_run": run_id,
                    "b_idx": index,
                    "status": status,
                    "output": None if output is None else dumps(output),
                    "error": error,
                    "finished_at": at,
                    "sql": None if sql is None else dumps(sql),
                    "resolved_params": None if resolved_params is None else dumps(resolved_params),
                },
            )
            conn.execute(
                _EVENT,
                {
                    "run_id": run_id,
                    "step_idx": index,
                    "at": at,
                    "kind": f"step_{status}",
                    "data": dumps({"error": error} if error else {}),
                },
            )

    def record_approval(
        self, run_id: str, index: int, decision: str, decided_by: str, how: str, reason: str
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                insert(approvals).values(
                    run_id=run_id,
                    step_idx=index,
                    decision=decision,
                    decided_by=decided_by,
                    how=how,
                    reason=reason,
                    at=now(),
                )
            )
            self._event(
                conn,
                run_id,
                index,
                "approval",
                {"decision": decision, "by": decided_by, "how": how},
            )

    def record_event(self, run_id: str, index: int | None, kind: str, data: dict[str, Any]) -> None:
        with self._tx() as conn:
            self._event(conn, run_id, index, kind, data)

    @staticmethod
    def _event(conn: Connection, run_id: str, index: int | None, kind: str, data: Any) -> None:
        conn.execute(
            _EVENT,
            {"run_id": run_id, "step_idx": index, "at": now(), "kind": kind, "data": dumps(data)},
        )

    # --- progress of long steps ----------------------------------------------------

    def save_progress(self, run_id: str, index: int, progress: dict[str, Any]) -> None:
        """Durable when it returns: a purge writes it before its batch commits."""
        key = (step_progress.c.run_id == run_id) & (step_progress.c.step_idx == index)
        values = {"progress": dumps(progress), "updated_at": now()}
        with self._tx() as conn:
            if conn.execute(update(step_progress).where(key).values(**values)).rowcount == 0:
                conn.execute(insert(step_progress).values(run_id=run_id, step_idx=index, **values))

    def get_progress(self, run_id: str, index: int) -> dict[str, Any] | None:
        self.flush()
        row = self._conn.execute(
            select(step_progress.c.progress).where(
                (step_progress.c.run_id == run_id) & (step_progress.c.step_idx == index)
            )
        ).first()
        self._conn.rollback()
        return _loads(row[0]) if row else None

    # --- drafted plans ---------------------------------------------------------------

    def cached_plan(self, cache_key: str) -> dict[str, Any] | None:
        """A model's accepted answer for this key, counted as used; None when absent."""
        with self._tx() as conn:
            row = conn.execute(
                select(plan_cache.c.answer).where(plan_cache.c.cache_key == cache_key)
            ).first()
            if row is None:
                return None
            conn.execute(
                update(plan_cache)
                .where(plan_cache.c.cache_key == cache_key)
                .values(used_at=now(), uses=plan_cache.c.uses + 1)
            )
        return _loads(row[0])

    def cache_plan(self, cache_key: str, answer: dict[str, Any], **about: Any) -> None:
        """Keep an accepted answer; `about` holds target, agent, model, request and
        catalog_fingerprint."""
        stamp = now()
        with self._tx() as conn:
            conn.execute(delete(plan_cache).where(plan_cache.c.cache_key == cache_key))
            conn.execute(
                insert(plan_cache).values(
                    cache_key=cache_key,
                    answer=dumps(answer),
                    created_at=stamp,
                    used_at=stamp,
                    uses=0,
                    **about,
                )
            )

    def forget_plans(self, target: str | None = None) -> int:
        """Drop cached drafts (of one target, or all); how many were dropped."""
        query = delete(plan_cache)
        if target is not None:
            query = query.where(plan_cache.c.target == target)
        with self._tx() as conn:
            return conn.execute(query).rowcount or 0

    # --- schedules ---------------------------------------------------------------------

    def add_schedule(self, **values: Any) -> None:
        row = {
            **values,
            "words": dumps(values["words"]),
            "job": dumps(values["job"]),
            "options": dumps(values["options"]),
            "paused": False,
            "created_at": now(),
            "created_by": _user(),
        }
        try:
            with self._tx() as conn:
                conn.execute(insert(schedules).values(**row))
        except IntegrityError:
            raise UsageError(
                f"A schedule named '{values['name']}' exists; remove it first"
            ) from None

    def list_schedules(self) -> list[dict[str, Any]]:
        self.flush()
        rows = self._conn.execute(select(schedules).order_by(schedules.c.name)).all()
        self._conn.rollback()
        return [self._schedule_dict(r) for r in rows]

    def get_schedule(self, name: str) -> dict[str, Any]:
        row = self._conn.execute(select(schedules).where(schedules.c.name == name)).first()
        self._conn.rollback()
        if row is None:
            raise UsageError(f"No schedule named '{name}'; see `aishell schedule list`")
        return self._schedule_dict(row)

    @staticmethod
    def _schedule_dict(row: Any) -> dict[str, Any]:
        found = dict(row._mapping)
        for key in ("words", "job", "options"):
            found[key] = _loads(found[key])
        found["paused"] = bool(found["paused"])
        return found

    def remove_schedule(self, name: str) -> None:
        self.get_schedule(name)
        with self._tx() as conn:
            conn.execute(delete(schedules).where(schedules.c.name == name))

    def set_schedule_paused(self, name: str, paused: bool) -> None:
        self.get_schedule(name)
        with self._tx() as conn:
            conn.execute(update(schedules).where(schedules.c.name == name).values(paused=paused))

    def record_schedule_run(self, run_id: str, schedule: str, how: str) -> None:
        with self._tx() as conn:
            conn.execute(
                insert(schedule_runs).values(run_id=run_id, schedule=schedule, how=how, at=now())
            )

    def schedule_runs(self, schedule: str, limit: int = 20) -> list[dict[str, Any]]:
        """The schedule's runs, newest first, each with its current status."""
        self.flush()
        rows = self._conn.execute(
            select(
                schedule_runs.c.run_id,
                schedule_runs.c.how,
                runs.c.status,
                runs.c.created_at.label("started_at"),
                runs.c.finished_at,
            )
            .join(runs, runs.c.run_id == schedule_runs.c.run_id)
            .where(schedule_runs.c.schedule == schedule)
            .order_by(schedule_runs.c.at.desc())
            .limit(limit)
        ).all()
        self._conn.rollback()
        return [dict(r._mapping) for r in rows]

    def schedule_alert(self, schedule: str, kind: str, data: dict[str, Any]) -> None:
        """A schedule's missed trigger or stuck run, kept for `aishell schedule list`."""
        self.record_event("-", None, f"schedule_{kind}", {"schedule": schedule, **data})

    def schedule_alerts(self) -> dict[str, list[dict[str, Any]]]:
        """Alerts per schedule, newest first."""
        self.flush()
        rows = self._conn.execute(
            select(events.c.at, events.c.kind, events.c.data)
            .where(
                (events.c.run_id == "-") & events.c.kind.in_(["schedule_missed", "schedule_stuck"])
            )
            .order_by(events.c.id.desc())
            .limit(1000)
        ).all()
        self._conn.rollback()
        found: dict[str, list[dict[str, Any]]] = {}
        for at, kind, data in rows:
            details = _loads(data)
            found.setdefault(details.pop("schedule"), []).append(
                {"at": at, "kind": kind.removeprefix("schedule_"), **details}
            )
        return found

    # --- statements (the audit of every statement an operation sends) ------------------

    def statement_started(
        self, run_id: str, index: int, attempt: int, sql: str, parameters: Any = None
    ) -> int:
        """Written, and durable, before the statement is sent."""
        with self._tx() as conn:
            result = conn.execute(
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
            return int(result.inserted_primary_key[0])

    def statement_finished(self, statement_id: int, rows: int | None, error: str | None) -> None:
        """Completed with the next commit: a crash before it leaves the step in doubt anyway."""
        self._queued.append(
            (
                _STATEMENT_FINISHED,
                {"b_id": statement_id, "finished_at": now(), "rows": rows, "error": error},
            )
        )

    def list_statements(self, run_id: str) -> list[dict[str, Any]]:
        self.flush()
        rows = self._conn.execute(
            select(statements).where(statements.c.run_id == run_id).order_by(statements.c.id)
        ).all()
        self._conn.rollback()
        return [
            {
                "step_index": r.step_idx,
                "attempt": r.attempt,
                "sql": r.sql,
                "parameters": _loads(r.parameters),
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "rows": r.rows,
                "error": r.error,
            }
            for r in rows
        ]

    # --- stop requests --------------------------------------------------------------

    def request_stop(self, run_id: str, by: str) -> None:
        with self._tx() as conn:
            conn.execute(delete(run_controls).where(run_controls.c.run_id == run_id))
            conn.execute(
                insert(run_controls).values(run_id=run_id, stop_requested_at=now(), requested_by=by)
            )
            self._event(conn, run_id, None, "stop_requested", {"by": by})

    def stop_requested(self, run_id: str) -> str | None:
        """Who asked the run to stop, or None."""
        row = self._conn.execute(_STOP_REQUESTED, {"b_run": run_id}).first()
        self._conn.rollback()
        return row[0] if row else None

    # --- target health (the circuit breaker) ------------------------------------------

    def connection_failed(
        self, target: str, error: str, threshold: int, cool_down_seconds: float
    ) -> int:
        """Count a failed connection; past the threshold the breaker opens. Returns the count."""
        with self._tx() as conn:
            row = conn.execute(
                select(target_health).where(target_health.c.target == target)
            ).first()
            count = (row.consecutive_failures if row else 0) + 1
            open_until = None
            if count >= threshold:
                open_until = (datetime.now(UTC) + timedelta(seconds=cool_down_seconds)).isoformat(
                    timespec="seconds"
                )
            values = {"consecutive_failures": count, "last_error": error, "open_until": open_until}
            if row:
                conn.execute(
                    update(target_health).where(target_health.c.target == target).values(**values)
                )
            else:
                conn.execute(insert(target_health).values(target=target, **values))
            return count

    def connection_succeeded(self, target: str) -> None:
        with self._tx() as conn:
            conn.execute(delete(target_health).where(target_health.c.target == target))

    def breaker_open_until(self, target: str) -> tuple[datetime, int, str] | None:
        """(until, failures, last error) while the target's breaker is open."""
        row = self._conn.execute(
            select(target_health).where(target_health.c.target == target)
        ).first()
        self._conn.rollback()
        if row is None or row.open_until is None:
            return None
        until = datetime.fromisoformat(row.open_until)
        if until <= datetime.now(UTC):
            return None
        return until, row.consecutive_failures, row.last_error or ""

    # --- scratch ------------------------------------------------------------------

    def record_scratch(
        self,
        kind: str,
        name: str,
        *,
        run_id: str | None = None,
        target: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Record a scratch file, database or child process before it is made; durable
        before this returns, so a crash right after still finds it."""
        pid = os.getpid()
        with self._tx() as conn:
            result = conn.execute(
                insert(scratch).values(
                    run_id=run_id,
                    target=target,
                    kind=kind,
                    name=name,
                    details=dumps(details or {}),
                    pid=pid,
                    hostname=socket.gethostname(),
                    pid_started=process_started(pid),
                    created_at=now(),
                )
            )
            return int(result.inserted_primary_key[0])

    def update_scratch(self, entry: int, details: dict[str, Any]) -> None:
        """Add what became known after the thing was made (a child's pid)."""
        row = self._conn.execute(select(scratch.c.details).where(scratch.c.id == entry)).first()
        self._conn.rollback()
        if row is None:
            return
        with self._tx() as conn:
            conn.execute(
                update(scratch)
                .where(scratch.c.id == entry)
                .values(details=dumps({**json.loads(row[0]), **details}))
            )

    def forget_scratch(self, entry: int) -> None:
        """The thing is gone (removed, renamed into place, or never made)."""
        with self._tx() as conn:
            conn.execute(delete(scratch).where(scratch.c.id == entry))

    def scratch_of_dead_runs(self) -> list[dict[str, Any]]:
        """What processes of this host that are gone left behind, oldest first; another
        host's entries are never listed, since its processes cannot be seen from here."""
        rows = self._conn.execute(select(scratch).order_by(scratch.c.id)).all()
        self._conn.rollback()
        return [
            {**dict(r._mapping), "details": json.loads(r.details)}
            for r in rows
            if not recorder_alive(r.pid, r.hostname, r.pid_started)
        ]

    # --- target locks -------------------------------------------------------------

    def acquire_lock(self, target: str, run_id: str) -> None:
        """Take the target's lock for run_id; a lock whose process is gone is taken over."""
        me = {"pid": os.getpid(), "hostname": socket.gethostname()}
        for _ in range(2):
            try:
                with self._tx() as conn:
                    conn.execute(
                        insert(target_locks).values(
                            target=target, run_id=run_id, acquired_at=now(), **me
                        )
                    )
                return
            except IntegrityError:
                held = self._conn.execute(
                    select(target_locks).where(target_locks.c.target == target)
                ).first()
                self._conn.rollback()
                if held is None:
                    continue
                if _process_alive(held.pid, held.hostname):
                    raise TargetLocked(
                        f"Target '{target}' is locked by run {held.run_id} "
                        f"(pid {held.pid} on {held.hostname}, since {held.acquired_at})"
                    ) from None
                with self._tx() as conn:
                    conn.execute(
                        delete(target_locks).where(
                            (target_locks.c.target == target)
                            & (target_locks.c.run_id == held.run_id)
                        )
                    )
                    self._event(
                        conn, run_id, None, "stale_lock_taken_over", {"previous_run": held.run_id}
                    )
        raise TargetLocked(f"Target '{target}' lock is contended; try again")

    def lock_holder(self, target: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            select(target_locks).where(target_locks.c.target == target)
        ).first()
        self._conn.rollback()
        return dict(row._mapping) if row else None

    def release_lock(self, target: str, run_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                delete(target_locks).where(
                    (target_locks.c.target == target) & (target_locks.c.run_id == run_id)
                )
            )


def _make_engine(url: str, busy_timeout: float) -> Engine:
    if url.startswith("sqlite"):
        # One connection per store object: see the module docstring.
        # Worker threads run tools (see executor._in_worker) and write audit rows
        # through this one connection while the main thread waits.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        busy_ms = max(1, round(busy_timeout * 1000))

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            # The busy timeout first: switching to WAL waits for other openers too.
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms:d}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.close()

        return engine
    return create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)


# --- faults of the store itself ------------------------------------------------------

# Seconds a SQLite store waits for another process's lock, unless the URL's `timeout`
# (state.busy_timeout_ms) says otherwise.
DEFAULT_BUSY_TIMEOUT = 10.0
# Less free space than this, where SQLite reports an I/O error, is a full disk.
_NEARLY_FULL = 1 << 20


def _busy_timeout(url: str) -> float:
    try:
        parsed = make_url(url)
        return float(parsed.query.get("timeout") or DEFAULT_BUSY_TIMEOUT)  # type: ignore[arg-type]
    except (ArgumentError, TypeError, ValueError):
        return DEFAULT_BUSY_TIMEOUT


def _is_fault(exc: DBAPIError) -> bool:
    """A failure of the store rather than of a statement: the file or server cannot be
    used (SQLite reports a damaged file as a bare DatabaseError)."""
    return isinstance(exc, OperationalError) or type(exc) is DatabaseError


def _raced(exc: DBAPIError) -> bool:
    """What processes opening one new store at once meet, and a second look resolves."""
    message = str(exc.orig).lower()
    return isinstance(exc, IntegrityError) or "exist" in message or "locked" in message


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sqlite_path(url: str) -> Path | None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)  # type: ignore[arg-type]


def _writable(path: Path) -> bool:
    """Whether this process may write the file (if it is there) and its folder; a
    read-only mount refuses even root."""
    if path.exists() and not os.access(path, os.W_OK):
        return False
    return os.access(path.parent, os.W_OK)


def _nearly_full(path: Path) -> bool:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


def state_error(location: str, url: str, exc: DBAPIError, busy_timeout: float) -> StateError:
    """One line: where the state store is, what is wrong with it, and what to do."""
    message = _first_line(exc.orig)
    lower = message.lower()
    where = f"The state store {location}"
    path = _sqlite_path(url)
    if path is None:
        if "read-only" in lower or "read only" in lower:
            return StateError(
                f"{where} is read-only ({message}); point state.url at a writable primary"
            )
        if "disk full" in lower or "no space" in lower:
            return StateError(f"{where} has no space left ({message}); free space on its server")
        return StateError(
            f"Cannot use the state store {location}: {message}; check that its server is up, "
            "and state.url and state.password_env in the config"
        )
    if "locked" in lower or "busy" in lower:
        return StateError(
            f"{where} is locked by another process (still locked after {busy_timeout:g}s); "
            "let that process finish and try again, or raise state.busy_timeout_ms"
        )
    if "not a database" in lower or "malformed" in lower or "encrypted" in lower:
        return StateError(
            f"{where} is damaged ({message}); move it aside with its -wal and -shm files and "
            "put back a copy, or let aishell start a new, empty one there"
        )
    if "full" in lower or (("i/o" in lower or "unable to open" in lower) and _nearly_full(path)):
        return StateError(
            f"The disk holding the state store {location} is full ({message}); free space "
            "there, or point state.url at another disk"
        )
    if "unable to open" in lower and not path.parent.is_dir():
        return StateError(
            f"{where} cannot be opened: its folder {path.parent} does not exist; create it, "
            "or point state.url elsewhere"
        )
    if "readonly" in lower or "read-only" in lower or not _writable(path):
        return StateError(
            f"{where} is read-only ({message}); make the file and its folder writable for "
            "this user, or point state.url at a writable place"
        )
    return StateError(
        f"{where} cannot be used ({message}); check the file, its folder and their disk"
    )


def _process_alive(pid: int, hostname: str) -> bool:
    if hostname != socket.gethostname():
        return True  # cannot see another host's processes: assume the holder is alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return "unknown"


def process_started(pid: int) -> str | None:
    """When a process started (clock ticks after boot, from /proc): with its pid, this
    tells a process from a later one that reused the pid. None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after it do not.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode()


def recorder_alive(pid: int, hostname: str, started: str | None) -> bool:
    """Is the process that recorded a scratch entry still running? Another host's
    processes count as alive: they cannot be seen from here."""
    if hostname != socket.gethostname():
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: ask the kernel about the pid alone
        return _process_alive(pid, hostname)
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # exited, not yet reaped
        return False
    return started is None or fields[19].decode() == started
