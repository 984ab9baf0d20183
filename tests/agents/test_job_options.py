"""The job `aishell run` makes from its parsed options, found by the agent's name in one
table: each command's agent and job, and a name no agent has refused."""

from __future__ import annotations

import pytest

from aishell.agents.jobs import job_from_options
from aishell.errors import UsageError

BACKUP = {
    "kind": "full",
    "verify": True,
    "quick": False,
    "cleanup": False,
    "retention_days": 30,
    "keep_last": 1,
}


@pytest.mark.parametrize(
    ("command", "params", "agent", "job"),
    [
        (
            "maintenance",
            {"kind": "full", "tables": "a,b", "no_rebuild_indexes": True, "target": "db"},
            "maintenance",
            {"type": "full", "tables": ["a", "b"], "rebuild_indexes": False, "update_stats": True},
        ),
        (
            "backup",
            {**BACKUP, "lock_wait": 5.0},
            "backup",
            {
                "type": "full",
                "verify": True,
                "quick": False,
                "cleanup": False,
                "retention_days": 30,
                "keep_last": 1,
                "lock_wait_seconds": 5.0,
            },
        ),
        (
            "log-cleanup",
            {"table": "logs", "run_time": 60, "batch_size": None, "dry_run": True},
            "log_cleanup",
            {"table": "logs", "run_time_seconds": 60},
        ),
    ],
)
def test_each_run_command_makes_its_agents_job(command, params, agent, job) -> None:
    assert job_from_options(command, params) == (agent, job)


def test_a_job_of_no_agent_is_refused_not_taken_for_a_purge() -> None:
    with pytest.raises(UsageError, match="Unknown job 'vacuum'; jobs are: backup, log_cleanup, "):
        job_from_options("vacuum", {"table": "logs"})


def test_a_table_named_twice_in_tables_is_maintained_once(demo_db) -> None:
    import json

    from click.testing import CliRunner

    from aishell.cli import cli

    args = ["plan", "maintenance", "--type", "full", "--tables", "users,orders,users", "--json"]
    shown = CliRunner().invoke(cli, args)
    assert shown.exit_code == 0, shown.output
    steps = json.loads(shown.stdout)["steps"]
    for step in steps:
        tables = step["params"].get("tables") or []
        assert len(tables) == len(set(tables)), step
    on_users = [s["tool"] for s in steps if s["params"].get("table") == "users"]
    assert len(on_users) == len(set(on_users)), on_users
