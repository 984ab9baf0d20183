"""Every limit ends the run, also when the server stopped answering mid-statement.

A proxy the test owns forwards to the real server until the step's statement runs on
it, then freezes: nothing more reaches either side, a cancel request included. The
run's time limit, SIGTERM, SIGINT and the loss of the run lock each end the run within
a stated bound (the stop, then the target's read_timeout_seconds for the cancel, then
slack for a loaded machine), the step recorded interrupted and the run interrupted
with its `aishell resume` hint; `aishell resume` against the answering server then
completes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from threading import Event, Thread
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.errors import EXIT_DENIED, ConfigError, StateError, TargetLocked
from aishell.executor import stopping
from aishell.policy.approvers import PreApproved
from aishell.state.serverstore import timeouts_of
from aishell.targets.deadlines import interrupt
from aishell.targets.engines import open_target
from tests.faultproxy import Proxy, Silent, server_port, through
from tests.helpers import one_step_plan
from tests.services import engine, scratch_mysql, scratch_postgresql
from tests.targets.test_lease import _kill, _lock_key, _lock_session
from tests.targets.test_limits import HANG, configure, dialect_of, in_thread, silence_when

# Started first in a worker's share (tests/conftest.py): it runs for a long while.
pytestmark = pytest.mark.slow

# The step's sleep (seconds): behind the frozen proxy it never reaches the server
# (freeze_at_the_sleep); resume then sleeps it whole.
SLEEP = 0.5
# The sleep a state store freezes during: the test's poll (0.05 s) must see it run.
STORE_SLEEP = 2
READ_TIMEOUT = 1
# Counted from commands.apply_plan's start (after a child's imports), which reached the
# step's statement up to 5.9 s later at a load of 9 on two cores; the limit must come
# while it waits on the frozen proxy, and no later than the lease's first round trip
# (stopping.LOCK_CHECK_SECONDS after the run's start), which would meet the frozen
# server: only the limit then stops the run.
RUN_LIMIT = 10
# In process: a worker's first run reached its step 6.7 s in at a load of 13 (a later
# one within 3 s).
IN_PROCESS_RUN_LIMIT = 8
# From the stop to the run's end: the cancel's wait (read_timeout_seconds), the socket
# closed, the run lock's release (read_timeout_seconds more on a silent server), the
# bookkeeping and, for a child, its start-up; generous for a loaded two-core machine.
SLACK = 20


def _sleep_of(url: str) -> str:
    return "SELECT pg_sleep" if url.startswith("postgresql") else "SELECT SLEEP"


def _sleep_plan(url: str, seconds: float = SLEEP) -> Any:
    return one_step_plan("maintenance", "db", dialect_of(url), "sleep_read", {"seconds": seconds})


@contextmanager
def frozen_midway(home: Path, url: str) -> Iterator[tuple[Config, Proxy, threading.Thread]]:
    """The target `db` through a proxy that freezes once the step's sleep runs on the
    real server; the proxy is closed afterwards (its server sessions with it)."""
    proxy = Proxy(server_port(url))
    try:
        config = configure(
            home,
            through(proxy.port, url),
            agent={"max_execution_time": 3600},
            read_timeout_seconds=READ_TIMEOUT,
            connect_timeout_seconds=READ_TIMEOUT,
        )
        yield config, proxy, freeze_at_the_sleep(url, proxy)
    finally:
        proxy.close()


def freeze_at_the_sleep(url: str, proxy: Proxy, ready: Event | None = None) -> Thread:
    """Keep the step's sleep from the server and freeze the proxy then (and once `ready`
    is set, if given): the statement waits for an answer that never comes, whatever the
    load (a freeze on seeing the sleep run could come after it ended, and the run's
    next round trip be the one frozen instead)."""
    proxy.hold(b"pg_sleep(" if url.startswith("postgresql") else b"SLEEP(")

    def watch() -> None:
        if proxy.held_once.wait(HANG) and (ready is None or ready.wait(HANG)):
            proxy.freeze()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def when_frozen(proxy: Proxy) -> list[float]:
    """A list that gets the time (time.monotonic()) the proxy froze: bounds count from
    there, not from a child's start-up, which a loaded machine makes slow."""
    froze: list[float] = []

    def watch() -> None:
        if proxy.silent.wait(HANG):
            froze.append(time.monotonic())

    threading.Thread(target=watch, daemon=True).start()
    return froze


