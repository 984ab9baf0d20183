"""A step's output is encoded once: what later steps of the run read from memory is what
the state store keeps for a resume, a report or the next run's planning, value for
value, the server's own types (times, decimals) as the same JSON text in both."""

from __future__ import annotations

from pathlib import Path

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.state.store import signed_store
from tests.helpers import fill_table
from tests.targets.test_limits import configure


def test_what_a_run_keeps_in_memory_is_what_its_store_keeps(home: Path, server_url: str):
    fill_table(server_url, "kept_a", 40)
    fill_table(server_url, "kept_b", 40)
    config = configure(home, server_url)
    result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())
    assert result.status == "completed", result.error
    with signed_store(config) as store:
        stored = store.step_outputs(result.run_id)
    in_memory = [step.output for step in result.steps]
    assert stored == in_memory
    assert all(output is not None for output in in_memory)
    # The health step's figures came from the server as its own types: each is plain
    # JSON in memory too (a time as text, a number as a number), not the driver's object.
    health = next(s.output for s in result.steps if s.tool == "analyze_database_health")
    assert isinstance(health["database_size_bytes"], int)
    assert all(
        isinstance(value, str | int | float | bool | list | dict | None)
        for table in health["tables"]
        for value in table.values()
    )
