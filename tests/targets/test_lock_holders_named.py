"""A lock timeout while a step is prepared (its catalog reads, its estimate, the archive
table's shape) is tried again within the lock wait and then fails the step with one
line naming the holder: its session id, user, program, state, statement and how long.
Before, a purge held up this way failed the run with "once the server answers" and no
holder, on the first timeout.

Every lock is held by a session the test opens, on a scratch database of its own.
Time bound: the target's lock wait is 300 ms, tried 4 times with backoff of at most
0.2 s doubling; each run takes a few seconds, each test allows 60 s.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pymysql
import pytest
from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.handlers.purge.test_log_cleanup import _events, fill, job
from tests.helpers import one_step_plan

BOUND_SECONDS = 60


def _config(edit_config: Any, url: str) -> Config:
    return edit_config(
        {
            "targets": {"db": {"url": url, "environment": "test", "lock_timeout_ms": 300}},
            "default_target": "db",
        },
        log_cleanup={"default_config": {"max_retries": 3, "retry_backoff_seconds": 0.2}},
    )


@contextmanager
def _held(url: str, table: str, program: str) -> Iterator[int]:
    """A session of the test's own holding `table` exclusively; its id."""
    u = make_url(url)
    if u.get_backend_name() == "postgresql":
        conn = psycopg.connect(
            host=u.host, port=u.port or 5432, user=u.username, dbname=u.database,
            autocommit=True, application_name=program,
        )  # fmt: skip
        try:
            conn.execute("BEGIN")
            conn.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
            yield int(conn.info.backend_pid)
        finally:
            conn.close()
        return
    my = pymysql.connect(
        host=u.host, port=u.port or 3306, user=u.username, database=u.database, autocommit=True
    )
    try:
        with my.cursor() as cur:
            cur.execute(f"LOCK TABLES `{table}` WRITE")
        yield int(my.thread_id())
    finally:
        my.close()


def _archive_table(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        _events(MetaData(), "events_archive").create(conn)
    engine.dispose()


@pytest.mark.parametrize("held", ["events", "events_archive"])
def test_a_purge_held_while_prepared_names_its_holder(server_url, edit_config, held):
    fill(server_url)
    _archive_table(server_url)
    config = _config(edit_config, server_url)
    program = f"holder-{uuid.uuid4().hex[:8]}"
    postgresql = server_url.startswith("postgresql")
    started = time.monotonic()
    with _held(server_url, held, program) as holder:
        result = commands.run_job(
            config, "log_cleanup", job(archive_to="table:events_archive"), approver=PreApproved()
        )
    assert time.monotonic() - started < BOUND_SECONDS

    assert result.status == "failed"
    failed = [s for s in result.steps if s.status == "failed"]
    assert len(failed) == 1, [(s.tool, s.status) for s in result.steps]
    error = failed[0].error or ""
    # The purged table is read first, while the step is prepared; the archive table's
    # lock stops the first batch, and the step's own retries wait for it.
    assert "after 4 attempt(s)" in error, error
    assert ("could not be prepared" in error) == (held == "events"), error
    assert "once the server answers" not in (result.error or "")
    if postgresql:
        assert f"pid {holder} (" in error and program in error, error
        assert "idle in transaction" in error and "LOCK TABLE" in error, error
    else:
        assert f"connection {holder} (" in error and "Sleep for " in error, error
    # The purge deleted nothing: no step that writes ran.
    assert all(s.status in ("pending", "failed", "succeeded") for s in result.steps)
    assert not any(s.tool == "delete_old_records" and s.status == "succeeded" for s in result.steps)


def test_a_lock_released_within_the_wait_lets_the_run_go_on(server_url, edit_config):
    fill(server_url)
    config = _config(edit_config, server_url)
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with _held(server_url, "events", f"holder-{uuid.uuid4().hex[:8]}"):
            holding.set()
            release.wait(BOUND_SECONDS)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(BOUND_SECONDS)
        # Released after the first timeout, well within the 4 tries.
        threading.Timer(0.8, release.set).start()
        started = time.monotonic()
        result = commands.run_job(config, "log_cleanup", job(), approver=PreApproved())
        assert time.monotonic() - started < BOUND_SECONDS
    finally:
        release.set()
        holder.join(BOUND_SECONDS)
    assert result.status == "completed", result.error
    assert result.steps[0].status == "succeeded"


def test_postgresql_a_table_held_during_its_corruption_check_names_the_holder(pg_url, edit_config):
    """The check's read of a table another session holds times out: the table is not
    checked, and the reason names the holder (amcheck or not, the read waits)."""
    fill(pg_url)
    config = _config(edit_config, pg_url)
    plan = one_step_plan(
        "maintenance", "db", "postgresql", "check_table_corruption", {"tables": ["events"]}
    )
    program = f"holder-{uuid.uuid4().hex[:8]}"
    with _held(pg_url, "events", program) as holder:
        started = time.monotonic()
        result = commands.apply_plan(config, plan, approver=PreApproved())
        assert time.monotonic() - started < BOUND_SECONDS
    [step] = result.steps
    reasons = {u["table"]: u["reason"] for u in (step.output or {}).get("unchecked_tables", [])}
    why = reasons.get("events") or step.error or ""
    assert "lock timeout" in why and f"the lock is held by pid {holder} (" in why, why
    assert program in why, why
