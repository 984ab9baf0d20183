"""A stop that comes while a step is prepared (its preview still reading, past the
run's time limit) ends the step and the run interrupted, resumable, as a stop while it
runs does: nothing of the step ran. Before, the read refused once the stop came was
taken for the step's own error: the step and the run failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from tests.agents.test_plugin_own_failures import Install, _with_handler

SLOW = "AISHELL_TEST_SLOW_ESTIMATE"
# Its preview (rendered as the step is prepared) outlasts the run's limit of 2s, then
# reads (only while SLOW is set).
HANDLER = (
    "import os\nimport time\n\nfrom sqlalchemy import text\n\n"
    "def _count(params, ctx):\n"
    "    return {'row_count': ctx.connection.execute(text('SELECT 1')).scalar()}\n\n"
    "def _render(params, ctx):\n"
    f"    if os.environ.get({SLOW!r}):\n"
    "        time.sleep(5)\n"
    "    ctx.connection.execute(text('SELECT 1'))\n"
    "    return ['SELECT 1']\n\n"
    "counts = Handler(sql_templates=('SELECT 1',), run_fn=_count, render_fn=_render)\n"
)


def test_a_time_limit_while_a_step_is_prepared_interrupts_it_resumably(
    demo_db: Path, site: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, _tool = _with_handler(site, HANDLER)
    # A first run makes the home (its store, the tools' catalog), which on a busy
    # machine takes longer than the limit: the limit then lands before the step.
    first_run = CliRunner().invoke(cli, ["run", agent, "--table", "app_logs", "--yes"])
    assert first_run.exit_code == 0, first_run.output
    monkeypatch.setenv(SLOW, "1")
    args = ["run", agent, "--table", "app_logs", "--yes", "--json", "--max-run-time", "2s"]
    ran = CliRunner().invoke(cli, args)
    found = json.loads(ran.stdout)
    assert found["status"] == "interrupted", found
    first = found["steps"][0]
    assert first["status"] == "interrupted", first
    assert "the run-time limit of 2 s" in json.dumps(first["error"]), first
    assert ran.exit_code == 4, ran.output
    monkeypatch.delenv(SLOW)
    resumed = CliRunner().invoke(cli, ["resume", found["run_id"], "--yes", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["status"] == "completed", resumed.stdout
