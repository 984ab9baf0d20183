"""A SQLite restore's preview and prompt name the other processes that hold the target's
file open (on Linux, read from /proc/PID/fd), as a server restore names the other
sessions on its database: the restore neither waits for them nor stops them, and an
application still at work there goes on against data it did not write. Each is named
by its id, program and user alone, never its command line; this process is not named.

Before, a SQLite restore named nobody."""

from __future__ import annotations

import getpass
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from tests.handlers.backup.test_restore_prechecks import Recorder, sqlite_backup

HOLD = (
    "import sqlite3, sys, time\n"
    "conn = sqlite3.connect(sys.argv[1]); conn.execute('SELECT count(*) FROM users')\n"
    "print('open', flush=True); time.sleep(120)\n"
)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
def test_a_sqlite_restore_names_the_processes_holding_its_file(config: Any, demo_db: Path) -> None:
    backup = sqlite_backup(config)
    secret = "not-to-be-shown-7f3a"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(demo_db), secret], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        recorder = Recorder(answer="no")
        done = commands.restore(
            config, backup["id"], "demo", replace=True, approver=recorder.approver
        )
        assert done.status != "completed"
    finally:
        holder.kill()
        holder.wait()
    [request] = recorder.asked
    named = [s for s in request.estimate["other_sessions"] if f"process {holder.pid} (" in s]
    assert len(named) == 1, request.estimate["other_sessions"]
    assert named[0].endswith(f", user {getpass.getuser()}) has the file open")
    [line] = [s for s in request.sql if "other process" in s]
    assert "the file of 'demo' open now, and the restore does not stop" in line
    assert f"process {holder.pid} " in line and secret not in line
    assert secret not in str(request.estimate)
