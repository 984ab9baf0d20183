"""A step waiting for a SQLite file another process holds heeds a stop and its limits.

SQLite's busy handler sleeps inside the library for up to the target's busy_timeout_ms,
and an interrupt is not looked at meanwhile: a VACUUM behind another process's writer
went on waiting past `aishell stop`, max_execution_time and the maintenance window's
end, until the writer let go or busy_timeout_ms ran out (two minutes here). Now the
wait goes on in short slices, each followed by a look for a stop or a limit, so each
ends the step within about a second, as it would a running statement; and a wait that
ends because the writer lets go still runs the step.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.policy.approvers import PreApproved, Prompting
from aishell.state.store import StateStore
from tests.handlers.purge.test_purge_faults import assert_exactly_once, purge_on
from tests.helpers import one_step_plan, read_yaml, use_target, write_yaml
from tests.targets.test_limits import HANG, in_thread

# The target's busy timeout: what the step waited for before.
BUSY_MS = 120_000
# From the stop or limit to the step's end: a slice of the wait, a look at the store,
# the step's bookkeeping on a loaded two-core machine; far below BUSY_MS.
BOUND = 10
# How long the step is let to wait before it is stopped, or before the holder lets go.
WAITING = 2.0
# A person who says yes: a restore is critical, which no flag approves.
_YES = Prompting(ask=lambda _request: "yes")
# The window (hours 1-3 UTC) closes this many seconds after the run's clock.
LEFT = 3


def _fragmented_file(folder: Path) -> Path:
    """A file whose table has free pages, so optimize_table runs a VACUUM on it."""
    path = folder / f"busy_{uuid.uuid4().hex[:8]}.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, "x" * 200) for i in range(3000)])
    conn.execute("DELETE FROM notes WHERE id % 2 = 0")
    conn.commit()
    conn.close()
    return path


def _holding(path: Path) -> subprocess.Popen[str]:
    """Another process holding the file's write lock (BEGIN IMMEDIATE: readers go on,
    writers wait) until its standard input closes."""
    code = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
        "conn.execute('ROLLBACK')\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A file whose table optimize_table vacuums, and another process holding it."""
    path = _fragmented_file(tmp_path)
    holder = _holding(path)
    try:
        yield path, holder
    finally:
        _let_go(holder)


def _let_go(holder: subprocess.Popen[str]) -> None:
    if holder.poll() is None:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(HANG)


def _configure(home: Path, path: Path, agent: dict[str, object] | None = None) -> Config:
    use_target(home, f"sqlite:///{path}")
    config_path = home / "config" / "aishell.yaml"
    data = read_yaml(config_path)
    data["targets"]["db"]["busy_timeout_ms"] = BUSY_MS
    write_yaml(config_path, data)
    agent_path = home / "config" / "agents" / "maintenance.yaml"
    agent_data = yaml.safe_load(agent_path.read_text())
    agent_data["maintenance_agent"]["default_config"].update({"max_retries": 0, **(agent or {})})
    agent_path.write_text(yaml.safe_dump(agent_data))
    return load_config(home=home)


def _vacuum(config: Config, **options: object) -> tuple[object, float]:
    """optimize_table's VACUUM of `notes` through the whole executor, and how long it took."""
    params = {"tables": ["notes"], "fragmentation_threshold": 0}
    plan = one_step_plan("maintenance", "db", "sqlite", "optimize_table", params)
    started = time.monotonic()
    result = in_thread(lambda: commands.apply_plan(config, plan, approver=PreApproved(), **options))
    return result, time.monotonic() - started


def _the_run(config: Config) -> str:
    """The run running now, once it is recorded."""
    with StateStore(config.state_url) as store:
        for _ in range(HANG * 10):
            found = store.list_runs(status="running")
            if found:
                return str(found[0]["run_id"])
            time.sleep(0.1)
    raise AssertionError("the run was never recorded")


class _Stopper(threading.Thread):
    """`aishell stop` of the test's one run, `after` seconds after it is recorded;
    `asked`: when (time.monotonic())."""

    def __init__(self, config: Config, after: float) -> None:
        super().__init__(daemon=True)
        self.config, self.after, self.asked = config, after, 0.0

    def run(self) -> None:
        run_id = _the_run(self.config)
        time.sleep(self.after)
        self.asked = time.monotonic()
        commands.stop_run(self.config, run_id)


def _stop_after(config: Config, after: float) -> _Stopper:
    stopper = _Stopper(config, after)
    stopper.start()
    return stopper


