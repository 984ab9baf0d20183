"""What an installed package's handler raises is that package's failure, named by its
module, not an internal error of aishell: the step fails saying whose code it was, on
SQLite and on PostgreSQL, and the run stops there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from tests.agents.conftest import Install
from tests.agents.test_plugin_own_failures import _with_handler

RAISES = (
    "def _boom(params, ctx):\n    raise RuntimeError('boom')\n\n"
    "counts = Handler(sql_templates=('SELECT 1',), run_fn=_boom)\n"
)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_raising_handler_fails_its_step_naming_the_package_s_module(
    engine: str, home: Path, site: Install, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("demo_db" if engine == "sqlite" else "pg_rows")
    agent, tool = _with_handler(site, RAISES, dialect=engine)
    table = "app_logs" if engine == "sqlite" else "kept_rows"
    ran = CliRunner().invoke(cli, ["run", agent, "--table", table, "--yes", "--json"])
    assert ran.exit_code == 1, ran.output
    found = json.loads(ran.stdout)
    step = found["steps"][0]
    assert found["status"] == "failed" and step["status"] == "failed"
    module = step["error"]["message"].split("(")[1].split(",")[0]
    assert module.endswith(".handlers") and not module.startswith("aishell")
    assert step["error"]["message"] == (
        f"the handler of {tool} ({module}, a package's own code) failed: RuntimeError: boom"
    )
    assert "internal error" not in ran.output