def assert_stopped(config: Config, run_id: str, why: str, run_why: str | None = None) -> None:
    """The run and its step are stored interrupted, naming the stop (run_why: as the
    run's error says it, if not as the step's) and, for the step, the cancel the server
    never answered."""
    run = commands.show_run(config, run_id)
    assert run["status"] == "interrupted", run
    assert run["error"].startswith(run_why or why), run["error"]
    assert run["error"].endswith(f"continue with `aishell resume {run_id}`"), run["error"]
    (step,) = run["steps"]
    assert step["status"] == "interrupted", step
    assert step["error"] == (
        f"{why}; target 'db' did not answer the cancel within {READ_TIMEOUT} s "
        "(targets.db.read_timeout_seconds), so its connection was closed"
    ), step["error"]


def resume_on_the_real_server(home: Path, url: str, run_id: str) -> None:
    """`aishell resume` with the target's URL pointing at the server itself completes
    the run. The frozen sessions' server side may linger a moment after the proxy
    closed them (the run lock's among them): resume waits for the lock a few seconds."""
    config = configure(home, url, agent={"max_execution_time": 3600})
    deadline = time.monotonic() + 20
    while True:
        try:
            resumed = in_thread(lambda: commands.resume_run(config, run_id))
            break
        except TargetLocked:
            assert time.monotonic() < deadline, "the frozen run's lock was never let go"
            time.sleep(0.1)
    assert resumed.status == "completed", resumed.error
    assert resumed.steps[0].status == "succeeded"


# --- the run's time limit, in process ---------------------------------------------------


def test_the_run_time_limit_ends_a_run_on_a_frozen_server(home, server_url, monkeypatch):
    """Bound: IN_PROCESS_RUN_LIMIT + READ_TIMEOUT + SLACK seconds from the run's start. The lease's
    round trip every LOCK_CHECK_SECONDS would find the frozen server first (and stop the
    run as a lost lock, tested below): put off here, so that the time limit is what stops."""
    monkeypatch.setattr(stopping, "LOCK_CHECK_SECONDS", 3600.0)
    with frozen_midway(home, server_url) as (config, proxy, watcher):
        started = time.monotonic()
        result = in_thread(
            lambda: commands.apply_plan(
                config,
                _sleep_plan(server_url),
                approver=PreApproved(),
                max_run_seconds=IN_PROCESS_RUN_LIMIT,
            )
        )
        took = time.monotonic() - started
        watcher.join(HANG)
        assert proxy.silent.is_set(), "the step's statement never ran"
    assert took < IN_PROCESS_RUN_LIMIT + READ_TIMEOUT + SLACK, took
    assert result.status == "interrupted"
    assert_stopped(
        config,
        result.run_id,
        f"interrupted by the run-time limit of {IN_PROCESS_RUN_LIMIT} s (--max-run-time)",
    )
    resume_on_the_real_server(home, server_url, result.run_id)


