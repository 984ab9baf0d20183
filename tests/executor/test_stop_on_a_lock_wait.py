"""`aishell stop` ends a step whose statement waits for a lock another session holds.

A stop asked with `aishell stop` lets a statement the server runs end. A statement that
only waits for a lock (PostgreSQL's `wait_event_type` 'Lock'; on MariaDB a metadata lock
wait, or an InnoDB row lock wait) has nothing to finish until the other session lets go:
it waited out the target's `lock_timeout_ms`, which a DBA may set to minutes. Now the
stop cancels it as it cancels a statement gone silent: the step ends interrupted, the
run is resumable, and once the lock is let go `aishell resume` completes it. A statement
that works when the stop comes is asked about again each second, so one that comes to
wait for a lock later ends then too.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from tests.executor.test_stop_on_a_silent_statement import _the_run
from tests.handlers.purge.test_purge_faults import Purge, _resume_and_check, purge_on
from tests.handlers.purge.test_purge_row_held import _an_old_row_past_the_middle, _held
from tests.helpers import one_step_plan
from tests.services import engine
from tests.targets.test_limits import HANG, configure, dialect_of, make_locked_table

# The target's lock wait: without the stop reaching it, the step waits this long.
LOCK_TIMEOUT_MS = 120_000
# From the stop's request to the run's end: two polls of the store, the server asked,
# the cancel, the run lock's release; generous for a loaded two-core machine, far
# under the lock wait.
BOUND = 15
# The sleep a stop lets end.
SLEEP = 4
# How long the statement that works before it waits works (a sleep on each row before
# the locked one): well past the watcher's first question.
WORK = 6

TOUCH_LOCKED = {
    "name": "touch_locked",
    "description": "Rewrite a row of the table the test locks.",
    "category": "maintenance",
    "risk_level": "medium",
    "required_capabilities": ["database_read", "database_write"],
    "max_execution_time": 600,
    "idempotent": True,
    "params": {"type": "object", "properties": {}},
    "returns": {"type": "object"},
    "examples": [{"params": {}}],
    "implementations": {
        "postgresql": {"sql": "UPDATE locked SET id = id WHERE id = 1", "result": "none"},
        "mysql": {"sql": "UPDATE locked SET id = id WHERE id = 1", "result": "none"},
    },
    "locks": {
        "postgresql": [{"lock": "ROW EXCLUSIVE", "object": "table", "held": "while updated"}],
        "mysql": [{"lock": "SHARED_WRITE", "object": "table", "held": "while updated"}],
    },
}

# Rewrites row 1 after working WORK seconds: on PostgreSQL a sleep in its condition, on
# MariaDB a derived table's (made before a row is read, so before the row is locked).
TOUCH_SLOWLY = {
    **TOUCH_LOCKED,
    "name": "touch_slowly",
    "implementations": {
        "postgresql": {
            "sql": f"UPDATE locked SET id = id WHERE id = 1 AND pg_sleep({WORK}) IS NOT NULL",
            "result": "none",
        },
        "mysql": {
            "sql": "UPDATE locked SET id = id "
            f"WHERE id = (SELECT w.one FROM (SELECT 1 AS one, SLEEP({WORK})) AS w)",
            "result": "none",
        },
    },
}

# (tool the step runs, the start of its statement, what the other session holds, seconds
# the statement works before it waits)
CASES = {
    "table_lock": ("count_locked", "%count(*) AS n FROM locked%", "table", 0),
    "row_lock": ("touch_locked", "%UPDATE locked%", "row", 0),
    "row_lock_after_work": ("touch_slowly", "%UPDATE locked%", "row", WORK),
}


class Holder:
    """A session of the test's own holding a lock on `locked` until let go: the whole
    table (PostgreSQL's LOCK TABLE; MariaDB's LOCK TABLES, a metadata lock), or row 1
    (an uncommitted update)."""

    def __init__(self, url: str, what: str) -> None:
        self.engine = engine(url)
        self.conn = self.engine.connect()
        # The engine commits each statement: the transaction is begun by hand.
        if what == "row":
            self.conn.execute(text("BEGIN"))
            self.conn.execute(text("UPDATE locked SET id = id WHERE id = 1"))
        elif url.startswith("postgresql"):
            self.conn.execute(text("BEGIN"))
            self.conn.execute(text("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE"))
        else:
            self.conn.execute(text("LOCK TABLES locked WRITE"))

    def release(self) -> None:
        try:
            if self.conn.dialect.name == "mysql":
                self.conn.execute(text("UNLOCK TABLES"))
            self.conn.execute(text("ROLLBACK"))
            self.conn.close()
        finally:
            self.engine.dispose()


def _add_tool(home: Any) -> None:
    for tool in (TOUCH_LOCKED, TOUCH_SLOWLY):
        (home / "site_tools" / f"{tool['name']}.yaml").write_text(yaml.safe_dump(tool))


def _when_on_server(url: str, waiting: bool, query: str) -> None:
    """Returns once a session of the test's database runs a statement like `query`,
    waiting for a lock (`waiting`) or working."""
    database = url.rsplit("/", 1)[1]
    if url.startswith("postgresql"):
        sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND state = 'active' "
        sql += "AND COALESCE(wait_event_type = 'Lock', false) = :waiting AND query LIKE :q"
        asked = {"db": database, "q": query, "waiting": waiting}
    else:
        sql = "SELECT count(*) FROM information_schema.processlist WHERE db = :db AND info LIKE :q"
        sql += " AND (state LIKE 'Waiting for %%lock' OR id IN (SELECT trx_mysql_thread_id "
        sql += "FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT')) = :waiting"
        asked = {"db": database, "q": query, "waiting": waiting}
    admin = engine(url)
    try:
        with admin.connect() as conn:
            for _ in range(HANG * 20):
                if conn.execute(text(sql), asked).scalar():
                    return
                time.sleep(0.05)
    finally:
        admin.dispose()
    raise AssertionError("the server never ran the step's statement")


# MariaDB's INNODB_TRX has been seen not to show a row lock's waiter for a minute (its
# thread's state "Updating"), where a stop then lets the statement wait as work: its row
# locks are not among the cases a stop must end in seconds (README says so).
SHOWN_WAITS = [
    (dialect, case)
    for dialect in ("postgresql", "mysql")
    for case in sorted(CASES)
    if dialect == "postgresql" or CASES[case][2] != "row"
]


@pytest.mark.parametrize(("dialect", "case"), SHOWN_WAITS)
def test_aishell_stop_ends_a_statement_waiting_for_a_lock(home, dialect, case, request):
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    tool, statement, what, work = CASES[case]
    make_locked_table(url)
    config = configure(
        home, url, agent={"max_execution_time": 600}, lock_timeout_ms=LOCK_TIMEOUT_MS
    )
    _add_tool(home)
    plan = one_step_plan("maintenance", "db", dialect_of(url), tool, {})
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["result"] = commands.apply_plan(config, plan, approver=PreApproved())

    holder = Holder(url, what)
    try:
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        _when_on_server(url, waiting=not work, query=statement)
        asked = time.monotonic()
        commands.stop_run(config, _the_run(config))
        worker.join(work + BOUND)
        took = time.monotonic() - asked
        assert not worker.is_alive(), (
            f"the run still waits for the lock {took:.0f} s after the stop"
        )
    finally:
        holder.release()
    first = outcome["result"]
    assert took < work + BOUND, took
    assert first.status == "interrupted", first.error
    step = first.steps[0]
    assert step.status == "interrupted", step
    assert step.error.startswith("stopped by ") and "with `aishell stop`" in step.error, step
    assert first.error.endswith(f"continue with `aishell resume {first.run_id}`"), first.error

    done = commands.resume_run(config, first.run_id)
    assert done.status == "completed", done.error


@pytest.mark.parametrize("dialect", ["postgresql"])  # a row lock's wait: SHOWN_WAITS
def test_aishell_stop_ends_a_purge_batch_waiting_for_a_row(home, dialect):
    """A purge's batch is let to end at a stop; one that waits for a row another session
    holds is cancelled instead, the step interrupted, and resume deletes each old row
    once after the row is let go."""
    with purge_on(dialect, None, home) as purge:
        _long_lock_waits(purge)
        row = _an_old_row_past_the_middle(purge)
        outcome: dict[str, Any] = {}

        def run() -> None:
            job = purge.job(walk="keys") if dialect == "postgresql" else purge.job()
            outcome["result"] = commands.run_job(purge.config, "log_cleanup", job)

        with _held(purge, row):
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            _when_on_server(purge.url, waiting=True, query="%events%")
            asked = time.monotonic()
            commands.stop_run(purge.config, _the_run(purge.config))
            worker.join(BOUND)
            took = time.monotonic() - asked
            assert not worker.is_alive(), f"the purge still waits {took:.0f} s after the stop"
        stopped = outcome["result"]
        assert stopped.status == "interrupted", stopped.error
        assert stopped.steps[1].status == "interrupted", stopped.steps[1]
        _resume_and_check(purge, stopped.run_id)


def _long_lock_waits(purge: Purge) -> None:
    path = purge.home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["lock_timeout_ms"] = LOCK_TIMEOUT_MS
    path.write_text(yaml.safe_dump(data))


@contextmanager
def _user_without_process(url: str) -> Iterator[str]:
    """The URL of the scratch database for a user of the test's own with every privilege
    on it and none server-wide (no PROCESS: MariaDB's INNODB_TRX is refused to it)."""
    name = f"aishell_np_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    database = url.rsplit("/", 1)[1]
    root = engine(url)
    user = f"'{name}'@'%'"
    try:
        with root.connect() as conn:
            conn.execute(text(f"CREATE USER {user} IDENTIFIED BY :pw"), {"pw": password})
            conn.execute(text(f"GRANT ALL ON `{database}`.* TO {user}"))
        yield (
            make_url(url)
            .set(username=name, password=password)
            .render_as_string(hide_password=False)
        )
    finally:
        with root.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS {user}"))
        root.dispose()


def test_without_the_process_privilege_a_working_statement_still_ends(home, mysql_url):
    """A MariaDB user without PROCESS cannot read INNODB_TRX: the process list alone is
    asked, so a statement that works (a sleep) is still let to end at a stop, and one
    waiting for a metadata lock is still cancelled."""
    make_locked_table(mysql_url)
    with _user_without_process(mysql_url) as url:
        config = configure(
            home, url, agent={"max_execution_time": 600}, lock_timeout_ms=LOCK_TIMEOUT_MS
        )
        steps = (
            Step("step_0", "sleep_read", {"seconds": SLEEP}),
            Step("step_1", "count_locked", {}),
        )
        plan = Plan("maintenance", "db", "mysql", {"type": "sleeps"}, steps)
        holder = Holder(mysql_url, "table")
        try:
            first = _stopped(
                config,
                lambda: commands.apply_plan(config, plan, approver=PreApproved()),
                lambda: _when_on_server(mysql_url, False, "%SLEEP(%"),
            )
            assert [s.status for s in first.steps] == ["succeeded", "pending"], first.steps
            second = _stopped(
                config,
                lambda: commands.resume_run(config, first.run_id),
                lambda: _when_on_server(mysql_url, True, "%FROM locked%"),
            )
            assert [s.status for s in second.steps] == ["succeeded", "interrupted"]
        finally:
            holder.release()
        done = commands.resume_run(config, first.run_id)
        assert done.status == "completed", done.error


def _stopped(config: Any, run: Callable[[], Any], ready: Callable[[], None]) -> Any:
    """What run() gives when `aishell stop` is asked once ready() returns; it must end
    within SLEEP + BOUND of the stop."""
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(result=run()), daemon=True)
    worker.start()
    ready()
    asked = time.monotonic()
    commands.stop_run(config, _the_run(config))
    worker.join(SLEEP + BOUND)
    took = time.monotonic() - asked
    assert not worker.is_alive(), f"the run still goes on {took:.0f} s after the stop"
    result = outcome["result"]
    assert result.status == "interrupted", result.error
    return result
