"""A batch in doubt is judged only once the session that sent it is over.

A purge killed (or cut off) with a batch's COMMIT still on its way leaves that batch's
transaction open on the server: its session lives on behind a proxy, a pooler or a
synchronous standby, holding the batch's row locks, and its COMMIT may land at any
moment. Judged then, the batch's rows are still there, so a resume would do it again:
its DELETE would wait on those locks and find nothing once the old COMMIT lands, and
the batch's rows would be deleted without their archived copy, or deleted uncounted.

So every checkpoint names the purge's session (PostgreSQL: backend pid and start;
MariaDB/MySQL: connection id and the server's start), and before a resumed purge judges
its checkpoint it makes sure that session is over: gone, or ended by aishell (it is
aishell's own, proved by the recorded start, so a reused pid is never ended), or, where
it may not end it, out of its transaction. It waits at most the target's lock wait, then
stops resumably with one line saying which session to end. Only then does it read what
is committed (resume.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.errors import StepInterrupted
from aishell.handlers.purge.archivefile import encode_rows
from aishell.handlers.purge.attempt import first_line, stopped_resumably
from aishell.handlers.purge.batchsql import (
    XACT_FUTURE,
    XACT_SQL,
    XACT_STATUS_SQL,
    BatchSql,
    open_below,
)
from aishell.handlers.purge.exactread import exact_reads, judged_under
from aishell.handlers.purge.infinite import read_infinite_dates
from aishell.risk import RiskLevel
from aishell.sqltext import text
from aishell.tool.context import ToolContext
from aishell.tool.side import Side
from aishell.units import took

POLL_SECONDS = 0.1
# Without a lock wait set (0: none), a resume waits this long for the old session.
DEFAULT_WAIT_SECONDS = 60.0
# MariaDB's start as now minus its uptime (whole seconds): two readings of one start
# differ by a second at most.
BOOT_SLACK_SECONDS = 2.0

_PG_SELF = (
    "SELECT pid, extract(epoch FROM backend_start)::text FROM pg_catalog.pg_stat_activity "
    "WHERE pid = pg_catalog.pg_backend_pid()"
)
# The recorded session only: the same pid started at the same moment.
_PG_THAT = "pid = :pid AND extract(epoch FROM backend_start)::text = :start"
# By pid alone: a session another role's, which this one may not read, shows with its
# start (and transaction) unknown, and is not taken for gone.
_PG_LOOK = (
    "SELECT extract(epoch FROM backend_start)::text, CASE WHEN backend_start IS NOT NULL "
    "THEN xact_start IS NOT NULL END FROM pg_catalog.pg_stat_activity WHERE pid = :pid"
)
_PG_END = (
    f"SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE {_PG_THAT}"
)
_PG_LOCK_WAIT = (
    "SELECT setting::pg_catalog.float8 / '1000'::pg_catalog.float8 "
    "FROM pg_catalog.pg_settings WHERE name = 'lock_timeout'"
)
_MY_BOOT = (
    "SELECT UNIX_TIMESTAMP() - VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
    "WHERE VARIABLE_NAME = 'UPTIME'"
)
_MY_SELF = "SELECT CONNECTION_ID(), SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"
_MY_LOOK = "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = :id"
_MY_USER = "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"
_MY_TRX = "SELECT count(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = :id"
_MY_LOCK_WAIT = "SELECT @@SESSION.innodb_lock_wait_timeout"
_MY_END = "KILL CONNECTION :id"

# Ending the recorded session, aishell's own (its pid and start, or its id, bound): a
# high write by the catalog's word (pg_terminate_backend), declared here exactly.
SETTLING_SQL = {"postgresql": (_PG_END,), "mysql": (_MY_END,)}
SETTLING = Side(
    "ending the session of a batch in doubt",
    writes=SETTLING_SQL["postgresql"] + SETTLING_SQL["mysql"],  # what tools show lists
    risk=RiskLevel.HIGH,
    isolation_level="AUTOCOMMIT",
)


def session_of(conn: Connection) -> dict[str, Any] | None:
    """What names the connection's server session for good (None on SQLite, whose
    transactions end with their process)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        pid, start = conn.execute(text(_PG_SELF)).one()
        return {"pid": int(pid), "start": str(start)}
    if family(dialect) == "mysql":
        session, user = conn.execute(text(_MY_SELF)).one()
        boot = float(conn.execute(text(_MY_BOOT)).scalar_one())
        return {"id": int(session), "boot": boot, "user": str(user)}
    return None


