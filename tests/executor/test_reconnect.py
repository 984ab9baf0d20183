"""A server that drops aishell's connection mid-step (a terminated backend, a restart):
the step is retried on a new connection when it may be, else it fails resumably with
a line naming the lost connection, and resume finishes the run."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from aishell.targets.deadlines import step_deadline
from aishell.targets.engines import open_target
from tests.helpers import MARKER, slow_read_tool, use_target
from tests.services import MYSQL_ADMIN, PG_ADMIN, engine

# The slow read of tests.helpers (its MARKER, its size) with the size of its inner loop
# read from a table: the read the test kills lasts seconds, and once the kill is sent the
# test shrinks it, so that the retry or the resume that reads again does not read as
# long a second time (the server's seconds of CPU that proved nothing more).
KNOB_READ = {
    "postgresql": (
        "SELECT count(*) AS n FROM read_size k, generate_series(1, 40000) a, "
        "generate_series(1, k.pairs) b WHERE a + b > CAST(:floor AS integer)"
    ),
    "mysql": (
        "SELECT count(*) AS n FROM read_size k JOIN seq_1_to_3000 b ON b.seq <= k.pairs, "
        "seq_1_to_40000 a WHERE a.seq + b.seq > :floor"
    ),
}
LONG_PAIRS = {"postgresql": 2000, "mysql": 3000}


def _read_tool(home: Path, url: str, *, idempotent: bool) -> Config:
    """The home's config with the slow read `long_count` of KNOB_READ, its size at full;
    a step tried again 0.1 s after a lost connection (the backoff is only a wait here)."""
    dialect = _dialect(url)
    slow_read_tool(home, idempotent=idempotent)
    path = home / "site_tools" / "long_count.yaml"
    tool = yaml.safe_load(path.read_text())
    tool["implementations"] = {d: {"sql": sql} for d, sql in KNOB_READ.items()}
    path.write_text(yaml.safe_dump(tool))
    agent = home / "config" / "agents" / "maintenance.yaml"
    agents = yaml.safe_load(agent.read_text())
    agents["maintenance_agent"].setdefault("default_config", {})["retry_backoff_seconds"] = 0.1
    agent.write_text(yaml.safe_dump(agents))
    own = engine(url)
    with own.connect() as conn:
        conn.execute(text("CREATE TABLE read_size (pairs INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO read_size VALUES (:n)"), {"n": LONG_PAIRS[dialect]})
    own.dispose()
    return load_config(home=home)


def _shrink_read(url: str) -> None:
    own = engine(url)
    with own.connect() as conn:
        conn.execute(text("UPDATE read_size SET pairs = 1"))
    own.dispose()


def _dialect(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "mysql"


def _slow_read_session(url: str) -> int | None:
    """aishell's session running the slow read on `url`'s database, if one is."""
    dialect = "postgresql" if url.startswith("postgresql") else "mysql"
    find = (
        "SELECT pid FROM pg_stat_activity WHERE datname = :db AND application_name = 'aishell' "
        "AND state = 'active' AND query LIKE :marker AND pid <> pg_backend_pid()"
        if dialect == "postgresql"
        else "SELECT id FROM information_schema.processlist WHERE db = :db "
        "AND info LIKE :marker AND id <> CONNECTION_ID()"
    )
    admin = engine(PG_ADMIN if dialect == "postgresql" else MYSQL_ADMIN)
    try:
        with admin.connect() as conn:
            marker = f"%{MARKER[dialect]}%"
            return conn.execute(
                text(find), {"db": make_url(url).database, "marker": marker}
            ).scalar()
    finally:
        admin.dispose()


def _terminate_when_busy(url: str, stop: threading.Event) -> list[int]:
    """End aishell's session on `url`'s database from the server side, the first time
    it runs the slow read (pg_terminate_backend; MariaDB's KILL CONNECTION)."""
    while not stop.is_set():
        session = _slow_read_session(url)
        if session is not None:
            # Before the kill: whatever reads next (the retry, the resume) reads briefly.
            _shrink_read(url)
            _kill_session(url, session)
            return [session]
        time.sleep(0.05)
    return []


def _run_with_a_kill(config: Config, url: str) -> tuple[commands.RunResult, list[int]]:
    stop = threading.Event()
    killed: list[int] = []
    killer = threading.Thread(target=lambda: killed.extend(_terminate_when_busy(url, stop)))
    killer.start()
    dialect = "postgresql" if url.startswith("postgresql") else "mysql"
    plan = Plan(
        "maintenance", "db", dialect, {"type": "custom"}, (Step("s0", "long_count", {"floor": 1}),)
    )
    try:
        result = commands.apply_plan(config, plan, approver=PreApproved())
    finally:
        stop.set()
        killer.join(10)
    return result, killed


def test_a_terminated_backend_is_retried_on_a_new_connection(home, server_url):
    use_target(home, server_url)
    config = _read_tool(home, server_url, idempotent=True)
    result, killed = _run_with_a_kill(config, server_url)
    assert killed, "the slow read was never seen running"
    assert result.status == "completed", result.error
    assert result.steps[0].attempts == 2
    events = commands.show_run(config, result.run_id)["events"]
    retry = [e for e in events if e["kind"] == "step_retry"]
    assert len(retry) == 1


def test_a_step_that_may_not_be_retried_fails_resumably_naming_the_lost_connection(
    home, server_url
):
    use_target(home, server_url)
    config = _read_tool(home, server_url, idempotent=False)
    result, killed = _run_with_a_kill(config, server_url)
    assert killed
    assert result.status == "failed"
    error = result.steps[0].error or ""
    assert "lost the connection to target 'db'" in error
    assert f"aishell resume {result.run_id}" in error
    assert "internal error" not in (result.error or "")
    # Its effect is unknown and it may not run twice: a person decides, then it goes on.
    held = commands.resume_run(config, result.run_id, approver=PreApproved())
    assert held.status == "waiting_approval"
    assert "not idempotent" in (held.steps[0].error or "")
    commands.decide_steps(config, result.run_id, "approved", step=0)
    resumed = commands.resume_run(config, result.run_id, approver=PreApproved())
    assert resumed.status == "completed", resumed.error


@pytest.fixture(autouse=True)
def _no_stray_sessions(server_url):
    yield
    # Whatever the test did, no aishell session stays on its database.
    database = make_url(server_url).database
    if server_url.startswith("postgresql"):
        admin = engine(PG_ADMIN)
        count = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
            "AND application_name = 'aishell'"
        )
    else:
        admin = engine(MYSQL_ADMIN)
        count = "SELECT count(*) FROM information_schema.processlist WHERE db = :db"
    with admin.connect() as conn:
        left = conn.execute(text(count), {"db": database}).scalar()
    admin.dispose()
    assert left == 0