# --- a child `aishell apply`: SIGTERM, SIGINT, --max-run-time ---------------------------------


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT", "--max-run-time"])
def test_a_child_run_on_a_frozen_server_ends_at_a_signal_or_its_time_limit(home, server_url, stop):
    """Bound: READ_TIMEOUT + SLACK seconds from the signal; RUN_LIMIT + READ_TIMEOUT +
    SLACK from the freeze for the time limit."""
    with frozen_midway(home, server_url) as (config, proxy, watcher):
        plan_file = home / "sleep.plan.json"
        commands.save_plan(config, _sleep_plan(server_url), plan_file)
        limit = ["--max-run-time", f"{RUN_LIMIT}s"] if stop == "--max-run-time" else []
        froze = when_frozen(proxy)
        child = subprocess.Popen(
            [sys.executable, "-m", "aishell", "apply", str(plan_file), "--non-interactive", *limit],
            env={**os.environ, "AISHELL_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            watcher.join(HANG)
            assert proxy.silent.is_set(), child.communicate(timeout=HANG)
            if stop == "--max-run-time":
                # The limit counts from the run's start, before the freeze.
                since = froze[0] if froze else time.monotonic()
                bound = RUN_LIMIT + READ_TIMEOUT + SLACK
            else:
                time.sleep(0.5)  # the statement waits on the frozen proxy
                child.send_signal(getattr(signal, stop))
                since, bound = time.monotonic(), READ_TIMEOUT + SLACK
            out, err = child.communicate(timeout=HANG)
            took = time.monotonic() - since
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert took < bound, (took, err)
    assert child.returncode == EXIT_DENIED, (child.returncode, out, err)
    (run,) = commands.list_runs(config, limit=1)
    # RUN_LIMIT comes before the lease's first round trip could meet the frozen server:
    # a run stopped as a lost lock here is a limit that did not stop it.
    assert RUN_LIMIT <= stopping.LOCK_CHECK_SECONDS
    why = (
        f"interrupted by the run-time limit of {RUN_LIMIT} s (--max-run-time)"
        if stop == "--max-run-time"
        else f"interrupted by {stop}"
    )
    assert_stopped(config, run["run_id"], why)
    resume_on_the_real_server(home, server_url, run["run_id"])


# --- the run lock's session lost -------------------------------------------------------------


def test_losing_the_run_lock_ends_a_run_on_a_frozen_server(home, server_url):
    """The run lock's session is ended on the server while the step's statement waits
    on the frozen proxy (the session's end still reaches the client: the proxy passes a
    closed connection on). Bound: READ_TIMEOUT + SLACK seconds from the kill."""
    with frozen_midway(home, server_url) as (config, proxy, watcher):
        key = _lock_key(config)
        killed: list[float] = []

        def kill_the_lock() -> None:
            watcher.join(HANG)
            for _ in range(100):
                session = _lock_session(server_url, key)
                if session is not None:
                    killed.append(time.monotonic())
                    _kill(server_url, session)
                    return
                time.sleep(0.1)

        killer = threading.Thread(target=kill_the_lock, daemon=True)
        killer.start()
        result = in_thread(
            lambda: commands.apply_plan(config, _sleep_plan(server_url), approver=PreApproved())
        )
        ended = time.monotonic()
        killer.join(HANG)
        assert proxy.silent.is_set() and killed, "the step's statement or the lock never seen"
    assert ended - killed[0] < READ_TIMEOUT + SLACK, ended - killed[0]
    assert result.status == "interrupted"
    assert_stopped(
        config,
        result.run_id,
        "interrupted by the loss of the run lock",
        "lost the run lock on target 'db': ",
    )
    resume_on_the_real_server(home, server_url, result.run_id)


# --- the cancel itself is bounded ----------------------------------------------------------------


def test_a_cancel_sent_to_a_frozen_server_returns_within_its_timeouts(home, server_url):
    """MariaDB's cancel is KILL QUERY over a new connection, PostgreSQL's a cancel
    request over one: behind a frozen proxy both connect to nothing that answers.
    Bound: connect_timeout_seconds + 2 x read_timeout_seconds + slack."""
    with frozen_midway(home, server_url) as (config, proxy, watcher):
        target = open_target(config, "db")
        conn = target.connect()
        sleeping = threading.Thread(
            target=lambda: _swallow(lambda: conn.execute(text(f"{_sleep_of(server_url)}(30)"))),
            daemon=True,
        )
        try:
            sleeping.start()
            watcher.join(HANG)
            assert proxy.silent.is_set()
            started = time.monotonic()
            in_thread(lambda: interrupt(conn))
            took = time.monotonic() - started
        finally:
            proxy.cut()
            sleeping.join(HANG)
            target.close()
    assert took < 3 * READ_TIMEOUT + SLACK, took


def _swallow(call: Any) -> None:
    with suppress(Exception):  # the statement's end is not what this test looks at
        call()


# --- a state store on a server that stops answering -------------------------------------------


def _store_through(home: Path, store_url: str, proxy_port: int, **state: Any) -> None:
    """state.url: the scratch database through the proxy, with short timeouts."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["state"] = {
        "url": through(proxy_port, store_url),
        "connect_timeout_seconds": 2,
        "read_timeout_seconds": 2,
        **state,
    }
    path.write_text(yaml.safe_dump(data))


def _aishell(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aishell", *args],
        env={**os.environ, "AISHELL_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=HANG,
    )


def test_a_state_store_server_that_never_answers_is_one_line_naming_the_setting(home, server_url):
    """The store's server takes the connection and never answers. Bound: the connect
    timeout (2 s) plus a child's start-up, well within HANG."""
    silent = Silent()
    try:
        _store_through(home, server_url, silent.port)
        started = time.monotonic()
        done = _aishell(home, "runs", "list")
        took = time.monotonic() - started
    finally:
        silent.close()
    assert took < 2 + SLACK, took
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: The state store "), lines[0]
    assert lines[0].endswith(
        "did not answer within 2 s (state.connect_timeout_seconds); check that its server "
        "is up and reachable"
    ), lines[0]
    assert done.returncode != 0


def test_a_state_store_server_silent_mid_run_ends_the_run_with_one_line(home, server_url):
    """The run's target answers; its state store's server freezes while the step runs,
    so the step's end cannot be written. Bound, from the freeze: the step (STORE_SLEEP)
    + the read timeout (2 s) + SLACK, within HANG."""
    scratch = scratch_postgresql if server_url.startswith("postgresql") else scratch_mysql
    with scratch() as store_url:
        lines, took = _run_with_store_frozen_mid_step(home, server_url, store_url)
    assert took < STORE_SLEEP + 2 + SLACK, (took, "\n".join(lines))
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: The state store "), lines[0]
    # Which wait ran out first depends on where the run was: a statement's answer, or
    # the reconnect after it (PyMySQL's greeting is a read).
    assert lines[0].endswith("did not answer within 2 s (state.read_timeout_seconds)") or lines[
        0
    ].endswith(
        "did not answer within 2 s (state.connect_timeout_seconds); check that its server "
        "is up and reachable"
    ), lines[0]


def _run_with_store_frozen_mid_step(
    home: Path, server_url: str, store_url: str
) -> tuple[list[str], float]:
    """`aishell apply` of the sleep on server_url, its state store (store_url) frozen
    while the sleep runs: the child's stderr lines and how long it took."""
    proxy = Proxy(server_port(store_url))
    try:
        configure(home, server_url, agent={"max_execution_time": 3600})
        _store_through(home, store_url, proxy.port)
        config = load_config(home=home)
        plan_file = home / "sleep.plan.json"
        commands.save_plan(config, _sleep_plan(server_url, STORE_SLEEP), plan_file)
        watcher = silence_when(server_url, _sleep_of(server_url), proxy)
        froze = when_frozen(proxy)
        done = _aishell(home, "apply", str(plan_file), "--non-interactive")
        ended = time.monotonic()
        watcher.join(HANG)
        assert proxy.silent.is_set() and froze, done.stderr
        took = ended - froze[0]
    finally:
        proxy.close()
    assert done.returncode != 0
    return done.stderr.strip().splitlines(), took


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("read_timeout_seconds", 0, "input should be greater than or equal to 1 (got 0)"),
        ("read_timeout_seconds", 0.5, "input should be greater than or equal to 1 (got 0.5)"),
        ("connect_timeout_seconds", 0, "input should be greater than or equal to 1 (got 0)"),
        ("read_timeout_seconds", float("nan"), "input should be a finite number (got nan)"),
    ],
)
def test_a_bad_state_store_timeout_is_one_line_naming_the_key(home, key, value, expected):
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["state"] = {key: value}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(home=home)
    assert str(err.value) == f"{path}: state.{key}: {expected}"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("write_timeout_seconds", 0.0009),
        ("read_timeout_seconds", 1e-7),
        ("write_timeout_seconds", 0),
    ],
)
def test_a_target_timeout_under_a_second_is_refused_naming_the_key(home, key, value):
    """libpq takes tcp_user_timeout in whole milliseconds, and 0 there is no bound: a
    value that would round to it is refused, not turned into none."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    name = next(iter(data["targets"]))
    data["targets"][name][key] = value
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(home=home)
    expected = f"input should be greater than or equal to 1 (got {value})"
    assert str(err.value) == f"{path}: targets.{name}.{key}: {expected}"


def test_the_state_store_timeouts_reach_a_server_url_only(home):
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["state"] = {"connect_timeout_seconds": 3, "read_timeout_seconds": 4.5}
    path.write_text(yaml.safe_dump(data))
    assert "?" not in load_config(home=home).state_url  # SQLite: no such wait
    data["state"]["url"] = "postgresql+psycopg://aishell@db.example:5432/state"
    path.write_text(yaml.safe_dump(data))
    url = load_config(home=home).state_url
    assert url.endswith("/state?connect_timeout=3&read_timeout=4.5"), url
    assert timeouts_of(url) == (3.0, 4.5)


# --- `schedule serve` with a run on a frozen server -----------------------------------------------


# Serve's run on the frozen server: a statement waits this long before the timeout
# fails its step, longer than the SIGTERM takes to come (sent within a 0.05 s poll of
# the hold; else the run ends failed, by the timeout, before the stop); a stop's cut
# and the lock's release fit five times in scheduling.STOP_SECONDS.
SERVE_READ_TIMEOUT = 2


def test_sigterm_ends_serve_within_its_bound_with_a_run_on_a_frozen_server(home, pg_url):
    """The scheduled run's server freezes under it; SIGTERM then ends serve within its
    documented bound (scheduling.STOP_SECONDS) plus start-up slack, and the run is
    left interrupted (resumed when serve starts again)."""
    from aishell.scheduling import serve as scheduling
    from tests.scheduling.test_schedules import add, due_now, scheduled_runs, wait_for

    proxy = Proxy(server_port(pg_url))
    try:
        config = configure(
            home,
            through(proxy.port, pg_url),
            read_timeout_seconds=SERVE_READ_TIMEOUT,
            connect_timeout_seconds=SERVE_READ_TIMEOUT,
        )
        add(config, "frozen", "0 3 * * *", ["maintenance", "--type", "quick"])
        due_now(config, "frozen")
        # The statistics step's ANALYZE is kept from the server: the run waits in a step.
        made = engine(pg_url)
        with made.connect() as conn:
            conn.execute(text("CREATE TABLE frozen_t (id int PRIMARY KEY)"))
        made.dispose()
        proxy.hold(b"ANALYZE ")
        serve = subprocess.Popen(
            [sys.executable, "-m", "aishell", "schedule", "serve"],
            env={**os.environ, "AISHELL_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            # Past its planning (loading the catalog alone may take seconds on a loaded
            # machine, and looks at no stop): its step's statement waits on the server.
            wait_for(proxy.held_once.is_set, "the scheduled run's ANALYZE", HANG)
            proxy.freeze()  # and so does every other, the cancel's included
            serve.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            output, _ = serve.communicate(timeout=HANG)
            took = time.monotonic() - sent
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
    finally:
        proxy.close()
    assert took < scheduling.STOP_SECONDS + 5, (took, output)
    assert serve.returncode == 0 and "stopped" in output, output
    # Its statement cancelled, and cut off after read_timeout_seconds: the run ended
    # interrupted before serve gave up waiting for it. (A trigger's later attempt on
    # the frozen server, if any, is recorded as a run that failed before it started.)
    assert "still running after" not in output, output
    statuses = [run["status"] for run in scheduled_runs(config, "frozen")]
    assert "interrupted" in statuses and set(statuses) <= {"interrupted", "failed"}, (
        statuses,
        output,
    )


@pytest.mark.parametrize("query", ["read_timeout=soon", "connect_timeout=0", "read_timeout=inf"])
def test_a_state_store_url_with_a_bad_timeout_is_one_line(query):
    name = query.split("=")[0]
    with pytest.raises(StateError) as err:
        timeouts_of(f"postgresql+psycopg://aishell@db.example:5432/state?{query}")
    assert str(err.value) == (
        f"The state store's URL (state.url): its {name} is not a number of seconds"
    )