def settle_session(
    ctx: ToolContext, recorded: Mapping[str, Any] | None, current: Mapping[str, Any] | None
) -> None:
    """Make sure the session the checkpoint names, if not this one, is over (see the
    module's docstring); StepFailed, resumable, when it is not within the lock wait."""
    if not recorded or dict(recorded) == dict(current or {}):
        return
    conn = ctx.connection
    if family(conn.dialect.name) not in ("postgresql", "mysql"):
        return
    # A second session: the step's is in the middle of the purge's transaction handling.
    with ctx.side_session(SETTLING) as admin:
        _Settle(ctx, admin, recorded).run()


@dataclass
class _Settle:
    """Settling one recorded session: look at it, end it if it is there and aishell's
    own, and wait (at most the lock wait) until it is gone or out of its transaction."""

    ctx: ToolContext
    admin: Connection
    recorded: Mapping[str, Any]

    @property
    def postgresql(self) -> bool:
        return self.admin.dialect.name == "postgresql"

    @property
    def name(self) -> str:
        if self.postgresql:
            return f"PostgreSQL backend {self.recorded['pid']}"
        return f"connection {self.recorded['id']}"

    def run(self) -> None:
        wait = self._lock_wait()
        until = time.monotonic() + wait
        ended, refused = False, None
        while True:
            state = self._look()
            if state is None:
                return  # gone: what it did is committed or rolled back
            if not ended and refused is None:
                refused = self._end()
                ended = refused is None
                if ended:
                    self.ctx.record_event("in_doubt_session_ended", {"session": self.name})
                continue
            if state == "idle" and not ended:
                return  # out of its transaction: committed or rolled back, for good
            if time.monotonic() >= until:
                self._give_up(wait, refused)
            if self.ctx.should_stop():
                raise StepInterrupted(
                    f"stopped while waiting for the session of a batch in doubt ({self.name}) "
                    "to end; `aishell resume` goes on from the last checkpoint"
                )
            time.sleep(POLL_SECONDS)

    def _lock_wait(self) -> float:
        sql = _PG_LOCK_WAIT if self.postgresql else _MY_LOCK_WAIT
        seconds = float(self.admin.execute(text(sql)).scalar() or 0)
        return seconds if seconds > 0 else DEFAULT_WAIT_SECONDS

    def _look(self) -> str | None:
        """None: the session is gone; "open": in a transaction; "idle": out of one."""
        if self.postgresql:
            found = self.admin.execute(text(_PG_LOOK), {"pid": int(self.recorded["pid"])}).first()
            if found is None or (found[0] is not None and found[0] != self.recorded["start"]):
                return None  # gone, or its pid is another session's now
            return "idle" if found[1] is False else "open"
        boot = float(self.admin.execute(text(_MY_BOOT)).scalar_one())
        if abs(boot - float(self.recorded["boot"])) > BOOT_SLACK_SECONDS:
            return None  # the server restarted since: its ids start again
        keys = {"id": int(self.recorded["id"])}
        if self.admin.execute(text(_MY_LOOK), keys).first() is None:
            # Without PROCESS a user sees its own sessions only: another user's session
            # out of sight is not known to be gone.
            me = self.admin.execute(text(_MY_USER)).scalar()
            return None if self.recorded.get("user", me) == me else "open"
        try:
            open_ = int(self.admin.execute(text(_MY_TRX), keys).scalar() or 0)
        except DBAPIError:
            return "open"  # InnoDB's transactions unreadable (no PROCESS): assume one
        return "open" if open_ else "idle"

    def _end(self) -> str | None:
        """End the session; None when it was ended, else why it could not be."""
        try:
            if self.postgresql:
                ended = self.admin.execute(text(_PG_END), self._pg_keys()).all()
                if not ended and self._look() is not None:
                    # Its start unreadable: not proved aishell's own, so not ended.
                    return "it is another role's session, which this one may not read"
            else:
                self.admin.execute(text(_MY_END), {"id": int(self.recorded["id"])})
        except DBAPIError as exc:
            if self._look() is None:
                return None  # it ended by itself meanwhile
            return first_line(exc)
        return None

    def _pg_keys(self) -> dict[str, Any]:
        return {"pid": int(self.recorded["pid"]), "start": str(self.recorded["start"])}

    def _give_up(self, wait: float, refused: str | None) -> None:
        how = (
            f"SELECT pg_catalog.pg_terminate_backend({int(self.recorded['pid'])})"
            if self.postgresql
            else f"KILL {int(self.recorded['id'])}"
        )
        why = f": ending it failed ({refused})" if refused else ""
        raise stopped_resumably(
            self.ctx,
            f"the session that sent this purge's last batch ({self.name}) is still in its "
            f"transaction after {took(wait, None)}, so whether that batch committed is not known "
            f"yet{why}",
            f"end that session first ({how}, as a user that may), or let its transaction end",
        )