def test_aishell_stop_ends_a_step_waiting_for_the_file(home: Path, held) -> None:
    path, holder = held
    config = _configure(home, path)
    stopper = _stop_after(config, WAITING)
    result, _took = _vacuum(config)
    ended = time.monotonic()
    stopper.join(HANG)
    step = result.steps[0]
    assert result.status == "interrupted", (result.status, step.error)
    assert step.status == "interrupted", step.error
    assert "with `aishell stop`" in (step.error or ""), step.error
    assert stopper.asked and ended - stopper.asked < BOUND, ended - stopper.asked
    # Resumable: once the writer lets go, the resumed run does the VACUUM.
    _let_go(holder)
    resumed = in_thread(lambda: commands.resume_run(config, result.run_id, approver=PreApproved()))
    assert resumed.status == "completed", resumed.error


def test_max_execution_time_ends_a_step_waiting_for_the_file(home: Path, held) -> None:
    path, _holder = held
    config = _configure(home, path, {"max_execution_time": 2})
    result, took = _vacuum(config)
    step = result.steps[0]
    assert result.status == "failed", (result.status, step.error)
    assert "exceeded its time limit of 2 s (max_execution_time)" in (step.error or ""), step.error
    assert took < BOUND, took


def _clock() -> datetime:
    return datetime(2026, 11, 17, 3, 59, 60 - LEFT, tzinfo=UTC)


def test_the_window_end_ends_a_step_waiting_for_the_file(home: Path, held) -> None:
    path, _holder = held
    config = _configure(home, path)
    agent_path = home / "config" / "agents" / "maintenance.yaml"
    agent = yaml.safe_load(agent_path.read_text())
    window = {"type": "maintenance_window", "allowed_hours": [1, 2, 3], "timezone": "UTC"}
    agent["maintenance_agent"]["safety_constraints"] = [window]
    agent_path.write_text(yaml.safe_dump(agent))
    config = load_config(home=home)
    result, took = _vacuum(config, clock=_clock)
    step = result.steps[0]
    assert result.status == "failed", (result.status, step.error)
    assert "the maintenance window closes at 04:00 UTC" in (step.error or ""), step.error
    assert took < BOUND, took


def test_a_wait_the_holder_ends_still_runs_the_step(home: Path, held) -> None:
    path, holder = held
    config = _configure(home, path)
    threading.Timer(WAITING, _let_go, args=(holder,)).start()
    before = path.stat().st_size
    result, took = _vacuum(config)
    assert result.status == "completed", result.error
    assert took >= WAITING
    assert path.stat().st_size < before  # the VACUUM ran: the free pages are gone


def test_aishell_stop_ends_a_purge_batch_waiting_for_the_file(home: Path, edit_config) -> None:
    with purge_on("sqlite", "file", home, walk="keys") as purge:
        config = edit_config({"targets": {"db": {"busy_timeout_ms": BUSY_MS}}})
        path = Path(purge.url.removeprefix("sqlite:///"))
        holder = _holding(path)
        try:
            stopper = _stop_after(config, WAITING)
            result = in_thread(lambda: commands.run_job(config, "log_cleanup", purge.job()))
            ended = time.monotonic()
            stopper.join(HANG)
        finally:
            _let_go(holder)
        assert result.status == "interrupted", result.error
        assert stopper.asked and ended - stopper.asked < BOUND, ended - stopper.asked
        resumed = in_thread(lambda: commands.resume_run(config, result.run_id))
        assert_exactly_once(purge, resumed)


def test_aishell_stop_ends_a_restore_waiting_for_the_file(home: Path, tmp_path: Path) -> None:
    """Python's backup API, which a SQLite restore copies with, tried a held file again for
    ever, heeding no stop."""
    path = _fragmented_file(tmp_path)
    config = _configure(home, path)
    taken = commands.run_job(config, "backup", {"type": "full"})
    assert taken.status == "completed", taken.error
    backup = commands.list_backups(config, "db")[0]
    holder = _holding(path)
    try:
        stopper = _stop_after(config, WAITING)
        result = in_thread(
            lambda: commands.restore(config, backup["id"], "db", replace=True, approver=_YES)
        )
        ended = time.monotonic()
        stopper.join(HANG)
    finally:
        _let_go(holder)
    assert result.status == "interrupted", result.error
    assert "with `aishell stop`" in (result.steps[0].error or ""), result.steps[0].error
    assert ended - stopper.asked < BOUND, ended - stopper.asked
    assert f"aishell resume {result.run_id}" in (result.error or ""), result.error
