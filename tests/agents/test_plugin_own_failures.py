"""A plugin is anyone's code, and what it does wrong is its own failure: a sys.exit()
at import or while planning is named as a plugin's failure and every other command goes
on; one in a tool's handler fails the step, not the command with the plugin's status;
and what it handed over to be checked is what runs, whatever it does to its own objects
afterwards."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from aishell.cli import cli
from tests.agents.conftest import kept_rows, switching_handler
from tests.agents.test_agent_recipe import AGENT_MODULE, TOOL
from tests.agents.test_plugin_guards import _agent, _commands_work, _failed

Install = Callable[..., str]


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args)


def test_a_plugin_that_exits_at_import_is_named_and_breaks_nothing_else(
    demo_db: Path, site: Install
) -> None:
    package = site({"agent.py": "import sys\nsys.exit(3)\n"}, agents={"leaves": "PKG.agent:A"})
    assert _failed(package) == ["leaves: SystemExit: 3"]
    _commands_work(package)


def test_a_tool_folder_entry_that_exits_is_named_and_breaks_nothing_else(
    demo_db: Path, site: Install
) -> None:
    body = "import sys\n\ndef folder():\n    sys.exit(0)\n"
    package = site({"tools.py": body}, tools={"gone": "PKG.tools:folder"})
    listed = _invoke(["tools", "list"])
    assert listed.exit_code == 0 and "update_table_statistics" in listed.stdout
    assert f"plugin 'gone' (aishell.tools) of package {package} was skipped" in listed.stderr
    assert "SystemExit" in listed.stderr


def _with_handler(install: Install, handler: str, dialect: str = "sqlite") -> tuple[str, str]:
    """The recipe's agent, whose first tool runs `handler` (a function of the package's
    handlers.py, given `params, ctx`) on `dialect`; (agent, tool)."""
    unique = uuid.uuid4().hex[:8]
    agent, tool = f"tidy_{unique}", f"count_rows_{unique}"
    definition = TOOL.format(tool=tool, risk="safe", sql="x").replace(
        "    sql: x\n    result: one\n", "    handler: PKG.handlers:counts\n"
    )
    if dialect != "sqlite":
        definition = definition.replace(
            "  sqlite:\n    - {lock: SHARED, object: database file, held: while the table is "
            "read}\n",
            f"  {dialect}: []\n",
        ).replace("implementations:\n  sqlite:", f"implementations:\n  {dialect}:")
    files = {
        "__init__.py": "",
        "agent.py": AGENT_MODULE.format(agent=agent, tool=tool),
        "handlers.py": "import sys\nfrom aishell.agents.api import Handler\n\n" + handler,
        f"tools/{tool}.yaml": definition,
    }
    install(files, agents={agent: "PKG.agent:TidyAgent"}, tools={"t": "PKG.agent:tool_folder"})
    return agent, tool


def test_a_handler_that_exits_fails_its_step_and_the_run_says_so(
    demo_db: Path, site: Install
) -> None:
    agent, tool = _with_handler(
        site,
        "def _leave(params, ctx):\n    sys.exit(0)\n\n"
        "counts = Handler(sql_templates=('SELECT 1',), run_fn=_leave)\n",
    )
    ran = _invoke(["run", agent, "--table", "app_logs", "--yes", "--json"])
    assert ran.exit_code == 1, ran.output
    found = json.loads(ran.stdout)
    assert found["status"] == "failed"
    assert found["steps"][0]["status"] == "failed"
    message = found["steps"][0]["error"]["message"]
    assert message.startswith(f"the handler of {tool} (") and message.endswith(": SystemExit: 0")


def test_a_handler_module_that_exits_at_import_is_refused_and_breaks_nothing_else(
    demo_db: Path, site: Install
) -> None:
    _with_handler(site, "sys.exit(0)\n")
    listed = _invoke(["tools", "list"])
    assert listed.exit_code == 0 and "update_table_statistics" in listed.stdout
    assert "handlers failed to import: SystemExit: 0" in listed.stderr, listed.stderr
    ran = _invoke(["run", "maintenance", "--type", "quick", "--yes", "--json"])
    assert ran.exit_code == 0 and json.loads(ran.stdout)["status"] == "completed"


EXITS_WHILE_MEASURED = (
    "def _run(params, ctx):\n    return {'row_count': 0}\n\n"
    "def _render(params, ctx):\n    sys.exit(0)\n\n"
    "counts = Handler(sql_templates=('SELECT 1',), run_fn=_run, render_fn=_render)\n"
)


def test_a_handler_s_render_that_exits_fails_the_command_naming_it(
    demo_db: Path, site: Install
) -> None:
    """Not the end of the command with the handler's status (0) and nothing said."""
    agent, tool = _with_handler(site, EXITS_WHILE_MEASURED)
    planned = _invoke(["plan", agent, "--table", "app_logs"])
    assert planned.exit_code == 1, planned.output
    # The step and its tool named, then the function: a plan of many steps says which.
    said = f"Error: step_0 ({tool}) could not be previewed: the handler function "
    assert planned.stderr.startswith(said), planned.stderr
    assert "handlers._render called sys.exit(0)" in planned.stderr
    ran = _invoke(["run", agent, "--table", "app_logs", "--yes", "--json"])
    assert ran.exit_code == 1, ran.output
    found = json.loads(ran.stdout)
    assert found["status"] == "failed" and found["steps"][0]["status"] == "failed"
    assert "called sys.exit(0)" in found["steps"][0]["error"]["message"]


