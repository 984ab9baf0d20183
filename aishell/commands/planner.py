"""Making plans: a job's plan by the rules or the model, and a request in words (`ask`)
that the model turns into a plan; with the model planner's own checks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from typing_extensions import Unpack

from aishell.agents.available import agent_package, get_agent
from aishell.agents.base import Agent, PlannedTool, PlanningContext
from aishell.commands.assumptions import plan_assumptions
from aishell.commands.previews import Review
from aishell.commands.skipped import last_skipped
from aishell.commands.starting import RunHow, plan_and_start
from aishell.config.models import Config
from aishell.config.options import JOB_OPTIONS, PLANNERS
from aishell.config.plugins import OWN_PACKAGE
from aishell.errors import PlanError, TableHeld, UsageError
from aishell.executor import FINISHED, Observer, RunResult
from aishell.handlers.purge.ownership import ARCHIVE_PATH, archive_key, claimed
from aishell.plan.model import Plan, Step, validate_plan
from aishell.registry import Registry
from aishell.state.store import StateStore, signed_store
from aishell.targets.catalog import urgency
from aishell.targets.engines import Target
from aishell.targets.lockholders import is_lock_timeout, lock_holders
from aishell.targets.partitions import partition_trees
from aishell.targets.servermessage import server_message
from aishell.targets.tables import TableCatalog
from aishell.tool.readings import MAX_AGE_SECONDS
from aishell.units import plain_zeros

# The model planner is imported where it is used: a plan by the rules needs none of it
# (its prompt, its validator: about 16 ms of every job's start).
if TYPE_CHECKING:
    from aishell.planners.llm import Notice


def build_plan(
    config: Config,
    registry: Registry,
    handle: Target,
    agent_name: str,
    job: dict[str, Any],
    planner: str | None = None,
    notice: Notice | None = None,
    catalog: TableCatalog | None = None,
) -> Plan:
    """A job's validated plan, made on an open target by the rules or the model, with
    what it assumes of the target's tables (for `apply_plan`'s drift check). `catalog`:
    the target's tables, read here when not given."""
    planner = planner or config.main.planner.default
    if planner not in PLANNERS:
        raise UsageError(f"Unknown planner '{planner}'; expected one of: {', '.join(PLANNERS)}")
    agent = get_agent(agent_name)
    agent_config = config.agent(agent_name)
    job = plain_zeros(agent.normalize_job(plain_zeros(job), agent_config))
    _refuse_claimed_archive(config, job)
    conn = handle.connect()
    try:
        if catalog is None:
            catalog = TableCatalog.read(conn)
        tables = _checked_tables(agent, job, catalog, conn, handle.name)
        context = _planning_context(config, registry, handle, conn, agent, job, catalog, tables)
        # What the plan assumes covers the partitions it works on as well as the tables.
        under = [t for p in context.partitions.values() for t in p.members if t not in tables]
        assumptions = plan_assumptions(catalog, job, (*tables, *dict.fromkeys(under)))
        if planner == "llm":
            from aishell.planners.drafting import draft_job

            found = catalog.snapshot()
            steps, drafted_by = draft_job(
                config, registry, handle, conn, found, agent_name, job, context, notice
            )
        else:
            steps, drafted_by = agent.plan_steps(job, context), {}
            _check_named(registry, steps, catalog, conn, handle.name)
    finally:
        conn.close()
    if planner != "llm" or agent_name not in JOB_OPTIONS:  # a model drafts from any tool
        _refuse_undeclared(agent, steps, context.planned)
    plan = _plan(registry, handle, agent_name, job, steps, assumptions, drafted_by)
    return _validated(plan, registry, agent_config.capabilities, _the_plan_of(agent_name))


def _the_plan_of(agent_name: str) -> str:
    """An agent's plan as its problems name it: with the agent's package, where it is
    not aishell's own (the package's author is who can mend it)."""
    package = agent_package(agent_name)
    if package == OWN_PACKAGE:
        return f"The {agent_name} plan"
    return f"The plan of agent {agent_name} (package {package})"


