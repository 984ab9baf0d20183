"""Drafting with the model for the commands: a job's plan (with the rules to fall back
on), or a request in words that also picks the agent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from aishell.agents.available import agent_names, get_agent
from aishell.agents.base import Agent, PlanningContext
from aishell.agents.limits import DraftLimits
from aishell.config.models import Config
from aishell.config.places import home_private_places
from aishell.errors import DraftRejected, UsageError
from aishell.plan.model import Step
from aishell.planners import Draft, DraftRequest
from aishell.planners.llm import LlmPlanner, Notice
from aishell.planners.prompt import CatalogSummary, summarize_catalog
from aishell.registry import Registry
from aishell.state.store import StateStore
from aishell.targets.catalog import table_columns
from aishell.targets.engines import Target


def draft_job(
    config: Config,
    registry: Registry,
    handle: Target,
    conn: Connection,
    found: dict[str, dict[str, Any]],
    agent_name: str,
    job: dict[str, Any],
    context: PlanningContext,
    notice: Notice | None = None,
) -> tuple[list[Step], dict[str, Any]]:
    """The model's steps for one agent's job; the agent's rule-based steps, with the
    rejections recorded, when every draft failed validation. `found` is the catalog's
    snapshot."""
    agent = get_agent(agent_name)
    text = agent.describe_job(job, context)
    named = list(job.get("tables") or [])
    limits = _job_limits(agent, job, context)
    scope = limits.tables
    if named and scope is None:
        scope = frozenset(named + [t for t in [job.get("archive_table")] if t])
    catalog = summarize_catalog(conn, found, text, named, context.urgency)
    request = DraftRequest(
        text=text,
        target=handle.name,
        environment=handle.config.environment,
        dialect=handle.dialect,
        agents={agent_name: config.agent(agent_name).capabilities},
        catalog=catalog,
        columns_of=_columns_reader(conn, catalog),
        scope=scope,
        folders=_folders(config),
        private=home_private_places(config),
        limits=limits,
    )
    settings = config.main.planner.llm
    with StateStore(config.state_url) as store:
        try:
            draft = LlmPlanner(settings, registry, store, notice=notice).draft(request)
        except DraftRejected as exc:
            return agent.plan_steps(job, context), {
                "planner": "rules",
                "fallback_from": "llm",
                "model": settings.model,
                "request": text,
                "rejected": exc.rejected,
            }
    return draft.steps, draft.drafted_by


def _job_limits(agent: Agent, job: dict[str, Any], context: PlanningContext) -> DraftLimits:
    """What the job holds a draft to, where its agent says (the agent's own plan keeps
    to it: --no-update-stats, --no-rebuild-indexes, its type, its tables)."""
    limits_of = getattr(agent, "draft_limits", None)
    return limits_of(job, context) if callable(limits_of) else DraftLimits()


def draft_words(
    config: Config,
    registry: Registry,
    handle: Target,
    conn: Connection,
    found: dict[str, dict[str, Any]],
    text: str,
    notice: Notice | None = None,
) -> Draft:
    """A plan for a request in words: the model picks the agent and the steps. Every
    draft rejected is an error that gives the reasons."""
    if not text.strip():
        raise UsageError('Say what to do, e.g. aishell ask "refresh statistics of orders"')
    catalog = summarize_catalog(conn, found, text)
    request = DraftRequest(
        text=text.strip(),
        target=handle.name,
        environment=handle.config.environment,
        dialect=handle.dialect,
        agents={name: config.agent(name).capabilities for name in agent_names()},
        catalog=catalog,
        columns_of=_columns_reader(conn, catalog),
        folders=_folders(config),
        private=home_private_places(config),
    )
    with StateStore(config.state_url) as store:
        return LlmPlanner(config.main.planner.llm, registry, store, notice=notice).draft(request)


def _folders(config: Config) -> tuple[Path, ...]:
    """Where a drafted plan may read and write files: the aishell home and the backup
    folder (which may lie elsewhere)."""
    home, backups = config.home.resolve(), config.backup_dir.resolve()
    return (home,) if backups.is_relative_to(home) else (home, backups)


def _columns_reader(conn: Connection, catalog: CatalogSummary) -> Callable[[str], list[str]]:
    """Each table's column names: from the summary where it lists them, else the catalog."""
    seen = {
        name: [c["name"] for c in entry["columns"]]
        for name, entry in catalog.tables.items()
        if "columns" in entry
    }

    def columns_of(table: str) -> list[str]:
        if table not in seen:
            seen[table] = table_columns(conn, table)
        return seen[table]

    return columns_of
