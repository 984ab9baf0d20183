"""A fleet run whose worker was SIGKILLed mid-step is stored `running`; `fleet show`
reads it as every list does (`fleet status`, `runs list`): interrupted, its process
gone. A later delivery refused by another worker is then said in `fleet show`, as it is
for a run a worker's shutdown interrupted.

Before, `fleet show` gave the stored `running` (while `fleet status` said interrupted),
and hid the refusal: a run shown running was taken for one going on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aishell import commands
from aishell.commands.fleet import run_fleet_target
from aishell.commands.tools import load_catalog
from aishell.config.models import load_config
from aishell.errors import ConfigError
from aishell.fleet.sending import sent_with
from aishell.state.store import signed_store
from tests.agents.test_plugin_own_failures import Install, _with_handler

SLOW = "AISHELL_TEST_SLOW_STEP"
# Its step runs on until killed (only while SLOW is set).
HANDLER = (
    "import os\nimport time\n\nfrom sqlalchemy import text\n\n"
    "def _count(params, ctx):\n"
    f"    if os.environ.get({SLOW!r}):\n"
    "        time.sleep(120)\n"
    "    return {'row_count': ctx.connection.execute(text('SELECT 1')).scalar()}\n\n"
    "counts = Handler(sql_templates=('SELECT 1',), run_fn=_count)\n"
)
# The task, as a worker runs it, in a process of its own.
WORKER = (
    "import json, sys\n"
    "from aishell.commands.fleet import run_fleet_target\n"
    "from aishell.config.models import load_config\n"
    "run_fleet_target(load_config(), sys.argv[1], 'demo', json.loads(sys.argv[2]))\n"
)


def test_a_killed_workers_run_is_shown_interrupted_with_the_refusal_after_it(
    demo_db: Path, home: Path, site: Install, tmp_path: Path
) -> None:
    agent, _ = _with_handler(site, HANDLER)
    config = load_config(home=home)
    carried = sent_with(load_catalog(config), config.agent(agent), config.main.targets)
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job(agent, {"table": "app_logs"}, {}, "demo", ["demo"])
    path = os.pathsep.join([str(tmp_path / "site"), *sys.path])
    env = {**os.environ, SLOW: "1", "PYTHONPATH": path}
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, fleet_id, json.dumps(carried)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while commands.fleet_summary(config, fleet_id)["runs"][0]["status"] != "running":
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)  # in its step's sleep
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    (row,) = commands.fleet_summary(config, fleet_id)["runs"]
    assert row["status"] == "interrupted", row
    assert row["delivery_refused"] is None

    # The next worker's tools differ: its delivery is refused, and said.
    with pytest.raises(ConfigError):
        run_fleet_target(config, fleet_id, "demo", {"tools": {}, "agent": "another"})
    (row,) = commands.fleet_summary(config, fleet_id)["runs"]
    assert row["status"] == "interrupted", row
    assert row["delivery_refused"] is not None, row
    assert row["error"].startswith("its last delivery was refused on "), row
    assert "this worker's tools, agent config or target differ" in row["error"]