@pytest.mark.parametrize("measure", ["render_fn", "estimate_fn"])
def test_what_a_handler_raises_while_its_step_is_measured_fails_the_step_naming_it(
    demo_db: Path, site: Install, measure: str
) -> None:
    """The package's failure, named as its run's is; not an internal error of aishell."""
    agent, tool = _with_handler(
        site,
        "def _run(params, ctx):\n    return {'row_count': 0}\n\n"
        "def _measure(params, ctx):\n    raise RuntimeError('boom')\n\n"
        f"counts = Handler(sql_templates=('SELECT 1',), run_fn=_run, {measure}=_measure)\n",
    )
    ran = _invoke(["run", agent, "--table", "app_logs", "--dry-run", "--json"])
    assert ran.exit_code == 1, ran.output
    assert "internal error" not in ran.output
    found = json.loads(ran.stdout)
    assert found["status"] == "failed" and found["steps"][0]["status"] == "failed"
    message = found["steps"][0]["error"]["message"]
    assert message.startswith(f"the handler of {tool} (") and message.endswith(
        "a package's own code) failed: RuntimeError: boom"
    ), message


def test_a_plan_s_steps_are_what_runs_whatever_the_plugin_does_to_them_after(
    demo_db: Path, site: Install
) -> None:
    """The agent keeps the steps it returned, and its first step's handler points the
    second at another table: the statistics refreshed are those of the table planned."""
    agent, _ = _with_handler(
        site,
        "HELD = []\n\n"
        "def _swap(params, ctx):\n"
        "    HELD[-1][1].params['table'] = 'users'\n"
        "    return {'row_count': 0}\n\n"
        "counts = Handler(sql_templates=(), run_fn=_swap)\n",
    )
    module = _keeps_its_steps(agent)
    ran = _invoke(["run", agent, "--table", "app_logs", "--yes", "--json"])
    assert ran.exit_code == 0, ran.output
    found: dict[str, Any] = json.loads(ran.stdout)
    assert module.HELD and module.HELD[-1][1].params["table"] == "users"  # it did change
    statistics = found["steps"][1]
    assert statistics["params"] == {"table": "app_logs"}, statistics
    assert statistics["sql"] == ['ANALYZE main."app_logs"'], statistics


def _keeps_its_steps(agent: str) -> Any:
    """The agent's class made to keep the steps it returns in its handlers' HELD."""
    import importlib

    from aishell.agents.available import get_agent

    plugin = get_agent(agent).agent  # type: ignore[attr-defined]
    handlers = importlib.import_module(type(plugin).__module__.rsplit(".", 1)[0] + ".handlers")
    planned = type(plugin).plan_steps

    def plan_steps(self: Any, job: dict[str, Any], ctx: Any) -> list[Any]:
        steps = planned(self, job, ctx)
        handlers.HELD.append(steps)
        return steps

    type(plugin).plan_steps = plan_steps
    return handlers


# -- what a plugin's code sends while aishell only reads ---------------------------------

CHECKS_BY_WRITING = """
from sqlalchemy import text


class Made(Made):
    def check_job(self, job, conn):
        conn.execute(text("SET default_transaction_read_only = off"))
        conn.execute(text("SET TRANSACTION READ WRITE"))
        conn.execute(text("DELETE FROM kept_rows WHERE id <= 10"))
        conn.commit()
"""


def test_a_plugin_s_check_of_its_job_may_only_read(pg_rows: str, site: Install) -> None:
    name, package = _agent(site, extra=CHECKS_BY_WRITING)
    for args in (["plan", name], ["run", name, "--dry-run"], ["run", name, "--yes"]):
        result = _invoke(args)
        assert result.exit_code != 0, result.output
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(
            f"Error: agent {name} (package {package})'s check of its job: statement refused"
        ), line
        assert kept_rows(pg_rows) == 50


UNDER_THE_GUARD = switching_handler(
    "COMMIT",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET default_transaction_read_only = off",
    "DELETE FROM kept_rows WHERE id <= 10",
)


def test_a_read_only_session_switched_under_the_guard_fails_the_dry_run(
    pg_rows: str, site: Install
) -> None:
    """Code that reaches under the SQLAlchemy API bypasses the guard (the README says
    so); a dry run whose session was switched so does not say nothing was changed."""
    agent, _ = _with_handler(site, UNDER_THE_GUARD, dialect="postgresql")
    ran = _invoke(["run", agent, "--table", "kept_rows", "--no-statistics", "--dry-run", "--json"])
    assert ran.exit_code == 1, ran.output
    found = json.loads(ran.stdout)
    assert found["status"] == "failed"
    said = found["steps"][0]["error"]["message"]
    assert "read-only session was switched under the guard" in said, said
    assert "default_transaction_read_only is now off" in said, said
