"""The run's time limit ends a run whose connect waits on a server that accepts TCP and
never answers: a purge reconnecting after its session was lost, planning's first
connect, the run's first connect after planning. The driver's connect would wait its
whole connect_timeout_seconds (set far longer here than the limit), and a connection
lost before it would connect again when its error was said; the run ends soon after its
limit instead, stopped by the limit, and resumes once the server answers."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.errors import AishellError, PlanningStopped
from aishell.executor.loop import Executor
from aishell.policy.approvers import PreApproved
from aishell.state.store import StateStore
from aishell.targets.engines import open_target
from aishell.targets.limits import limits_of
from tests.faultproxy import Proxy, server_port, through
from tests.handlers.purge.test_log_cleanup import ROWS, fill
from tests.services import engine, scratch_server
from tests.targets.test_limits import configure, in_thread

# The limit is short, the connect's bound long: a run that waited on the connect would
# end CONNECT_TIMEOUT after it began, at the earliest. The limit leaves a loaded machine
# time to plan and begin the purge; the read timeout, to answer the reads before it.
LIMIT = 12
CONNECT_TIMEOUT = 120
READ_TIMEOUT = 5
PURGE = {"table": "events", "retention_days": 30, "max_batch_size": 50}


def _count(url: str) -> int:
    made = engine(url)
    try:
        with made.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM events")).scalar_one())
    finally:
        made.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_the_run_limit_ends_a_purge_reconnecting_to_a_silent_server(
    home: Path, dialect: str
) -> None:
    with scratch_server(dialect) as url:
        fill(url)
        proxy = Proxy(server_port(url))
        try:
            config = configure(
                home,
                through(proxy.port, url),
                read_timeout_seconds=READ_TIMEOUT,
                connect_timeout_seconds=CONNECT_TIMEOUT,
            )
            # The purge's first DELETE never reaches the server: its session is cut and
            # the server falls silent, so every connect from then on waits unanswered.
            proxy.hold(b"DELETE")

            def lose_and_freeze() -> None:
                if proxy.held_once.wait(CONNECT_TIMEOUT):
                    proxy.freeze()
                    proxy.cut()

            threading.Thread(target=lose_and_freeze, daemon=True).start()
            began = time.monotonic()
            result = in_thread(
                lambda: commands.run_job(
                    config, "log_cleanup", PURGE, approver=PreApproved(), max_run_seconds=LIMIT
                )
            )
            took = time.monotonic() - began
        finally:
            proxy.close()
        assert proxy.held_once.is_set(), result.error
        assert took < CONNECT_TIMEOUT, (took, result.error)
        assert result.status == "interrupted", result.error
        assert result.error.startswith(f"interrupted by the run-time limit of {LIMIT} s"), (
            result.error
        )
        assert not any(step.status == "running" for step in result.steps), result.steps
        assert _count(url) == ROWS  # the held DELETE never ran

        # Once the server answers again, resume goes on and finishes the purge.
        resumed_config = configure(home, url)
        resumed = in_thread(lambda: commands.resume_run(resumed_config, result.run_id))
        assert resumed.status == "completed", resumed.error
        assert _count(url) < ROWS


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_the_run_limit_ends_planning_that_waits_to_connect(home: Path, dialect: str) -> None:
    with scratch_server(dialect) as url:
        fill(url)
        proxy = Proxy(server_port(url))
        proxy.freeze()  # accepts TCP, never answers: the first connect waits
        try:
            config = configure(
                home,
                through(proxy.port, url),
                read_timeout_seconds=READ_TIMEOUT,
                connect_timeout_seconds=CONNECT_TIMEOUT,
            )
            began = time.monotonic()
            with pytest.raises(PlanningStopped) as stopped:
                in_thread(
                    lambda: commands.run_job(
                        config, "log_cleanup", PURGE, max_run_seconds=LIMIT, dry_run=True
                    )
                )
            took = time.monotonic() - began
        finally:
            proxy.close()
    assert took < CONNECT_TIMEOUT, (took, str(stopped.value))
    message = str(stopped.value)
    assert message.startswith(f"interrupted by the run-time limit of {LIMIT} s"), message
    assert "nothing was changed" in message and "connect" in message, message


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_the_run_limit_ends_a_run_whose_first_connect_waits(
    home: Path, dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with scratch_server(dialect) as url:
        fill(url)
        proxy = Proxy(server_port(url))
        opened = Executor._tool_context

        def silent_first(self: Executor, run_id: str, dry: bool) -> Any:
            # Planning is done and the run recorded: the server goes silent, and the
            # planning's connection with it, so the run's first step connects anew.
            proxy.freeze()
            proxy.cut()
            return opened(self, run_id, dry)

        monkeypatch.setattr(Executor, "_tool_context", silent_first)
        try:
            config = configure(
                home,
                through(proxy.port, url),
                read_timeout_seconds=READ_TIMEOUT,
                connect_timeout_seconds=CONNECT_TIMEOUT,
            )
            began = time.monotonic()
            with pytest.raises(AishellError) as stopped:
                in_thread(
                    lambda: commands.run_job(
                        config, "log_cleanup", PURGE, approver=PreApproved(), max_run_seconds=LIMIT
                    )
                )
            took = time.monotonic() - began
        finally:
            proxy.close()
    message = str(stopped.value)
    assert took < CONNECT_TIMEOUT, (took, message)
    assert message.startswith(f"interrupted by the run-time limit of {LIMIT} s"), message
    found = re.search(r"`aishell resume ([0-9a-f]+)`", message)
    assert found, message
    with StateStore(config.state_url) as store:
        run = store.get_run(found.group(1))
    assert run["status"] == "interrupted", run
    assert run["error"] == message


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_stopped_run_still_connects_to_an_answering_server(home: Path, dialect: str) -> None:
    # What a stop's bookkeeping connects for (a client program's session to end, the
    # scratch to clean) is given up only on a server that does not answer.
    with scratch_server(dialect) as url:
        config = configure(home, url, connect_timeout_seconds=CONNECT_TIMEOUT)
        handle = open_target(config, "db")
        try:
            limits = limits_of(handle.engine)
            assert limits is not None
            limits.stop()
            with handle.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar_one() == 1
            assert limits.connects_given_up == 0
        finally:
            handle.close()
