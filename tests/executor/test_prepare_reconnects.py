"""A connection lost while a step is prepared (its catalog reads, its estimate, what its
writes reach: all before anything of it runs) is made again and the preparation tried
again, as a step's own statements are: one dropped link does not fail an unattended
run. Before, only a held table was tried again there, and the run failed.

The connection is lost for real: the step before it ends its own session from another
one (KILL on MariaDB, pg_terminate_backend on PostgreSQL), so the next step's first
read finds it gone."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.handlers import Handler
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.guard.test_guard import dialect_of, handler_tool, make_tables, scratch_database
from tests.guard.test_guard import handlers as handlers  # a fixture
from tests.services import engine

KILL = {
    "mysql": ("SELECT CONNECTION_ID()", "KILL CONNECTION {id}"),
    "postgresql": ("SELECT pg_backend_pid()", "SELECT pg_terminate_backend({id})"),
}


def _ends_its_own_session(url: str) -> Any:
    def run(_params: dict[str, Any], ctx: Any) -> dict[str, Any]:
        ask, end = KILL[dialect_of(url)]
        session = int(ctx.connection.execute(text(ask)).scalar_one())
        ctx.connection.commit()
        other = engine(url)
        try:
            with other.connect() as conn:
                conn.execute(text(end.format(id=session)))
        finally:
            other.dispose()
        return {"ended": session}

    return run


@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
def test_a_connection_lost_before_a_step_is_made_again_and_the_step_runs(
    home: Path, tmp_path: Path, handlers: types.ModuleType, dialect: str
) -> None:
    with scratch_database(dialect, tmp_path) as url:
        make_tables(url)
        # A step that may write: a read-only step asks its session at its end (MariaDB),
        # and would find it gone itself.
        handler = Handler(
            sql_templates=("DELETE FROM {table} WHERE 1 = 0",), run_fn=_ends_its_own_session(url)
        )
        config = handler_tool(home, url, handlers, "ender", handler, "medium")
        steps = (
            Step("step_0", "ender", {"table": "t"}),
            Step("step_1", "count_table_rows", {"table": "t"}),
        )
        plan = Plan("maintenance", "db", dialect, {"type": "ender"}, steps)

        run = commands.apply_plan(config, plan, approver=PreApproved(up_to=RiskLevel.HIGH))

        assert run.status == "completed", (run.status, run.error)
        assert [s.status for s in run.steps] == ["succeeded", "succeeded"], run.steps
        retries = [
            e for e in commands.show_run(config, run.run_id)["events"] if e["kind"] == "step_retry"
        ]
        assert len(retries) == 1, retries
