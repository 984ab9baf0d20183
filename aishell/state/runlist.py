"""The runs list: how a stored run is shown (`run_row`, which the store's own list_runs
uses too), and the list read with the standard library's sqlite3, read-only, for
`aishell runs list` on a SQLite store, without SQLAlchemy.

The light read answers only for a store as this aishell leaves it: a file with history
(its marker beside it), side files that may be written, at the newest schema revision.
Anything else (no store yet, one to upgrade or from a newer aishell, a damaged or busy
one) is None, and the caller opens the store in full (StateStore), which makes,
upgrades, waits for or refuses it with its own one line, as it always has.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aishell.state.history import HEAD_REVISION
from aishell.state.identity import marker_of
from aishell.state.processes import recorder_alive
from aishell.state.values import loads

# The state store server's clock as whole Unix seconds, on SQLite (beats.server_epoch):
# there the machine's own, since a SQLite store is on the machine of all who write it.
SQLITE_EPOCH = "CAST(strftime('%s', 'now') AS INTEGER)"
# What the list shows of a run: the columns run_row reads (never the plan, the largest),
# and the age of the beat of a running run's process (beats.with_beats, as SQLite says it).
LISTED = (
    "run_id",
    "agent",
    "target",
    "dialect",
    "job",
    "plan_hash",
    "tool_fingerprints",
    "dry_run",
    "safety_level",
    "status",
    "created_at",
    "finished_at",
    "error",
    "started_by",
    "pid",
    "hostname",
    "pid_started",
)
_COLUMNS = ", ".join(f"runs.{name}" for name in LISTED)
_BEATS = (
    f"{SQLITE_EPOCH} - b.beat_at AS beat_age FROM runs LEFT JOIN process_beats AS b "
    "ON b.hostname = runs.hostname AND b.pid = runs.pid AND b.pid_started = runs.pid_started "
    "AND runs.status = 'running'"
)
# The list's order, which the index ix_runs_newest holds (schema.py), and where the runs
# listed after one run are: StateStore.list_runs's order and clause, as sqlite3 says them.
NEWEST = "runs.created_at DESC, runs.run_id"
_CREATED = "SELECT created_at FROM runs WHERE run_id = ?"
AFTER = "runs.created_at <= ? AND (runs.created_at < ? OR runs.run_id > ?)"
# A reader waits this long for a writer's lock; past it, the full open waits and
# reports as it does for every command.
_READ_WAIT_SECONDS = 1.0
# The two statuses one stored "running" may show as (run_row).
LIVE = ("running", "interrupted")


def shown_status(
    status: str, pid: Any, hostname: Any, pid_started: Any, beat_age: Any = None
) -> str:
    """A stored status as the lists show it: "running" whose process is gone is
    "interrupted" (on another host: whose beat has lapsed, `beat_age` as with_beats
    reads it)."""
    if status == "running" and not recorder_alive(pid, hostname, pid_started, beat_age):
        return "interrupted"
    return status


def beat_age(row: Any) -> Any:
    """A row's `beat_age` (beats.with_beats), None when its query did not read it."""
    try:
        return row["beat_age"]
    except (KeyError, IndexError):
        return None


def run_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A stored run as the lists show it: a run whose process is gone is not running,
    whatever its row says."""
    status = shown_status(
        row["status"], row["pid"], row["hostname"], row["pid_started"], beat_age(row)
    )
    return {
        "run_id": row["run_id"],
        "agent": row["agent"],
        "target": row["target"],
        "dialect": row["dialect"],
        "job": loads(row["job"]),
        "plan_hash": row["plan_hash"],
        "tool_fingerprints": loads(row["tool_fingerprints"]),
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


def newest_runs(
    rows: Iterable[Mapping[Any, Any]], status: str | None, limit: int
) -> list[dict[str, Any]]:
    """The first `limit` of rows (newest first) that show as `status` (any, for None)."""
    result = []
    for row in rows:
        run = run_row(row)
        if status is None or run["status"] == status:
            result.append(run)
        if len(result) >= limit:
            break
    return result


def read_runs(
    path: Path,
    status: str | None,
    limit: int,
    targets: Sequence[str] | None,
    after: str | None = None,
) -> list[dict[str, Any]] | None:
    """StateStore.list_runs of the SQLite store at `path`, read-only with sqlite3; None
    where the store must be opened in full (see the module's doc), and where it holds
    no run `after` (the full open says so)."""
    try:
        if not path.stat().st_size or not marker_of(path).exists():
            return None
    except OSError:
        return None
    for suffix in ("-wal", "-shm"):  # as identity.check_side_files, which the full open says
        side = path.with_name(path.name + suffix)
        if side.exists() and not os.access(side, os.W_OK):
            return None
    try:
        opened = sqlite3.connect(
            f"file:{quote(str(path))}?mode=ro", uri=True, timeout=_READ_WAIT_SECONDS
        )
        with closing(opened) as conn:
            revisions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
            if revisions != [HEAD_REVISION]:
                return None
            where, values = _filters(status, targets)
            if after is not None:
                began = conn.execute(_CREATED, (after,)).fetchone()
                if began is None:
                    return None
                where += f"{' AND ' if where else ' WHERE '}{AFTER}"
                values += [began[0], began[0], after]
            query = f"SELECT {_COLUMNS}, {_BEATS}{where} ORDER BY {NEWEST}"
            if status not in LIVE:  # the store sorts and cuts; a live status only rows tell
                query += " LIMIT ?"
                values.append(limit)
            conn.row_factory = sqlite3.Row
            found = newest_runs(conn.execute(query, values), status, limit)
            conn.rollback()
            return found
    except sqlite3.Error:
        return None


def _filters(status: str | None, targets: Sequence[str] | None) -> tuple[str, list[Any]]:
    """The WHERE clause (with its bound values) of list_runs's filters."""
    clauses: list[str] = []
    values: list[Any] = []
    if targets is not None:
        clauses.append(f"runs.target IN ({', '.join('?' * len(targets))})")
        values += list(targets)
    if status in LIVE:
        clauses.append("runs.status IN (?, ?)")
        values += list(LIVE)
    elif status:
        clauses.append("runs.status = ?")
        values.append(status)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), values
