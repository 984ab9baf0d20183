"""The example's own checks, with no database: its tool files load as aishell loads a
plugin's (risks and locks as declared, a copy under-declaring its risk refused), and its
agent plans four steps from a retention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aishell_partitions import tool_folder
from aishell_partitions.agent import PartitionArchiveAgent

from aishell.agents.api import TaskContext, UsageError
from aishell.config.models import AgentDefaults
from aishell.registry import load_registry

TOOLS = {
    "find_old_partitions": "safe",
    "detach_partitions": "high",
    "archive_partitions": "high",
    "drop_archived_partitions": "critical",
}


def test_its_tools_load_with_their_risks_and_locks() -> None:
    registry = load_registry([], [tool_folder()])
    assert registry.refused == ()
    for name, risk in TOOLS.items():
        tool = registry.get(name)
        assert tool.risk_level.value == risk
    locks = [lock.mode for lock in registry.get("detach_partitions").locks["postgresql"]]
    assert locks == ["SHARE UPDATE EXCLUSIVE", "ACCESS EXCLUSIVE"]


def test_a_copy_of_a_tool_under_declaring_its_risk_is_refused(tmp_path: Path) -> None:
    source = (tool_folder() / "drop_archived_partitions.yaml").read_text()
    broken = source.replace("name: drop_archived_partitions", "name: drop_quietly")
    (tmp_path / "drop_quietly.yaml").write_text(
        broken.replace("risk_level: critical", "risk_level: high")
    )
    registry = load_registry([], [tool_folder(), tmp_path])
    assert "drop_quietly" not in registry.tools and "drop_archived_partitions" in registry.tools
    (refused,) = registry.refused
    assert "drop_quietly.yaml: risk_level: tagged high" in refused
    assert "DROP TABLE" in refused


def _context() -> TaskContext:
    return TaskContext(
        target="db", dialect="postgresql", tables=("events",), defaults=AgentDefaults()
    )


def _job(**given: Any) -> dict[str, Any]:
    config: Any = None  # the agent reads no config
    return PartitionArchiveAgent().normalize_job({"table": "events", **given}, config)


def test_the_agent_plans_find_detach_archive_drop() -> None:
    steps = PartitionArchiveAgent().plan_steps(_job(older_than_days=90), _context())
    assert [s.tool for s in steps] == list(TOOLS)
    assert steps[0].params == {"parent": "events", "older_than_days": 90}
    found = "${step_0.output.partitions}"
    assert all(s.params["partitions"] == found and s.condition == found for s in steps[1:])
    assert steps[2].params["archive_schema"] == "archive"


def test_a_job_without_a_retention_is_refused() -> None:
    with pytest.raises(UsageError, match="--older-than-days or --keep"):
        _job()