# --- the server's word on a batch's transaction (PostgreSQL) -----------------------------


def transaction_of(conn: Connection) -> dict[str, str]:
    """The id of the transaction a batch runs in, and the server's life, for its
    checkpoint: after a crash, `server_word` asks about it."""
    xid, life = conn.execute(text(XACT_SQL)).one()
    return {"xid": str(xid), "life": str(life)}


def server_word(
    conn: Connection, pending: Mapping[str, Any], unsure: bool | None = None
) -> bool | None:
    """Whether the batch's transaction committed, by the server's word on its id; None
    where that word settles nothing: no id, or an id too old to be remembered.

    A server restarted or recovered from a crash since gives out again the ids it had
    not made durable. A batch whose id was lost did not commit, and the server says so
    (in the future) until the id is given to another transaction: then "committed" may
    be that one's, and stands for `unsure` (None: settled by the batch's own rows);
    "aborted" is true of the batch either way."""
    if not pending.get("xid"):
        return None
    status, life = conn.execute(text(XACT_STATUS_SQL), {"xid": str(pending["xid"])}).one()
    if status == XACT_FUTURE:
        # Nothing of its transaction, COMMIT included, had reached the disk.
        return False
    if status is None:
        return None
    if status == "committed" and str(life) != str(pending.get("life", life)):
        return unsure
    return bool(status == "committed")


# --- whether a key walk's batch in doubt committed --------------------------------------

# Keys a look at the table names at once (SQLite's oldest builds bind 999 at most).
KEYS_A_LOOK = 500


