"""The agents aishell has, by the name a command or a schedule gives."""

from __future__ import annotations

from aishell.agents.backup import BackupAgent
from aishell.agents.base import Agent
from aishell.agents.log_cleanup import LogCleanupAgent
from aishell.agents.maintenance import MaintenanceAgent
from aishell.errors import UsageError

AGENTS: dict[str, Agent] = {
    "maintenance": MaintenanceAgent(),
    "backup": BackupAgent(),
    "log_cleanup": LogCleanupAgent(),
}


def get_agent(name: str) -> Agent:
    try:
        return AGENTS[name]
    except KeyError:
        raise UsageError(
            f"Unknown agent '{name}'; agents are: {', '.join(sorted(AGENTS))}"
        ) from None
