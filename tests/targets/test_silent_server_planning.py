"""The run's time limit covers its planning, also on a server that stopped answering.

A proxy the test owns forwards to the real server until planning's catalog read of the
tables' statistics reaches it, then keeps it from the server and freezes: nothing more
reaches either side, a cancel request included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.errors import EXIT_DENIED, AishellError
from aishell.policy.approvers import PreApproved
from tests.faultproxy import Proxy, server_port, through
from tests.services import engine, scratch_postgresql
from tests.targets.test_limits import HANG, configure, in_thread

# The run's limit comes while planning waits on the frozen server: after planning
# reached its read (seconds in, on a loaded machine: up to 2.7 s at a load of 7 on two
# cores, more for a worker's first run) and before that read's own wait for an answer
# (READ_TIMEOUT, from the read's start) ran out. The command ends when that wait does,
# about READ_TIMEOUT after the read began.
RUN_LIMIT = 9
READ_TIMEOUT = 11
# A loaded machine's start-up and bookkeeping.
SLACK = 15
# From SIGINT to the command's end: psycopg's own cancel took ten seconds.
INTERRUPT_BOUND = 4


@pytest.fixture
def fixsil_pg() -> Iterator[str]:
    with scratch_postgresql(name=f"fixsil_{uuid.uuid4().hex[:10]}") as url:
        made = engine(url)
        with made.begin() as conn:
            conn.execute(text("CREATE TABLE fixsil_t (id int PRIMARY KEY, v text)"))
            conn.execute(text("INSERT INTO fixsil_t SELECT g, 'x' FROM generate_series(1, 50) g"))
        made.dispose()
        yield url


def test_the_run_time_limit_ends_planning_on_a_frozen_server(home, fixsil_pg):
    """Planning's read of pg_stat_user_tables never gets its answer. At the run's limit
    the read is cancelled and cut off within read_timeout_seconds; the command ends
    interrupted (exit 4) naming --max-run-time, and no run was recorded."""
    proxy = Proxy(server_port(fixsil_pg))
    try:
        config = configure(
            home,
            through(proxy.port, fixsil_pg),
            read_timeout_seconds=READ_TIMEOUT,
            connect_timeout_seconds=2,
        )
        proxy.hold(b"pg_stat_user_tables")
        started = time.monotonic()
        with pytest.raises(AishellError) as err:
            in_thread(
                lambda: commands.run_job(
                    config,
                    "maintenance",
                    {"type": "full"},
                    approver=PreApproved(),
                    max_run_seconds=RUN_LIMIT,
                )
            )
        took = time.monotonic() - started
        assert proxy.held_once.is_set(), "planning never read pg_stat_user_tables"
    finally:
        proxy.close()
    message = str(err.value)
    assert message.startswith(
        f"interrupted by the run-time limit of {RUN_LIMIT} s (--max-run-time) while planning, "
        "before any run was recorded: nothing was changed"
    ), message
    assert err.value.exit_code == EXIT_DENIED
    assert took < RUN_LIMIT + READ_TIMEOUT + SLACK, took
    assert commands.list_runs(config, limit=5) == []


def test_a_limit_past_planning_leaves_planning_alone(home, fixsil_pg):
    """A limit that comes after planning read what it needed starts the run as before
    (it then completes, well within its limit)."""
    config = configure(home, fixsil_pg, read_timeout_seconds=READ_TIMEOUT)
    result = in_thread(
        lambda: commands.run_job(
            config,
            "maintenance",
            {"type": "quick", "tables": ["fixsil_t"]},
            approver=PreApproved(),
            max_run_seconds=HANG,
        )
    )
    assert result.status == "completed", result.error


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_while_planning_waits_on_a_frozen_server_ends_at_once(home, fixsil_pg, stop):
    """`aishell plan` waits on planning's catalog read when SIGINT or SIGTERM comes: the
    command ends within seconds, interrupted (exit 4), in one line naming the signal,
    without psycopg's own cancel (and its warnings) on the frozen server. Before, SIGTERM
    ended it by the signal's default: nothing said, no exit code of aishell's."""
    proxy = Proxy(server_port(fixsil_pg))
    try:
        configure(
            home,
            through(proxy.port, fixsil_pg),
            read_timeout_seconds=HANG,
            connect_timeout_seconds=2,
        )
        proxy.hold(b"pg_stat_user_tables")
        child = subprocess.Popen(
            [sys.executable, "-m", "aishell", "plan", "maintenance", "--type", "full"],
            env={**os.environ, "AISHELL_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proxy.held_once.wait(HANG), child.communicate(timeout=HANG)
            proxy.freeze()
            time.sleep(0.5)  # the read waits on the frozen proxy
            child.send_signal(stop)
            sent = time.monotonic()
            _out, err = child.communicate(timeout=HANG)
            took = time.monotonic() - sent
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    finally:
        proxy.close()
    assert took < INTERRUPT_BOUND, (took, err)
    assert child.returncode == EXIT_DENIED, (child.returncode, err)
    assert err.strip().splitlines() == [f"Error: interrupted by {stop.name}"], err


@pytest.mark.parametrize("marker", [b"aishell_fn", b"pg_catalog.pg_trigger"])
def test_a_plan_whose_measure_meets_a_silent_server_ends_in_one_line(home, fixsil_pg, marker):
    """The preview's look for code the server would run (the functions a statement
    calls, a table's triggers) gets no answer: the plan ends naming read_timeout_seconds.
    Before, the preview took the lost connection's error for the step's refusal and read
    on over it: an internal error (PendingRollbackError)."""
    proxy = Proxy(server_port(fixsil_pg))
    try:
        config = configure(
            home,
            through(proxy.port, fixsil_pg),
            read_timeout_seconds=2,
            connect_timeout_seconds=2,
        )
        proxy.freeze_once_held(marker)
        with pytest.raises(AishellError) as raised:
            in_thread(lambda: commands.plan_job(config, "maintenance", {"type": "full"}))
        assert proxy.held_once.is_set(), f"planning never sent {marker!r}"
    finally:
        proxy.close()
    said = str(raised.value)
    assert "read_timeout_seconds" in said and "\n" not in said, said


def test_a_mariadb_plan_whose_connection_reset_meets_a_silent_server_ends_in_one_line(home):
    """The pool's reset of planning's read-only connection once the catalog is read (its
    isolation level set back, past the statements' error hook) gets no answer: the plan
    ends naming read_timeout_seconds, not in the driver's own error (an internal error)."""
    from tests.services import scratch_mysql

    with scratch_mysql() as url:
        made = engine(url)
        with made.begin() as conn:
            conn.execute(text("CREATE TABLE fixsil_t (id int PRIMARY KEY, v text)"))
        made.dispose()
        proxy = Proxy(server_port(url))
        try:
            config = configure(
                home, through(proxy.port, url), read_timeout_seconds=2, connect_timeout_seconds=2
            )
            proxy.freeze_once_held(b"AUTOCOMMIT = 0", after=(b"information_schema.TABLES",))
            with pytest.raises(AishellError) as raised:
                in_thread(lambda: commands.plan_job(config, "maintenance", {"type": "quick"}))
            assert proxy.held_once.is_set(), "the connection was never reset"
        finally:
            proxy.close()
    said = str(raised.value)
    assert "read_timeout_seconds" in said and "\n" not in said, said
