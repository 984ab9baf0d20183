"""The run's time limit ends a run waiting at the approval prompt.

The limit cancels what runs on the server; a run waiting for a person's answer runs
nothing there, and waited at the prompt, holding the target's run lock, until someone
answered, however long past its limit. Now the limit ends the wait as Ctrl-C does: the
step is left waiting for its answer, the run ends interrupted naming the limit (exit 4),
and `aishell resume` asks again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.cli.test_cli import in_terminal, read_until, strict

# The run's limit: it comes while the first question waits.
LIMIT = 4
# From the question to the command's end: what is left of the limit, the bookkeeping
# and the exit, on a loaded machine.
SLACK = 10


def test_the_run_time_limit_ends_a_wait_at_the_prompt(demo_db, home):
    strict(home)
    args = ("run", "maintenance", "--type", "full", "--tables", "app_logs")
    with in_terminal(*args, "--max-run-time", str(LIMIT)) as (proc, leader):
        read_until(leader, "Run this step?")
        asked = time.monotonic()
        try:
            code = proc.wait(timeout=LIMIT + SLACK)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - asked
        shown = read_until(leader, "interrupted", timeout=5) if code is not None else ""
    assert code == 4, f"still at the prompt {took:.1f} s after it was shown"
    assert took < LIMIT + SLACK, took
    assert f"interrupted by the run-time limit of {LIMIT} s (--max-run-time)" in shown, shown
    listed = subprocess.run(
        [sys.executable, "-m", "aishell", "runs", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (run,) = json.loads(listed.stdout)["runs"]
    assert run["status"] == "interrupted", run
