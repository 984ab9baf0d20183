"""A run whose time limit was reached while a step kept running (a handler busy in its
own code, which no cancel reaches) and that then gets SIGTERM stops for its first
cause: the run and its step say the time limit, not the signal that came after it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from aishell.cli import cli
from tests.agents.test_plugin_own_failures import Install, _with_handler

REPO = Path(__file__).resolve().parents[2]
SLOW = "AISHELL_TEST_SLOW_COUNT"
HANDLER = (
    "import os\nimport time\nfrom pathlib import Path\n\n"
    "def _count(params, ctx):\n"
    f"    marker = os.environ.get({SLOW!r})\n"
    "    if marker:\n"
    "        Path(marker).write_text('running')\n"
    "        time.sleep(8)\n"
    "    return {'row_count': 1}\n\n"
    "counts = Handler(sql_templates=('SELECT 1',), run_fn=_count)\n"
)


def test_a_signal_after_the_time_limit_leaves_the_limit_as_the_cause(
    demo_db: Path, site: Install, tmp_path: Path
) -> None:
    agent, _tool = _with_handler(site, HANDLER)
    # A first run makes the home (store, catalog), so the limit is spent in the step.
    first = CliRunner().invoke(cli, ["run", agent, "--table", "app_logs", "--yes"])
    assert first.exit_code == 0, first.output
    marker = tmp_path / "running"
    env = {
        **os.environ,
        SLOW: str(marker),
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO)]),
    }
    args = ["run", agent, "--table", "app_logs", "--yes", "--json", "--max-run-time", "3s"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "aishell", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate(timeout=30)
        time.sleep(4)  # past the limit of 3s, counted from before the step began
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 4, (proc.returncode, out, err)
    found = json.loads(out)
    said = json.dumps(found["error"]) + json.dumps([s["error"] for s in found["steps"]])
    assert "the run-time limit of 3 s" in said, said
    assert "SIGTERM" not in said, said
