"""A run two processes resume at once goes on in one of them only.

A resume reads the run, then reaches the target and takes its lock. A second resume that
read the run before the first one took the lock, and got the lock after the first one
finished and let it go, went on from what it had read: the run reopened, and steps that
had succeeded since ran again (a purge's DELETE a second time). It reads the run again
once it holds the lock, and finds it finished.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from aishell import commands
from tests.faultproxy import Proxy, server_port, through
from tests.helpers import use_target
from tests.services import engine

TIMEOUT = 120


def aishell(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aishell", *args], capture_output=True, text=True, timeout=TIMEOUT
    )


def test_a_second_resume_that_gets_the_lock_after_the_first_finds_the_run_done(
    home: Path, pg_url: str
) -> None:
    with engine(pg_url).begin() as conn:
        conn.execute(text("CREATE TABLE app_logs (id int PRIMARY KEY, created_at timestamp)"))
        conn.execute(
            text(
                "INSERT INTO app_logs SELECT i, CASE WHEN i <= 20 THEN now() - interval "
                "'100 days' ELSE now() END FROM generate_series(1, 200) AS s(i)"
            )
        )
    proxy = Proxy(server_port(pg_url))
    try:
        config = use_target(home, through(proxy.port, pg_url))
        job = ["--table", "app_logs", "--retention-days", "30", "--safety-level", "strict"]
        waiting = aishell("run", "log-cleanup", *job, "--non-interactive", "--json")
        assert waiting.returncode == 3, waiting.stderr
        run_id = json.loads(waiting.stdout)["run_id"]
        assert aishell("approve", run_id).returncode == 0
        # The second resume has read the run; its first connection to the target is kept
        # from the server while the first resume runs the whole run.
        proxy.hold(b"database")
        second = subprocess.Popen(
            [sys.executable, "-m", "aishell", "resume", run_id, "--non-interactive"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proxy.held_once.wait(TIMEOUT), second.communicate()
            first = commands.resume_run(config, run_id)
            assert first.status == "completed", first.error
            proxy.release()
            _, err = second.communicate(timeout=TIMEOUT)
        finally:
            proxy.release()
            if second.poll() is None:
                second.kill()
                second.wait()
        assert second.returncode == 2, err
        assert err.strip() == f"Error: Run {run_id} is completed; there is nothing to resume"
        shown = commands.show_run(config, run_id)
        assert shown["status"] == "completed"
        resumed = [e for e in shown["events"] if e["kind"] == "run_resumed"]
        assert len(resumed) == 1, shown["events"]
    finally:
        proxy.close()
