"""A dump's or restore's error keeps the client's cause lines: the FATAL, the "server
closed the connection unexpectedly", mariadb-dump's "Error 2013: Lost connection", not
only the program's last line ("Query was: ..."); bounded, with no password shown.

The fault is caused for real: the test ends the session of aishell's own dump or restore
(found by its database, unique to the test, and its application name or statement)
while it waits behind a lock the test holds. Time bound: the session is ended within a
few seconds of the program's start, the lock wait is 50 s; each test allows 60 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from aishell import commands
from aishell.handlers.backup.causes import LINE_CHARS, TOTAL_CHARS, cause_of
from tests.handlers.backup.test_backup_lock_wait import (
    _my,
    _pg,
    _tables,
    backed_up,
    holding,
    reading,
    restore_approved,
)
from tests.helpers import use_target

BOUND_SECONDS = 60
LOCK_WAIT = 50


def _end_when_waiting(url: str, program: str) -> tuple[threading.Thread, list[str]]:
    """A thread that ends the session of aishell's `program` once it waits for a lock
    (on this test's database only); what it ended."""
    ended: list[str] = []

    def end() -> None:
        deadline = time.monotonic() + BOUND_SECONDS
        while time.monotonic() < deadline and not ended:
            found = _waiting(url, program)
            if found is not None:
                ended.append(found())
            time.sleep(0.1)

    thread = threading.Thread(target=end, daemon=True)
    thread.start()
    return thread, ended


def _waiting(url: str, program: str) -> Callable[[], str] | None:
    if url.startswith("postgresql"):
        with _pg(url) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE %s AND wait_event_type = 'Lock'",
                (f"aishell {program} %",),
            ).fetchone()
        if row is None:
            return None
        return lambda: _pg_terminate(url, int(row[0]))
    # A MariaDB restore loads a scratch database and waits only at its swap.
    statement = "SELECT /*!40001%" if program == "dump" else "RENAME TABLE%"
    with _my(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
            "AND INFO LIKE %s AND STATE LIKE 'Waiting for%%lock%%'",
            (statement,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return lambda: _my_kill(url, int(row[0]))


def _pg_terminate(url: str, pid: int) -> str:
    with _pg(url) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return f"pid {pid}"


def _my_kill(url: str, ident: int) -> str:
    with _my(url) as conn, conn.cursor() as cur:
        cur.execute("KILL CONNECTION %s", (ident,))
    return f"connection {ident}"


def test_a_dump_whose_session_was_ended_says_why(home, server_url):
    _tables(server_url)
    config = use_target(home, server_url)
    postgresql = server_url.startswith("postgresql")
    job = {"type": "full", "verify": False, "lock_wait_seconds": LOCK_WAIT}
    with holding(server_url) as (_holder, _conn):
        ender, ended = _end_when_waiting(server_url, "pg_dump" if postgresql else "dump")
        started = time.monotonic()
        result = commands.run_job(config, "backup", job, max_run_seconds=BOUND_SECONDS)
        assert time.monotonic() - started < BOUND_SECONDS
        ender.join(BOUND_SECONDS)
    assert ended, "the dump's session was never seen waiting"
    step = next(s for s in result.steps if s.tool == "backup_database_full")
    assert step.status == "failed"
    error = step.error or ""
    if postgresql:
        assert "terminating connection due to administrator command" in error, error
        assert "server closed the connection unexpectedly" in error, error
        # The statement it was at is still named, after the cause.
        assert "Query was: LOCK TABLE" in error, error
    else:
        assert "Lost connection" in error and "2013" in error, error
    assert len(error) < TOTAL_CHARS + 200, error


def test_a_restore_whose_session_was_ended_says_why(home, server_url):
    config, backup_id = backed_up(home, server_url)
    postgresql = server_url.startswith("postgresql")
    with reading(server_url) as (_holder, _conn):
        ender, ended = _end_when_waiting(server_url, "pg_restore" if postgresql else "restore")
        started = time.monotonic()
        result = restore_approved(config, backup_id, LOCK_WAIT)
        assert time.monotonic() - started < BOUND_SECONDS
        ender.join(BOUND_SECONDS)
    assert ended, "the restore's session was never seen waiting"
    [step] = result.steps
    assert step.status == "failed"
    error = step.error or ""
    if postgresql:
        assert "terminating connection due to administrator command" in error, error
        assert "server closed the connection unexpectedly" in error, error
    else:
        assert "lost while RENAME TABLE swapped" in error and "Lost connection" in error, error


# --- the lines kept, as the clients write them ----------------------------------------------

PG_DUMP_CUT = """pg_dump: error: Dumping the contents of table "big" failed: PQgetResult() failed.
pg_dump: detail: Error message from server: server closed the connection unexpectedly
\tThis probably means the server terminated abnormally
\tbefore or while processing the request.
pg_dump: detail: Command was: COPY public.big (id, v) TO stdout;
"""


def test_the_cause_comes_before_the_statement_it_was_at():
    said = cause_of(PG_DUMP_CUT, "pg_dump", 1)
    assert said.startswith('error: Dumping the contents of table "big" failed'), said
    assert "server closed the connection unexpectedly" in said
    assert "terminated abnormally" in said
    assert said.endswith("Command was: COPY public.big (id, v) TO stdout;"), said


@pytest.mark.parametrize(
    "stderr",
    [
        'pg_dump: error: connection to "postgresql://app:s3cr3t-pw@db.example/x" failed\n',
        "pg_dump: error: invalid connection option: host=db password=s3cr3t-pw dbname=x\n",
        "mariadb-dump: Got error: 1045: Access denied for user 'app' (s3cr3t-pw)\n",
    ],
)
def test_no_password_is_shown(stderr: str) -> None:
    said = cause_of(stderr, "pg_dump", 1, secrets=["s3cr3t-pw"])
    assert "s3cr3t-pw" not in said and "***" in said, said
    # Without being told the password, one in a URL or key=value is still hidden.
    if "mariadb" not in stderr:
        assert "s3cr3t-pw" not in cause_of(stderr, "pg_dump", 1), stderr


def test_noise_goes_and_the_line_is_bounded() -> None:
    stderr = "".join(
        [
            "mariadb-dump: [Warning] option 'x' is deprecated\n",
            "pg_restore: warning: errors ignored on restore: 3\n",
            *(
                f"pg_restore: error: could not execute query: ERROR: {i} {'x' * 300}\n"
                for i in range(20)
            ),
        ]
    )
    said = cause_of(stderr, "pg_restore", 1)
    assert "Warning" not in said and "warning" not in said, said
    assert len(said) <= TOTAL_CHARS + LINE_CHARS + 40, len(said)
    assert said.endswith("more line(s))"), said
    # Nothing that looks like a cause: the last line, then the exit code.
    assert cause_of("starting\nhalf way\n", "mariadb", 3) == "half way"
    assert cause_of("", "mariadb", 3) == "exit code 3"