def _planning_context(
    config: Config,
    registry: Registry,
    handle: Target,
    conn: Connection,
    agent: Agent,
    job: dict[str, Any],
    catalog: TableCatalog,
    tables: tuple[str, ...],
) -> PlanningContext:
    """What the agent plans from: the tables and the facts it says it reads, each read
    in one query whatever the number of tables."""
    needs = agent.catalog_needs(job)
    agent_config = config.agent(agent.name)
    partitions = (
        partition_trees(conn, tables if job.get("tables") else None)
        if "partitions" in needs
        else {}
    )
    sized = {*tables, *(t for p in partitions.values() for t in p.members)}
    return PlanningContext(
        target=handle.name,
        dialect=handle.dialect,
        tables=tables,
        defaults=agent_config.defaults,
        urgency=urgency(conn, _every_figure(catalog)) if "urgency" in needs else {},
        sizes={t: catalog.tables[t].bytes for t in sized if t in catalog.tables},
        purge=agent_config.purge,
        first=last_skipped(config, handle.name, agent.name) if "skipped" in needs else (),
        planned=planned_tools(registry, agent.name, handle.dialect),
        partitions=partitions,
    )


def _every_figure(catalog: TableCatalog) -> dict[str, dict[str, Any]] | None:
    """Every table's figures as the catalog read them just now, where it read them all
    (MySQL and MariaDB: its row of TABLES, which the server opens each table to give)."""
    _, figures = catalog.fresh_figures(MAX_AGE_SECONDS)
    return figures if figures and len(figures) == len(catalog.tables) else None


def planned_tools(registry: Registry, agent: str, dialect: str) -> tuple[PlannedTool, ...]:
    """The catalog's tools that ask `agent` to plan them (their `planned:`), among those
    implemented on this dialect."""
    return tuple(
        PlannedTool(tool.name, where.after, tuple(where.types), where.rationale)
        for tool in registry.find()
        if dialect in tool.implementations and (where := tool.planned.get(agent)) is not None
    )


def _refuse_claimed_archive(config: Config, job: dict[str, Any]) -> None:
    """A purge's archive file that a run not finished archives into: refused before
    anything runs, naming that run (the purge checks again before it makes the file)."""
    if not job.get("archive_file"):
        return
    path = Path(job["archive_file"])
    with signed_store(config) as store:
        others = store.runs_progressing_with(ARCHIVE_PATH, archive_key(path), FINISHED, "")
    if others:
        raise UsageError(claimed(path, *others[0]))


def _refuse_undeclared(agent: Agent, steps: Sequence[Step], planned: Sequence[PlannedTool]) -> None:
    """An agent plans only the tools it declares, and those the catalog asks it to."""
    allowed = {*agent.spec.tools, *(p.tool for p in planned)}
    extra = sorted({s.tool for s in steps} - allowed)
    if extra:
        declared = ", ".join(agent.spec.tools) or "none"
        raise PlanError(
            f"{_the_plan_of(agent.name)} has {', '.join(extra)}, which the agent does not "
            f"declare (its AgentSpec.tools: {declared})"
        )


def _checked_tables(
    agent: Agent, job: dict[str, Any], catalog: TableCatalog, conn: Connection, target: str
) -> tuple[str, ...]:
    """The tables the job works on (those it names, else every table), once the target
    is known to have them and the agent's own check of the job passes."""
    if job.get("tables"):
        catalog.check_tables(conn, target, job["tables"])
        tables = tuple(job["tables"])
    else:
        tables = tuple(catalog.names)
    try:
        agent.check_job(job, conn)
    except DBAPIError as exc:
        if exc.connection_invalidated or not is_lock_timeout(exc):
            raise
        with suppress(DBAPIError):
            conn.rollback()  # PostgreSQL answers nothing else in the failed transaction
        # The tables the job names, and a purge's archive table: one of them is held.
        named = [*(job.get("tables") or [job.get("table")]), job.get("archive_table")]
        held = [str(each) for each in dict.fromkeys(named) if each]
        raise TableHeld(
            f"{', '.join(held) or 'a table'} could not be read to check the "
            f"{agent.name} job: held ({server_message(exc)}), by "
            f"{lock_holders(conn, held)}; plan again once it is released"
        ) from exc
    return tables


