"""The run lock is a lease on a session aishell watches: when the server ends that
session (pg_terminate_backend, KILL, an idle timeout), the run stops within a second,
its running statement cancelled, recorded interrupted with a line saying why, and
`aishell resume` continues it once it can take the lock again.

Only the run's own lock session is ended: found by the lock's key (unique to the
test's scratch database) and checked to be aishell's session on that database.
SQLite's run lock is a file lock held by this process's descriptor: no other process
can end it, so it has nothing to watch."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.errors import TargetLocked
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from aishell.targets.engines import open_target
from aishell.targets.identity import database_identity
from tests.helpers import slow_read_tool, use_target
from tests.private_servers import private_postgresql
from tests.services import MYSQL_ADMIN, PG_ADMIN, engine

# From the kill to the run's end: the watcher sees the session end at once and
# cancels the running statement; the rest is the cancel's round trip and the
# step's bookkeeping. Well under a second on a quiet machine; the bound leaves room
# for a two-core machine running the whole suite on three workers (3.5 s was seen).
STOP_BOUND_SECONDS = 8.0


def _postgresql(url: str) -> bool:
    return url.startswith("postgresql")


def _dialect(url: str) -> str:
    return "postgresql" if _postgresql(url) else "mysql"


def _lock_key(config: Config) -> str:
    handle = open_target(config, "db")
    try:
        with handle.connect() as conn:
            return f"aishell:{database_identity(conn)}"
    finally:
        handle.close()


def _lock_session(url: str, key: str) -> int | None:
    """The session holding the run lock `key`, only if it is aishell's on url's database."""
    admin = engine(PG_ADMIN if _postgresql(url) else MYSQL_ADMIN)
    database = make_url(url).database
    try:
        with admin.connect() as conn:
            if _postgresql(url):
                return conn.execute(
                    text(
                        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                        "AND ((l.classid::bigint << 32) | l.objid::bigint) "
                        "= hashtextextended(:k, 0) AND a.datname = :db "
                        "AND a.application_name = 'aishell'"
                    ),
                    {"k": key, "db": database},
                ).scalar()
            name = "aishell:" + hashlib.sha1(key.encode()).hexdigest()
            return conn.execute(
                text(
                    "SELECT id FROM information_schema.processlist "
                    "WHERE id = IS_USED_LOCK(:n) AND db = :db"
                ),
                {"n": name, "db": database},
            ).scalar()
    finally:
        admin.dispose()


def _busy(url: str, marker: str) -> bool:
    """Whether aishell runs a statement with `marker` on url's database now."""
    admin = engine(PG_ADMIN if _postgresql(url) else MYSQL_ADMIN)
    find = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
        "AND application_name = 'aishell' AND state = 'active' AND query LIKE :m"
        if _postgresql(url)
        else "SELECT count(*) FROM information_schema.processlist WHERE db = :db "
        "AND info LIKE :m AND id <> CONNECTION_ID()"
    )
    try:
        with admin.connect() as conn:
            found = conn.execute(
                text(find), {"db": make_url(url).database, "m": f"%{marker}%"}
            ).scalar()
            return bool(found)
    finally:
        admin.dispose()


def _kill(url: str, session: int) -> None:
    """End one session from the server side and wait until it is gone."""
    admin = engine(PG_ADMIN if _postgresql(url) else MYSQL_ADMIN)
    try:
        with admin.connect() as conn:
            if _postgresql(url):
                conn.execute(text("SELECT pg_terminate_backend(:p, 10000)"), {"p": session})
                return
            conn.execute(text(f"KILL CONNECTION {int(session)}"))
            gone = text("SELECT COUNT(*) FROM information_schema.processlist WHERE id = :p")
            deadline = time.monotonic() + 10
            while conn.execute(gone, {"p": session}).scalar() and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        admin.dispose()


def _kill_lock_when(
    url: str, key: str, marker: str, ready: Callable[[], bool] = lambda: True
) -> tuple[threading.Event, list[float], threading.Thread]:
    """Once `ready()` and aishell runs a statement with `marker`, end the run lock's
    session; the list gets the time the kill was sent. Join the thread before reading
    the list."""
    stop, killed = threading.Event(), []

    def watch() -> None:
        while not stop.is_set():
            if ready() and _busy(url, marker):
                session = _lock_session(url, key)
                if session is not None:
                    killed.append(time.monotonic())
                    _kill(url, session)
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return stop, killed, thread


