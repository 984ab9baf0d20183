"""What every agent offers, as the Agent protocol names it: its job normalized, checked
against the target (check_job), the catalog facts planning it reads (catalog_needs), and
its plan in steps; and the purge checked through its handler's one door."""

from __future__ import annotations

import inspect

import pytest

from aishell.agents.available import agent_names, get_agent
from aishell.agents.base import Agent
from aishell.errors import TargetError
from aishell.targets.engines import open_target
from tests.house.imports import every_import

MEMBERS = ("normalize_job", "check_job", "catalog_needs", "describe_job", "plan_steps")


def test_the_protocol_names_every_member_the_planner_calls() -> None:
    assert all(callable(getattr(Agent, member, None)) for member in MEMBERS)


@pytest.mark.parametrize("name", agent_names())
def test_every_agent_has_every_member_of_the_protocol(name: str) -> None:
    """Each its own, taking what the protocol says: none is found by getattr."""
    agent = type(get_agent(name))
    for member in MEMBERS:
        assert member in vars(agent), f"{name} has no {member}"
        ours = list(inspect.signature(getattr(agent, member)).parameters)
        assert ours == list(inspect.signature(getattr(Agent, member)).parameters), member


@pytest.mark.parametrize(
    ("name", "job", "needs"),
    [
        ("maintenance", {"type": "full"}, {"urgency", "skipped", "partitions"}),
        (
            "maintenance",
            {"type": "full", "tables": ["orders"]},
            {"urgency", "skipped", "partitions"},
        ),
        ("maintenance", {"type": "quick"}, {"skipped", "partitions"}),
        ("maintenance", {"type": "standard"}, {"skipped", "partitions"}),
        ("maintenance", {"type": "emergency"}, {"skipped", "partitions"}),
        ("backup", {"type": "full"}, set()),
        ("backup", {"type": "incremental"}, set()),
        ("backup", {"type": "drill"}, set()),
        ("log_cleanup", {"table": "app_logs"}, set()),
    ],
)
def test_only_full_maintenance_reads_urgency(config, name, job, needs) -> None:
    agent = get_agent(name)
    assert agent.catalog_needs(agent.normalize_job(job, config.agent(name))) == needs


def test_the_checks_with_nothing_to_check_pass_and_the_purge_refuses(config, demo_db) -> None:
    handle = open_target(config, None, read_only=True)
    conn = handle.connect()
    try:
        for name in ("maintenance", "backup"):
            agent = get_agent(name)
            agent.check_job(agent.normalize_job({"type": "full"}, config.agent(name)), conn)
        purge = get_agent("log_cleanup")
        job = purge.normalize_job({"table": "app_logs"}, config.agent("log_cleanup"))
        purge.check_job(job, conn)
        with pytest.raises(TargetError, match="has no column 'made'; columns are: "):
            purge.check_job({**job, "date_column": "made"}, conn)
    finally:
        conn.close()
        handle.close()


def test_the_agents_reach_the_purge_only_through_its_one_check() -> None:
    reached = {
        (i.imported, i.names)
        for i in every_import()
        if i.importer.startswith("aishell.agents")
        and i.imported.startswith("aishell.handlers.purge")
    }
    assert reached == {("aishell.handlers.purge.precheck", ("check_purge",))}