@dataclass
class KeyBatch:
    """A key walk's batch checkpointed as pending, judged once its session is over by a
    witness of its own transaction, never by whether old rows are in its key range now:
    another session may write an old row there after it committed, or make its rows
    young after its COMMIT was lost. An archive file's rows are that witness only as
    they were archived: a key written again after the COMMIT looks like a row changed
    after a lost one, and neither is judged without a person."""

    ctx: ToolContext
    batch: BatchSql
    pending: Mapping[str, Any]
    after: Any
    bound: Any
    archive_file: str | None

    def committed(self) -> bool:
        pending = self.pending
        if not pending.get("rows"):
            # It deleted nothing: done again, it deletes and archives what is old now.
            return False
        word = server_word(self._conn, pending)
        if word is not None:
            return word
        if self.archive_file:
            rows = archived_rows(Path(self.archive_file), pending, self.batch.key_name)
            if rows is not None:
                # No bytes of its own in the file: written before its COMMIT was sent,
                # so it never was.
                return bool(rows) and self._rows_gone(rows)
        if self.batch.archive_table and self.batch.key != "rowid":
            # Copied in the same transaction as the delete: in the archive table if,
            # and only if, it committed.
            sql = text(self.batch.archived_in_range(self._first))
            archived = int(self._conn.execute(sql, self._range).scalar() or 0)
            # Counted with its copy inside its transaction where earlier purges' rows
            # share the range (batches.py), else its rows alone.
            expected = pending.get("archived")
            return archived >= (expected if isinstance(expected, int) else int(pending["rows"]))
        return self._by_old_rows()

    @property
    def _conn(self) -> Connection:
        return self.ctx.connection

    @property
    def _first(self) -> bool:
        return open_below(self.after)

    @property
    def _range(self) -> dict[str, Any]:
        return {"after": self.after, "upper": self.pending["upper"], "cutoff": self.bound}

    def _rows_gone(self, archived: Mapping[Any, bytes]) -> bool:
        """The batch's own rows, read from its archived bytes, looked for in the table by
        their keys, whatever their dates: none left, it committed; all left as archived,
        it did not. A key the table holds with another row (written again after the
        COMMIT, or the row changed after the COMMIT was lost) leaves it unknown."""
        keys = list(archived)
        left = changed = 0
        for columns, rows in self._present(keys):
            for row in rows:
                line = encode_rows(columns, [row]).rstrip(b"\n")
                left += 1
                changed += archived.get(json.loads(line).get(self.batch.key_name)) != line
        if left == 0 or (left == len(keys) and not changed):
            return left == 0
        if changed:
            self._undecided(
                f"{changed:,} of the {len(keys):,} rows it archived are in the table with "
                "other values than archived (written again after its COMMIT, or changed "
                "after it was lost)"
            )
        self._undecided(f"{left:,} of the {len(keys):,} rows it archived are still in the table")

    def _present(self, keys: list[Any]) -> Iterator[tuple[list[str], list[Any]]]:
        """The table's rows of these keys, a look at a time, read as the batch read them
        for its archive file: under the settings it read them under (PostgreSQL), or the
        judgement stops, saying which setting differs."""
        sql = text(self.batch.rows_present()).bindparams(bindparam("keys", expanding=True))
        settings = self.batch.reads_settings()
        archived_under = list(self.pending.get("archive_settings") or ())
        with exact_reads(self._conn):
            read_infinite_dates(self._conn)
            for i in range(0, len(keys), KEYS_A_LOOK):
                found = self._conn.execute(sql, {"keys": keys[i : i + KEYS_A_LOOK]})
                columns, rows = list(found.keys()), found.fetchall()
                if not settings:
                    yield columns, list(rows)
                    continue
                problem = judged_under(self._conn, (str(r[-1]) for r in rows), archived_under)
                if problem is not None:
                    self._not_comparable(problem)
                yield columns[:-1], [tuple(r)[:-1] for r in rows]

    def _not_comparable(self, problem: str) -> NoReturn:
        raise stopped_resumably(
            self.ctx,
            f"whether the purge's last batch (keys after {self.after!r} up to "
            f"{self.pending['upper']!r}) committed cannot be judged in this session: its "
            f"rows were read again while the session's {problem}; compared with what it "
            "archived, their text could look changed, or unchanged, when it is not",
            "make the session's settings those the batch ran under (the target's role or "
            "database settings), then resume",
        )

    def _by_old_rows(self) -> bool:
        """No witness of the transaction's own (no archive, or SQLite's rowid, which no
        archived row holds): the old rows in its key range against the rows it deleted.
        None left, it committed; at least as many, it did not."""
        sql = f"SELECT count(*) FROM {self.batch.table} WHERE {self.batch.range(self._first)}"
        left = int(self._conn.execute(text(sql), self._range).scalar() or 0)
        rows = int(self.pending["rows"])
        if left == 0 or left >= rows:
            return left == 0
        if self.archive_file:
            # Cutting its bytes when it committed would lose archived rows for good.
            self._undecided(
                f"{left:,} rows older than the cutoff are in its key range, fewer than the "
                f"{rows:,} it deleted"
            )
        return False  # done again: it deletes what is old in its range now

    def _undecided(self, seen: str) -> NoReturn:
        fix = (
            "compare its rows in the archive with the table, delete from the table those "
            "of its rows still there if it is to count as done"
        )
        start = self.pending.get("archive_from")
        if self.archive_file and isinstance(start, int):
            # Its bytes cut by hand: the resume finds none of its own, so it never was.
            fix += (
                f", or cut the archive file back to its first {start:,} bytes (truncate "
                f"-s {start} {self.archive_file}) if it is not"
            )
        raise stopped_resumably(
            self.ctx,
            f"whether the purge's last batch (keys after {self.after!r} up to "
            f"{self.pending['upper']!r}, {int(self.pending['rows']):,} rows) committed is not "
            f"known: {seen}, so another session changed them since",
            f"{fix}, then resume",
        )


def archived_rows(path: Path, pending: Mapping[str, Any], key: str) -> dict[Any, bytes] | None:
    """The rows a batch in doubt archived, each line by its key, read from its bytes in
    the archive file (known by the length and digest checkpointed before they were
    written); {} when its bytes are not there (they are written before the COMMIT is
    sent, so it did not commit); None when its rows do not hold the key (SQLite's rowid)
    or the checkpoint does not say what its bytes are."""
    start, end = pending.get("archive_from"), pending.get("archive_offset")
    digest = pending.get("archive_digest")
    if start is None or end is None or digest is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}  # the archive file's own checks say what is wrong with it
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        data = os.pread(fd, int(end) - int(start), int(start))
    finally:
        os.close(fd)
    if hashlib.sha256(data).hexdigest() != str(digest) or len(data) != int(end) - int(start):
        return {}
    rows = {}
    for line in data.splitlines():
        row = json.loads(line)
        if key not in row:
            return None
        rows[row[key]] = line
    return rows