def _plan(url: str, tool: str, count: int) -> Plan:
    dialect = _dialect(url)
    steps = tuple(Step(f"s{i}", tool, {"floor": i}) for i in range(count))
    return Plan("maintenance", "db", dialect, {"type": "custom"}, steps)


# Reads whose length the test sets: rows of a one-row table `pace` (its `n`) scale them,
# so that the run's read lasts while the resume's reads end at once (a tool may not
# change between a run and its resume). PACED_MARKER: what each holds, for _busy.
PACED = {
    "long_count": {
        "postgresql": "SELECT count(*) AS n FROM generate_series(1, 20 * (SELECT n FROM pace)) a, "
        "generate_series(1, (SELECT n FROM pace)) b WHERE a + b > CAST(:floor AS integer)",
        "mysql": "SELECT count(*) AS n FROM seq_1_to_40000 a, seq_1_to_3000 b, pace p "
        "WHERE b.seq <= p.n AND a.seq + b.seq > :floor",
    },
    "short_count": {
        "postgresql": "SELECT count(*) AS n FROM generate_series(1, 3 * (SELECT n FROM pace)) a, "
        "generate_series(1, (SELECT n FROM pace)) b WHERE a + b > CAST(:floor AS integer)",
        "mysql": "SELECT count(*) AS n FROM seq_1_to_3000 a, seq_1_to_300 b, pace p "
        "WHERE b.seq <= p.n AND a.seq + b.seq > :floor",
    },
}
PACED_MARKER = {
    "long_count": {"postgresql": "generate_series(1, 20 *", "mysql": "seq_1_to_3000 b"},
    "short_count": {"postgresql": "generate_series(1, 3 *", "mysql": "seq_1_to_300 b"},
}
# pace.n for the run's reads: seconds for long_count (longer on a loaded machine: the
# lock's loss is acted on within a second of the kill, so the read is cut short whatever
# the load), a few tenths of a second for short_count; 0 makes either end at once.
PACE = {
    "long_count": {"postgresql": 2000, "mysql": 3000},
    "short_count": {"postgresql": 1000, "mysql": 300},
}


def _paced_tool(home: Path, url: str, name: str) -> Config:
    """The site tool `name` of PACED, and the table `pace` set for the run's reads."""
    dialect = _dialect(url)
    slow_read_tool(home)
    folder = home / "site_tools"
    tool = yaml.safe_load((folder / "long_count.yaml").read_text())
    tool["name"] = name
    tool["implementations"] = {d: {"sql": sql} for d, sql in PACED[name].items()}
    tool["locks"] = {
        "postgresql": [{"lock": "ACCESS SHARE", "object": "table", "held": "while counted"}],
        "mysql": [{"lock": "SHARED_READ", "object": "table", "held": "while counted"}],
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(tool))
    made = engine(url)
    try:
        with made.begin() as conn:
            conn.execute(text("CREATE TABLE pace (id int PRIMARY KEY, n int NOT NULL)"))
            conn.execute(text("INSERT INTO pace VALUES (1, :n)"), {"n": PACE[name][dialect]})
    finally:
        made.dispose()
    return load_config(home=home)


def _pace_off(url: str) -> None:
    """The paced reads end at once from now on: a resume need not read them whole."""
    made = engine(url)
    try:
        with made.begin() as conn:
            conn.execute(text("UPDATE pace SET n = 0"))
    finally:
        made.dispose()


def _applied_while_killed(
    config: Any, plan: Any, stop: threading.Event, killed: list[float], killer: threading.Thread
) -> commands.RunResult:
    """The plan applied while the killer waits to end its lock's session: the run ended
    within STOP_BOUND_SECONDS of the kill, as one that lost its lock."""
    try:
        result = commands.apply_plan(config, plan, approver=PreApproved())
        ended = time.monotonic()
    finally:
        stop.set()
        killer.join(15)
    assert killed, ("the lock's session was never seen", result.status, result.error)
    assert ended - killed[0] < STOP_BOUND_SECONDS, ended - killed[0]
    _assert_lost(result)
    return result


def _assert_lost(result: commands.RunResult) -> None:
    assert result.status == "interrupted", (result.status, result.error)
    error = result.error or ""
    assert "lost the run lock on target 'db'" in error, error
    assert f"aishell resume {result.run_id}" in error
    assert "\n" not in error


