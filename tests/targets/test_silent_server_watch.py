"""A server that stops answering stops a run within read_timeout_seconds of silence:
a run's lock counts its silence from the check the server left unanswered, and a run
that holds no lock (a dry run) is watched the same way.

A proxy the test owns forwards to the real server until told to freeze: from then on
nothing reaches either side, a cancel request included.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from aishell import commands
from aishell.executor import stopping
from aishell.policy.approvers import PreApproved
from aishell.targets import locks
from aishell.targets.engines import open_target
from tests.faultproxy import Proxy, server_port, through
from tests.helpers import one_step_plan
from tests.services import scratch_mysql, scratch_postgresql
from tests.targets.test_limits import HANG, configure, dialect_of, in_thread
from tests.targets.test_silent_limits import freeze_at_the_sleep

# The lock's and the liveness watch's patience too: the check the frozen server leaves
# unanswered runs out after it, and finds the silence.
READ_TIMEOUT = 2
# libpq waits at least 2 s for a connection, whatever it is told.
CONNECT_TIMEOUT = 2
# A loaded machine's scheduling and bookkeeping.
SLACK = 12


@pytest.fixture(params=["postgresql", "mysql"])
def fixsil_url(request: pytest.FixtureRequest) -> Iterator[str]:
    scratch = scratch_postgresql if request.param == "postgresql" else scratch_mysql
    with scratch(name=f"fixsil_{uuid.uuid4().hex[:10]}") as url:
        yield url


def test_a_run_lock_on_a_frozen_server_is_lost_after_one_read_timeout(home, fixsil_url):
    """The lock's check is left unanswered for read_timeout_seconds, then a new session
    for connect_timeout_seconds: the server has been silent past the patience (one read
    timeout) since the check began, so the lock is lost at that first check."""
    proxy = Proxy(server_port(fixsil_url))
    config = configure(
        home,
        through(proxy.port, fixsil_url),
        read_timeout_seconds=READ_TIMEOUT,
        connect_timeout_seconds=CONNECT_TIMEOUT,
    )
    target = open_target(config, "db")
    try:
        lock = target.try_lock(f"fixsil:{uuid.uuid4().hex}")
        assert lock is not None
        proxy.freeze()
        started = time.monotonic()
        holds = in_thread(lock.holds)
        took = time.monotonic() - started
        assert holds is False, "a lock whose server answered nothing for its patience holds"
        assert took < READ_TIMEOUT + CONNECT_TIMEOUT + SLACK, took
        said = lock.silence()
        assert said is not None and said.startswith("the server stopped answering for "), said
        assert "(targets.db." in said, said
        lock.release()
    finally:
        proxy.close()
        target.close()


def test_a_lock_lost_on_a_frozen_server_says_the_server_stopped_answering(
    home, fixsil_url, monkeypatch
):
    """The run's statement waits on the frozen server; the lock's check finds the
    silence, and the run's error says so (not a session ended or a lock taken)."""
    monkeypatch.setattr(stopping, "LOCK_CHECK_SECONDS", 1.0)
    proxy = Proxy(server_port(fixsil_url))
    try:
        config = configure(
            home,
            through(proxy.port, fixsil_url),
            agent={"max_execution_time": 3600},
            read_timeout_seconds=READ_TIMEOUT,
            connect_timeout_seconds=CONNECT_TIMEOUT,
        )
        watcher = freeze_at_the_sleep(fixsil_url, proxy)
        plan = one_step_plan(
            "maintenance", "db", dialect_of(fixsil_url), "sleep_read", {"seconds": 3}
        )
        result = in_thread(lambda: commands.apply_plan(config, plan, approver=PreApproved()))
        watcher.join(HANG)
    finally:
        proxy.close()
    assert result.status == "interrupted", result.error
    assert result.error.startswith(
        "lost the run lock on target 'db': the server stopped answering for "
    ), result.error
    assert "so the run stopped before another run could share the database" in result.error
    assert result.error.endswith(f"continue with `aishell resume {result.run_id}`")


def test_a_dry_run_on_a_frozen_server_stops_within_its_read_timeouts(home, fixsil_url, monkeypatch):
    """A dry run takes no lock, and its step's statement may wait its step's whole limit
    (an hour here): the liveness watch finds the silence and stops the run, its error
    naming the server's silence and the setting. Bound, from the freeze: a check's
    interval, its read timeout, the cancel's read timeout, slack."""
    monkeypatch.setattr(stopping, "LOCK_CHECK_SECONDS", 1.0)
    # The watch opens its session on a thread of its own as the run starts: the freeze
    # waits for its first answer, else a loaded machine may freeze the proxy before that
    # session is up, and the silence is then found by its connect (the error naming
    # connect_timeout_seconds), not by a check on a live session.
    watching = threading.Event()
    holds = locks._Heartbeat.holds

    def watched(beat: locks._Heartbeat) -> bool:
        alive = holds(beat)
        if alive:
            watching.set()
        return alive

    monkeypatch.setattr(locks._Heartbeat, "holds", watched)
    proxy = Proxy(server_port(fixsil_url))
    froze: list[float] = []
    try:
        config = configure(
            home,
            through(proxy.port, fixsil_url),
            agent={"max_execution_time": 3600},
            read_timeout_seconds=READ_TIMEOUT,
            connect_timeout_seconds=CONNECT_TIMEOUT,
        )
        watcher = freeze_at_the_sleep(fixsil_url, proxy, watching)
        plan = one_step_plan(
            "maintenance", "db", dialect_of(fixsil_url), "sleep_read", {"seconds": 3}
        )

        def run() -> object:
            return commands.apply_plan(config, plan, approver=PreApproved(), dry_run=True)

        def note() -> None:
            if proxy.silent.wait(HANG):
                froze.append(time.monotonic())

        threading.Thread(target=note, daemon=True).start()
        result = in_thread(run)
        ended = time.monotonic()
        watcher.join(HANG)
    finally:
        proxy.close()
    assert froze, "the step's statement never ran"
    assert ended - froze[0] < 1 + 2 * READ_TIMEOUT + CONNECT_TIMEOUT + SLACK, ended - froze[0]
    assert result.status == "interrupted", result.error
    assert result.error.startswith("target 'db': the server stopped answering for "), result.error
    assert "(targets.db.read_timeout_seconds)" in result.error, result.error
    assert result.error.endswith(f"continue with `aishell resume {result.run_id}`")
    (step,) = result.steps
    assert step.status == "interrupted", step