def _check_named(
    registry: Registry, steps: Sequence[Step], catalog: TableCatalog, conn: Connection, target: str
) -> None:
    """The tables and columns a plan's steps name (their x-identifier params given as
    names, not ${...} references) are the target's, before the plan is shown or run:
    a job naming a table the target lacks is refused as maintenance's is, whichever
    agent planned it."""
    for step in steps:
        if not isinstance(step, Step) or step.tool not in registry.tools:
            continue  # the plan's validation names what is wrong with it
        tool = registry.get(step.tool)
        named = [t for t in tool.tables_in(step.params) if "${" not in t]
        catalog.check_tables(conn, target, named)
        table = step.params.get("table")
        for param, (kind, is_list) in tool.identifiers.items():
            given = step.params.get(param)
            values = given if is_list and isinstance(given, list) else [given]
            if kind == "column" and isinstance(table, str) and "${" not in table:
                for column in values:
                    if isinstance(column, str) and "${" not in column:
                        catalog.check_column(conn, table, column)


def _plan(
    registry: Registry,
    handle: Target,
    agent_name: str,
    job: dict[str, Any],
    steps: Sequence[Step],
    assumptions: dict[str, Any],
    drafted_by: dict[str, Any],
) -> Plan:
    return Plan(
        agent=agent_name,
        target=handle.name,
        dialect=handle.dialect,
        job=job,
        steps=tuple(steps),
        # A tool the catalog lacks is the plan's validation's to name, with its step.
        tool_fingerprints={
            s.tool: registry.tools[s.tool].fingerprint for s in steps if s.tool in registry.tools
        },
        assumptions=assumptions,
        drafted_by=drafted_by,
    )


def _validated(plan: Plan, registry: Registry, capabilities: Iterable[str], what: str) -> Plan:
    problems = validate_plan(plan, registry, capabilities)
    if problems:
        raise PlanError(f"{what} is invalid: " + "; ".join(problems))
    return plan


def ask(
    config: Config,
    request: str,
    target: str | None = None,
    *,
    review: Review | None = None,
    **how: Unpack[RunHow],
) -> RunResult:
    """A request in words: the model picks the agent and drafts the plan, the validator
    checks it, `review` sees its preview, then it runs like any plan, approvals and all.

    A request whose every draft fails validation is refused with the reasons.
    """
    notice = planning_notice(how.get("observer"))
    return plan_and_start(
        config,
        target,
        lambda registry, handle: _request_plan(config, registry, handle, request, notice),
        review,
        **how,
    )


def _request_plan(
    config: Config, registry: Registry, handle: Target, request: str, notice: Notice | None
) -> Plan:
    """The model's plan for a request in words, as a validated Plan."""
    from aishell.planners.drafting import draft_words

    conn = handle.connect()
    try:
        catalog = TableCatalog.read(conn)
        draft = draft_words(config, registry, handle, conn, catalog.snapshot(), request, notice)
        tables = sorted({t for s in draft.steps for t in registry.get(s.tool).tables_in(s.params)})
        job = {"request": request.strip(), "tables": tables}
        assumptions = plan_assumptions(catalog, job, tables)
    finally:
        conn.close()
    if draft.agent not in JOB_OPTIONS:  # a plugin's agent may be given only what it declares
        planned = planned_tools(registry, draft.agent, handle.dialect)
        _refuse_undeclared(get_agent(draft.agent), draft.steps, planned)
    plan = _plan(registry, handle, draft.agent, job, draft.steps, assumptions, draft.drafted_by)
    return _validated(plan, registry, config.agent(plan.agent).capabilities, "The drafted plan")


def check_planner(config: Config) -> dict[str, Any]:
    """Whether the model planner can work: the server answers and has the model."""
    from aishell.planners.ollama import OllamaChat, shown_host

    chat = OllamaChat(config.main.planner.llm)
    try:
        models = chat.check_model()
        return {
            "host": shown_host(chat.host),
            "host_from": chat.host_from,
            "model": chat.model,
            "models": models,
            "default_planner": config.main.planner.default,
        }
    finally:
        chat.close()


def forget_drafts(config: Config, target: str | None = None) -> int:
    """Drop cached drafts (of one target, or all), so the model is asked again."""
    if target is not None:
        config.target(target)
    with StateStore(config.state_url) as store:
        return store.forget_plans(target)


def planning_notice(observer: Observer | None) -> Notice | None:
    """The observer's way to show that a model is drafting, if it has one."""
    return getattr(observer, "planning", None)
