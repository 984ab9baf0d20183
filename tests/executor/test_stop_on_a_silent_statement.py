"""`aishell stop` ends a run whose statement's connection went silent, and still lets a
statement the server runs end.

A stop asked with `aishell stop` lets the running statement end. A statement whose
connection went silent (here a proxy the test owns keeps it from the server, while the
run lock's session and every other connection answer, as when a NAT dropped one flow)
never ends: the stop waited out the step's whole limit. Now, once the stop is seen
while a statement waits, the server is asked whether it runs that statement: it does
not, so the statement is cancelled and its socket closed, the step ends interrupted
naming the stop and the silence, and `aishell resume` completes the run. A statement
the server does run (the first step's sleep) is let to end, as before.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from aishell.state.store import StateStore
from tests.faultproxy import Proxy, server_port, through
from tests.services import engine
from tests.targets.test_limits import HANG, configure, dialect_of, in_thread

# The target's read timeout, and the connect's: the cut comes this long after the cancel.
READ_TIMEOUT = 1
# The step's limit: without the stop reaching it, the silent statement waits this long.
STEP_LIMIT = 40
# From the stop's request to the run's end: two polls of the store (a statement is
# looked at once it waited one), the server asked, the cancel's read timeout, the run
# lock's release; generous for a loaded two-core machine, well under STEP_LIMIT.
BOUND = 15
# The first step's sleep, which the server runs while the stop is asked: it is let to end.
RUNNING_SLEEP = 3


def _plan(url: str) -> Plan:
    sleep = {"seconds": RUNNING_SLEEP}
    steps = (Step("step_0", "sleep_read", sleep), Step("step_1", "sleep_read", {"seconds": 0.2}))
    return Plan("maintenance", "db", dialect_of(url), {"type": "sleeps"}, steps)


def _sleep_word(url: str) -> str:
    return "pg_sleep" if url.startswith("postgresql") else "SLEEP"


def _the_run(config: Config) -> str:
    """The run id of the one run in the test's store, once it is recorded."""
    with StateStore(config.state_url) as store:
        for _ in range(HANG * 10):
            found = store.list_runs()
            if found:
                return str(found[0]["run_id"])
            time.sleep(0.1)
    raise AssertionError("the run was never recorded")


def _when_the_server_runs(url: str, word: str) -> None:
    """Returns once the real server runs a statement holding `word` in the database."""
    database = url.rsplit("/", 1)[1]
    if url.startswith("postgresql"):
        sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND state = 'active' "
        sql += "AND query LIKE :q"
    else:
        sql = "SELECT count(*) FROM information_schema.processlist WHERE db = :db AND info LIKE :q"
    admin = engine(url)
    try:
        with admin.connect() as conn:
            for _ in range(HANG * 20):
                if conn.execute(text(sql), {"db": database, "q": f"SELECT {word}(%"}).scalar():
                    return
                time.sleep(0.05)
    finally:
        admin.dispose()
    raise AssertionError(f"the server never ran {word}")


def _stop_when(
    config: Config, ready: threading.Event | None, url: str, asked: list[float]
) -> threading.Thread:
    """Ask the run to stop with `aishell stop` once `ready` is set (or, without one,
    once the server runs the step's sleep); asked gets the time it was asked."""

    def stop() -> None:
        if ready is not None:
            assert ready.wait(HANG)
        else:
            _when_the_server_runs(url, _sleep_word(url))
        asked.append(time.monotonic())
        commands.stop_run(config, _the_run(config))

    stopper = threading.Thread(target=stop, daemon=True)
    stopper.start()
    return stopper


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_aishell_stop_ends_a_statement_whose_connection_went_silent(home, dialect, request):
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    proxy = Proxy(server_port(url))
    try:
        config = configure(
            home,
            through(proxy.port, url),
            agent={"max_execution_time": STEP_LIMIT},
            read_timeout_seconds=READ_TIMEOUT,
            connect_timeout_seconds=READ_TIMEOUT,
        )
        # The server runs the first step's sleep when the stop comes: it is let to end.
        asked: list[float] = []
        stopper = _stop_when(config, None, url, asked)
        first = in_thread(lambda: commands.apply_plan(config, _plan(url), approver=PreApproved()))
        stopper.join(HANG)
        assert first.status == "interrupted", first.error
        assert [s.status for s in first.steps] == ["succeeded", "pending"], first.steps
        assert first.error.startswith("stopped by "), first.error

        # The second step's sleep never reaches the server: its connection is silent.
        proxy.hold(f"{_sleep_word(url)}(".encode())
        asked.clear()
        stopper = _stop_when(config, proxy.held_once, url, asked)
        second = in_thread(lambda: commands.resume_run(config, first.run_id))
        ended = time.monotonic()
        stopper.join(HANG)
    finally:
        proxy.close()
    assert asked, "the stop was never asked"
    assert ended - asked[0] < BOUND, ended - asked[0]
    assert second.status == "interrupted", second.error
    step = second.steps[1]
    assert step.status == "interrupted", step
    assert step.error.startswith("stopped by ") and "with `aishell stop`; " in step.error
    assert step.error.endswith(
        f"did not answer the cancel within {READ_TIMEOUT} s "
        "(targets.db.read_timeout_seconds), so its connection was closed"
    ), step.error
    assert second.error.endswith(f"continue with `aishell resume {first.run_id}`")

    config = configure(home, url, agent={"max_execution_time": STEP_LIMIT})
    done = in_thread(lambda: commands.resume_run(config, first.run_id))
    assert done.status == "completed", done.error
