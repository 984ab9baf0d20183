"""A restore or dump that aishell stops has its server session ended too, and nothing it
queued runs afterwards. Before, pg_restore stopped at its lock wait was killed but its
backend stayed, waiting with its `DROP` queued (every new reader of the table queued
behind it), and ran the DROP once the holder let go, after aishell had reported the
restore stopped.

Each test holds its lock in a session it opens itself, on a scratch database of its
own, and stops aishell's program by the lock wait, the step's time limit or SIGTERM. Time bound:
the lock wait or step limit is 2-3 s; each test allows 60 s.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import psycopg
import pytest

from aishell import commands
from tests.handlers.backup.test_backup_faults import start, wait_for
from tests.handlers.backup.test_backup_lock_wait import (
    TEST_LOOK,
    _my,
    _pg,
    _tables,
    backed_up,
    holding,
    reading,
    restore_approved,
)
from tests.handlers.backup.test_client_causes import _waiting
from tests.helpers import use_target

BOUND_SECONDS = 60


def _program_sessions(url: str, holder: int) -> list[str]:
    """The sessions on the test's database but the holder's and this one: a restore's or
    dump's that outlived it."""
    if url.startswith("postgresql"):
        with _pg(url) as conn:
            rows = conn.execute(
                "SELECT pid, application_name, query FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s) "
                "AND application_name <> %s",
                (holder, TEST_LOOK),
            ).fetchall()
    else:
        with _my(url) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT ID, COMMAND, INFO FROM information_schema.PROCESSLIST "
                "WHERE DB = DATABASE() AND ID NOT IN (CONNECTION_ID(), %s)",
                (holder,),
            )
            rows = list(cur.fetchall())
    return [str(r) for r in rows]


def _held_table_is_whole(url: str, holder_conn: Any) -> bool:
    """`held` is there with its 50 rows and its primary key: no DROP of it ran. On
    MariaDB it is read in the holder's own session: a session the test opened and closed
    just now can still show in the process list, as if it were the program's."""
    if url.startswith("postgresql"):
        with _pg(url) as conn:
            key = conn.execute(
                "SELECT count(*) FROM pg_constraint WHERE conname = 'held_pkey'"
            ).fetchone()
            rows = conn.execute("SELECT count(*) FROM held").fetchone()
            return bool(key and key[0] == 1 and rows and rows[0] == 50)
    with holder_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM `held`")
        return bool(cur.fetchone()[0] == 50)


def _release(url: str, conn: Any) -> None:
    if url.startswith("postgresql"):
        conn.rollback()
    else:
        with conn.cursor() as cur:
            cur.execute("ROLLBACK")


@pytest.mark.parametrize("stopped_by", ["lock wait", "step limit"])
def test_a_stopped_restore_leaves_no_session_and_its_queued_drop_never_runs(
    home, server_url, edit_config, stopped_by
):
    config, backup_id = backed_up(home, server_url, validated=False)
    lock_wait = 2.0
    if stopped_by == "step limit":
        # The lock wait is long; the step's own time limit stops the client first.
        config = edit_config(backup={"default_config": {"max_execution_time": 3}})
        lock_wait = 50.0

    with reading(server_url) as (holder, conn):
        started = time.monotonic()
        result = restore_approved(config, backup_id, lock_wait)
        assert time.monotonic() - started < BOUND_SECONDS
        [step] = result.steps
        assert result.status == "failed" and step.status == "failed", step.error
        # Once aishell has reported the stop, its program has no session left.
        assert _program_sessions(server_url, holder) == [], step.error
        _release(server_url, conn)
        # A queued DROP would run now that the lock is free: give it the time to.
        time.sleep(1.0)
        assert _held_table_is_whole(server_url, conn)
        assert _program_sessions(server_url, holder) == []


def test_postgresql_a_stopped_dump_leaves_no_session(home, pg_url):
    """The dump stopped at its lock wait: its backend is gone when the step ends (no
    wait for the server to notice the closed socket)."""
    _tables(pg_url)
    config = use_target(home, pg_url)
    with reading(pg_url) as (holder, conn):
        # A reader does not hold a dump back: hold the table against readers instead.
        conn.rollback()
        conn.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = commands.run_job(
            config, "backup", {"type": "full", "verify": False, "lock_wait_seconds": 2}
        )
        assert time.monotonic() - started < BOUND_SECONDS
        assert result.status == "failed"
        assert _program_sessions(pg_url, holder) == []
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


def test_sigterm_while_a_dump_waits_ends_its_session(home, server_url):
    """SIGTERM to `aishell run backup` while its dump waits behind a lock: once aishell
    has exited, the dump's session is gone from the server (killing the program alone
    left it waiting for the lock)."""
    _tables(server_url)
    use_target(home, server_url)
    program = "pg_dump" if server_url.startswith("postgresql") else "mariadb-dump"
    with holding(server_url) as (holder, _conn):
        proc = start(home, "run", "backup", "--type", "full", "--json")
        try:
            wait_for(
                f"{program} waiting on the held lock",
                lambda: _waiting(server_url, "pg_dump" if program == "pg_dump" else "dump"),
                proc,
                # Each look is a new session on the server: not 500 of them a second.
                every=0.05,
            )
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=BOUND_SECONDS)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert json.loads(out)["status"] == "interrupted", out
        assert _program_sessions(server_url, holder) == []