def test_a_long_statement_is_cancelled_when_the_lock_session_is_ended(home, server_url):
    use_target(home, server_url)
    # Reads for seconds: the lock's loss is acted on within a second of the kill (a
    # cancel that reached the server before the read did is sent again:
    # test_cancel_race), so the read is cut short whatever the load.
    config = _paced_tool(home, server_url, "long_count")
    key = _lock_key(config)
    marker = PACED_MARKER["long_count"][_dialect(server_url)]
    stop, killed, killer = _kill_lock_when(server_url, key, marker)
    result = _applied_while_killed(config, _plan(server_url, "long_count", 2), stop, killed, killer)
    assert [s.status for s in result.steps] == ["interrupted", "pending"]
    assert "the loss of the run lock" in (result.steps[0].error or "")
    # The lock was let go with its session: another run takes it, and while it holds
    # it the stopped run is not resumed.
    handle = open_target(config, "db")
    try:
        other = handle.try_lock(key)
        assert other is not None
        with pytest.raises(TargetLocked):
            commands.resume_run(config, result.run_id, approver=PreApproved())
        other.release()
    finally:
        handle.close()
    _pace_off(server_url)
    resumed = commands.resume_run(config, result.run_id, approver=PreApproved())
    assert resumed.status == "completed", resumed.error
    assert [s.status for s in resumed.steps] == ["succeeded", "succeeded"]


def test_no_statement_is_sent_after_the_lock_session_is_ended(home, server_url):
    use_target(home, server_url)
    config = _paced_tool(home, server_url, "short_count")
    key = _lock_key(config)
    marker = PACED_MARKER["short_count"][_dialect(server_url)]

    def two_done() -> bool:
        # Two steps of the run succeeded: the kill falls in the middle of the plan.
        runs = commands.list_runs(config)
        steps: list[dict[str, Any]] = (
            commands.show_run(config, runs[0]["run_id"])["steps"] if runs else []
        )
        return bool(sum(s["status"] == "succeeded" for s in steps) >= 2)

    stop, killed, killer = _kill_lock_when(server_url, key, marker, two_done)
    plan = _plan(server_url, "short_count", 40)
    result = _applied_while_killed(config, plan, stop, killed, killer)
    statuses = [s.status for s in result.steps]
    done = statuses.count("succeeded")
    # Steps in order: those before the kill succeeded, one was stopped (or none, when
    # the kill fell between two), and none after it started.
    assert done >= 2, [(s.status, s.error) for s in result.steps[:3]]
    assert set(statuses[done + 1 :]) == {"pending"}, statuses
    _pace_off(server_url)
    resumed = commands.resume_run(config, result.run_id, approver=PreApproved())
    assert resumed.status == "completed", resumed.error
    assert [s.attempts for s in resumed.steps[:done]] == [1] * done


def test_a_lock_whose_session_ended_is_lost_for_good(server_config, server_url):
    key = _lock_key(server_config)
    handle = open_target(server_config, "db")
    other_handle = open_target(server_config, "db")
    other = None
    try:
        lock = handle.try_lock(key)
        assert lock is not None and lock.stirred is not None
        assert not lock.stirred(0.1) and lock.holds()  # an idle, live session: quiet
        session = _lock_session(server_url, key)
        assert session is not None
        _kill(server_url, session)
        began = time.monotonic()
        assert lock.stirred(5.0)  # seen on the socket, without a round trip
        assert time.monotonic() - began < 1.0
        assert not lock.holds()
        # Free now, yet never taken back: another process may have used the database.
        assert not lock.holds()
        assert _lock_session(server_url, key) is None
        other = other_handle.try_lock(key)
        assert other is not None
        lock.release()  # lets go of nothing it does not hold
        assert _lock_session(server_url, key) is not None
    finally:
        if other is not None:
            other.release()
        other_handle.close()
        handle.close()


def test_a_lock_lost_with_a_server_restart_is_taken_back_unless_another_took_it(home):
    # A restart ends every session, the run's own too (their reconnects are tested in
    # test_purge_faults): the lock is taken again once the server answers, if free.
    with private_postgresql() as (url, stop, start):
        config = use_target(home, url)
        key = _lock_key(config)
        handle, other_handle = open_target(config, "db"), open_target(config, "db")
        other = None
        try:
            lock = handle.try_lock(key)
            assert lock is not None and lock.stirred is not None
            stop()
            assert lock.stirred(5.0)
            assert lock.holds()  # the server is down: nobody else can take it either
            start()
            assert lock.holds()  # taken again, on a new session
            assert other_handle.try_lock(key) is None
            stop()
            start()
            other_handle.engine.dispose()
            other = other_handle.try_lock(key)  # another process is first this time
            assert other is not None
            assert not lock.holds()
            lock.release()
        finally:
            if other is not None:
                other.release()
            other_handle.close()
            handle.close()