def _kill_session(url: str, session: int) -> None:
    admin = engine(PG_ADMIN if url.startswith("postgresql") else MYSQL_ADMIN)
    try:
        with admin.connect() as conn:
            # Both servers end the session after the call returns; wait until it is
            # gone, so that what it held (a lock) is free when the caller looks.
            if url.startswith("postgresql"):
                conn.execute(text("SELECT pg_terminate_backend(:p, 10000)"), {"p": session})
            else:
                conn.execute(text(f"KILL CONNECTION {int(session)}"))
                deadline = time.monotonic() + 10
                gone = text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :p")
                while conn.execute(gone, {"p": session}).scalar() and time.monotonic() < deadline:
                    time.sleep(0.02)
    finally:
        admin.dispose()


def _own_session(conn: Any, url: str) -> int:
    query = "SELECT pg_backend_pid()" if url.startswith("postgresql") else "SELECT CONNECTION_ID()"
    return int(conn.execute(text(query)).scalar())


def test_a_connection_opened_mid_step_is_held_to_what_is_left_of_the_step(
    server_config, server_url
):
    # The server's own statement limit lives in the session: a reconnect after a
    # terminated backend must not leave the rest of the step without one.
    postgresql = server_url.startswith("postgresql")
    show = "SHOW statement_timeout" if postgresql else "SELECT @@session.max_statement_time"
    handle = open_target(server_config, "db")
    try:
        conn = handle.connect()
        with step_deadline(conn, 30, "a test step"):
            first = conn.execute(text(show)).scalar()
            _kill_session(server_url, _own_session(conn, server_url))
            with pytest.raises(DBAPIError):
                conn.execute(text("SELECT 1")).scalar()
            conn.rollback()
            again = conn.execute(text(show)).scalar()
        conn.close()
        handle.engine.dispose()  # a new session, opened outside any step
        fresh = handle.connect()
        outside = fresh.execute(text(show)).scalar()
        fresh.close()
    finally:
        handle.close()
    if postgresql:
        assert first == "30s"
        assert again.endswith("ms") and 20_000 < int(again[:-2]) <= 30_000, again
        assert outside == "0"  # outside a step, no statement limit is inherited
    else:
        assert float(first) == 30
        assert 20 < float(again) <= 30, again
        assert float(outside) == 0
