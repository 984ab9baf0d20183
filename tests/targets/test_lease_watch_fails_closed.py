"""The watch on a run's lock never ends quietly: whatever it meets, the run learns of it.

An error inside the watch's thread ended that thread, and the run went on with nobody
looking at its lock (a lock lost then went unseen, another run could share the
database). One such error was real: the lock taken back after a server's restart, the
server's start time was asked outside the wait that counts a silence, and a server silent
at that moment raised out of the watch.
"""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.executor import stopping
from aishell.policy.approvers import PreApproved
from aishell.targets import locks
from aishell.targets.engines import open_target
from tests.faultproxy import Proxy
from tests.helpers import one_step_plan
from tests.private_servers import private_postgresql
from tests.services import engine
from tests.targets.test_limits import HANG, configure, dialect_of, in_thread

READ_TIMEOUT = 1


def test_a_server_silent_as_the_lock_is_taken_back_after_its_restart_loses_the_lock(
    home: Path,
) -> None:
    with private_postgresql() as (url, stop, start):
        private = make_url(url)
        proxy = Proxy(private.port or 5432)
        proxied = private.set(port=proxy.port).render_as_string(hide_password=False)
        config = configure(home, proxied, read_timeout_seconds=READ_TIMEOUT)
        handle = open_target(config, "db")
        try:
            lock = handle.try_lock("lease-taken-back-then-silent")
            assert lock is not None
            stop()
            start()
            # The session that takes the lock back asks the server's start time next:
            # that question never reaches the server, its answer never comes.
            proxy.hold(b"pg_postmaster_start_time", after=(b"pg_try_advisory_lock",))
            assert in_thread(lock.holds) is False
            assert proxy.held_once.is_set(), "the lock was never taken back"
            silence = lock.silence()
            assert silence is not None and silence.startswith("the server stopped answering")
            assert "(targets.db.read_timeout_seconds)" in silence
            assert lock.holds() is False  # lost for good
            lock.release()
        finally:
            handle.close()
            proxy.close()


SLEEPING = {
    "postgresql": "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = "
    "current_database() AND query LIKE 'SELECT pg_sleep%%' AND state = 'active'",
    "mysql": "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
    "AND INFO LIKE 'SELECT SLEEP%%'",
}


def _once_the_step_sleeps(url: str, done: threading.Event) -> threading.Event:
    """Set once the step's sleep runs on the server (seen from a session of the test's)."""
    sleeping = threading.Event()

    def look() -> None:
        own = engine(url)
        try:
            with own.connect() as conn:
                while not done.is_set() and not sleeping.is_set():
                    if conn.execute(text(SLEEPING[dialect_of(url)])).scalar():
                        sleeping.set()
                    conn.rollback()
                    time.sleep(0.05)
        finally:
            own.dispose()

    threading.Thread(target=look, daemon=True).start()
    return sleeping


@pytest.mark.parametrize("where", ["stirred", "holds"])
def test_an_error_the_watch_does_not_expect_stops_the_run(
    home: Path, server_url: str, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """None is known now (the one above is handled): this one, a descriptor closed under
    the watch's poll once the step's statement runs, stands for any, in each of the
    watch's two calls."""
    monkeypatch.setattr(stopping, "LOCK_CHECK_SECONDS", 0.2)
    done = threading.Event()
    sleeping = _once_the_step_sleeps(server_url, done)
    owner, name = (locks, "_stirred") if where == "stirred" else (locks._Lease, "holds")
    watched = getattr(owner, name)

    def closed_under_the_watch(*args: Any) -> bool:
        if sleeping.is_set():
            raise OSError(errno.EBADF, "Bad file descriptor")
        return bool(watched(*args))

    monkeypatch.setattr(owner, name, closed_under_the_watch)
    config = configure(home, server_url, agent={"max_execution_time": 3600})
    plan = one_step_plan("maintenance", "db", dialect_of(server_url), "sleep_read", {"seconds": 60})
    began = time.monotonic()
    try:
        result = in_thread(lambda: commands.apply_plan(config, plan, approver=PreApproved()))
    finally:
        done.set()
    assert sleeping.is_set(), "the step's sleep was never seen running"
    # The step's sleep is cut short: well before its minute, within the suite's patience.
    assert time.monotonic() - began < HANG / 2
    assert result.status == "interrupted", result.error
    assert result.error == (
        "target 'db': the watch on the run's session failed (OSError: [Errno 9] Bad file "
        "descriptor), so the run stopped rather than go on unwatched; continue with "
        f"`aishell resume {result.run_id}`"
    )
    (step,) = result.steps
    assert step.status == "interrupted", step
