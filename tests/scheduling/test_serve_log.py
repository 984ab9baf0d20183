"""The serve log: every line goes through a logger under `aishell`, named after the
module that says it; `schedule serve` writes them on stdout as `<units.stamp> <words>`,
and APScheduler's own lines only from warnings up, on stderr; `schedule run-now` shows
the same words on its console, without the time."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.cli.logs import line_formatter, serve_log
from aishell.config.models import Config
from aishell.units import stamp
from tests.scheduling.test_schedules import add, serving, wait_for

# tgkill(2) and futex(2) on x86_64 and aarch64.
SYS_TGKILL, SYS_FUTEX = {"x86_64": (234, 202), "aarch64": (131, 98)}[os.uname().machine]

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"


def test_a_line_is_the_stamp_of_its_time_then_its_words() -> None:
    record = logging.LogRecord(
        "aishell.scheduling.serve", logging.INFO, __file__, 1, "schedule %s: %s", ("x", "ok"), None
    )
    record.created = datetime(2026, 11, 25, 2, 0, 0, 250000, tzinfo=UTC).timestamp()
    assert line_formatter().format(record) == "2026-11-25T02:00:00.250+00:00 schedule x: ok"
    assert stamp(datetime.fromtimestamp(record.created, UTC)) == "2026-11-25T02:00:00.250+00:00"


def test_serve_log_writes_ours_on_stdout_and_only_apschedulers_warnings_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serve_log():
        logging.getLogger("aishell.scheduling.serve").info("schedule %s: added", "x")
        logging.getLogger("aishell.scheduling.serve").debug("not a line of the log")
        logging.getLogger("apscheduler.scheduler").info("Added job %r", "x")
        logging.getLogger("apscheduler.scheduler").debug("Looking for jobs to run")
        logging.getLogger("apscheduler.executors.default").warning("Run time of job was missed")
    out, err = capsys.readouterr()
    assert re.fullmatch(f"{STAMP} schedule x: added\n", out), out
    assert re.fullmatch(f"{STAMP} Run time of job was missed\n", err), err
    # Left as found: once serve ends, nothing of it stays on the loggers.
    assert logging.getLogger("aishell").handlers == []
    assert logging.getLogger("apscheduler").handlers == []
    assert logging.getLogger("aishell").level == logging.NOTSET


def test_the_lines_of_serve_go_through_the_aishell_loggers(
    demo_db: Path, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    add(config, "quick", "0 3 * * *", ["maintenance", "--type", "quick"])
    with caplog.at_level(logging.INFO, logger="aishell"), serving(config) as lines:
        wait_for(lambda: "schedule quick: added" in " ".join(lines), "the schedule")
    said = {(r.name, r.getMessage().split(" ")[0]) for r in caplog.records}
    assert ("aishell.scheduling.serve", "serving") in said, said
    assert ("aishell.scheduling.serve", "stopped") in said, said
    assert all(r.name.startswith("aishell.") for r in caplog.records)


def test_a_scheduled_runs_lines_come_from_the_commands_logger(
    demo_db: Path, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    add(config, "quick", "0 3 * * *", ["maintenance", "--type", "quick"])
    with caplog.at_level(logging.INFO, logger="aishell"):
        result = commands.run_schedule(config, "quick", "cron")
    assert result is not None
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("aishell.commands.schedules", "INFO", f"schedule quick: run {result.run_id} completed")
    ]


def test_run_now_shows_the_lines_on_its_console_without_the_time(
    demo_db: Path, config: Config
) -> None:
    add(config, "quick", "0 3 * * *", ["maintenance", "--type", "quick"])
    result = CliRunner().invoke(cli, ["schedule", "run-now", "quick"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^schedule quick: run \S+ completed$", result.output, re.M), result.output
    assert logging.getLogger("aishell").handlers == []


def _serving_one_schedule(config: Config, home: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """`schedule serve` of one schedule, as a process, and its first two lines (the
    schedule added, then serving)."""
    add(config, "quick", "0 3 * * *", ["maintenance", "--type", "quick"])
    serve = subprocess.Popen(
        [sys.executable, "-m", "aishell", "schedule", "serve"],
        env={**os.environ, "AISHELL_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert serve.stdout is not None
    return serve, [serve.stdout.readline() for _ in range(2)]


def test_serve_writes_its_words_stamped_on_stdout_and_nothing_on_stderr(
    demo_db: Path, config: Config, home: Path
) -> None:
    serve, started = _serving_one_schedule(config, home)
    serve.send_signal(signal.SIGTERM)
    out, err = serve.communicate(timeout=60)
    assert serve.returncode == 0 and err == "", err
    lines = [*started, *out.splitlines(keepends=True)]
    assert all(re.match(f"{STAMP} ", line) for line in lines), lines
    words = [line.split(" ", 1)[1].rstrip("\n") for line in lines]
    assert re.fullmatch(r"schedule quick: added, next run \d{4}-\d\d-\d\d 03:00 UTC", words[0])
    assert words[1] == f"serving 1 schedule(s) from {config.state_location}"
    assert words[2:] == [
        "SIGTERM received",
        "stopping: running steps end resumably (waiting at most 20 s)",
        "stopped",
    ]


def _thread_ids(pid: int) -> list[int]:
    """The ids of the process's threads; its main one's is the pid."""
    return sorted(int(task.name) for task in Path(f"/proc/{pid}/task").iterdir())


def _waits_on_a_lock(pid: int, tid: int) -> bool:
    """Whether that thread sleeps in futex(2), as a thread blocked on a lock does."""
    call = (Path(f"/proc/{pid}/task/{tid}/syscall")).read_text().split()
    return call[0] == str(SYS_FUTEX)


def _signal_thread(pid: int, tid: int, signum: int) -> None:
    """The signal to that one thread of another process (tgkill(2)): the kernel's own
    choice when a process has threads that do not block it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_TGKILL, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tgkill(2) is Linux's")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_when_the_signal_lands_on_a_thread_that_is_not_the_main_one(
    demo_db: Path, config: Config, home: Path, signum: int
) -> None:
    """The main thread sleeps waiting for its stop; a signal the kernel gives to another
    of serve's threads must still stop serve, as SIGTERM from a service manager does."""
    serve, started = _serving_one_schedule(config, home)
    try:
        assert "serving 1 schedule(s)" in started[1], started
        # Asleep for good: a signal that lands on the main thread while it still runs
        # Python is handled there at once, whichever thread took it.
        deadline = time.monotonic() + 20
        while not _waits_on_a_lock(serve.pid, serve.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        others = [tid for tid in _thread_ids(serve.pid) if tid != serve.pid]
        assert others, "serve has threads besides its main one (the scheduler's at least)"
        _signal_thread(serve.pid, others[0], signum)
        out, err = serve.communicate(timeout=30)
    finally:
        serve.kill()
    assert serve.returncode == 0 and err == "", err
    assert f"{signal.Signals(signum).name} received" in out
    assert out.rstrip("\n").endswith("stopped"), out
