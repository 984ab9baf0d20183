"""Jobs from option values: the dict each agent takes, as `aishell run` builds it and a
schedule stores it. The command line parses the options; what they mean for the job is
said here, once, so a scheduled job is the same job the command would run."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aishell.config.options import LOG_CLEANUP_OPTIONS, SAFETY_LEVELS, TABLES
from aishell.errors import UsageError

if TYPE_CHECKING:
    from aishell.agents.base import AgentSpec

# The parameters of `aishell run`'s jobs that say how to run, not what the job is.
RUN_OPTIONS = frozenset(
    {
        "target",
        "max_run_time",
        "planner",
        "dry_run",
        "yes",
        "approve_up_to",
        "non_interactive",
        "safety_level",
        "force",
        "ignore_window",
        "reason",
        "as_json",
    }
)

# Run options a schedule keeps for each of its runs, when they were given.
_SCHEDULED_OPTIONS = ("dry_run", "safety_level", "force", "planner")
# Stored with a schedule given its own --safety-level: the agent's configured level it was
# given against (scheduled_level).
LEVEL_ADDED_UNDER = "safety_level_added_under"


def maintenance_job(
    kind: str, tables: str | None, no_rebuild_indexes: bool, update_stats: bool = True
) -> dict[str, Any]:
    """`--type`, `--tables` (comma-separated), `--no-rebuild-indexes` and
    `--update-stats/--no-update-stats` as a job."""
    return {
        "type": kind,
        # Each table once, in the order given: a name repeated is the same table.
        "tables": list(dict.fromkeys(tables.split(","))) if tables is not None else None,
        "rebuild_indexes": not no_rebuild_indexes,
        "update_stats": update_stats,
    }


def named_tables(tables: object) -> list[str] | None:
    """The tables a job names, each once and in its order (None: every table)."""
    if tables is None:
        return None
    # A bare string would be taken a letter at a time.
    if not isinstance(tables, list | tuple) or not all(isinstance(t, str) for t in tables):
        raise UsageError(f"{TABLES.cli_flag}: {tables!r} is not a list of table names")
    named = [t.strip() for t in tables if t.strip()]
    if not named:
        raise UsageError(f"{TABLES.cli_flag} was given but names no table")
    return list(dict.fromkeys(named))


def backup_job(
    kind: str,
    verify: bool,
    quick: bool,
    cleanup: bool,
    retention_days: float,
    keep_last: int,
    lock_wait: float | None = None,
) -> dict[str, Any]:
    """`--lock-wait` left out: the dump steps' own default."""
    job = {
        "type": kind,
        "verify": verify,
        "quick": quick,
        "cleanup": cleanup,
        "retention_days": retention_days,
        "keep_last": keep_last,
    }
    if lock_wait is not None:
        job["lock_wait_seconds"] = lock_wait
    return job


def log_cleanup_job(**flags: Any) -> dict[str, Any]:
    """The job from the flags; flags left out take the agent's configured defaults."""
    names = {o.param: o.key for o in LOG_CLEANUP_OPTIONS}
    return {names.get(k, k): v for k, v in flags.items() if v is not None}


def _maintenance_options(params: dict[str, Any]) -> dict[str, Any]:
    return maintenance_job(
        params["kind"],
        params["tables"],
        params["no_rebuild_indexes"],
        params.get("update_stats", True),
    )


def _backup_options(params: dict[str, Any]) -> dict[str, Any]:
    return backup_job(
        params["kind"],
        params["verify"],
        params["quick"],
        params["cleanup"],
        params["retention_days"],
        params["keep_last"],
        params.get("lock_wait"),
    )


def _log_cleanup_options(params: dict[str, Any]) -> dict[str, Any]:
    return log_cleanup_job(**{k: v for k, v in params.items() if k not in RUN_OPTIONS})


# Each agent's job from `aishell run`'s parsed parameters, by the agent's name.
_FROM_OPTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "maintenance": _maintenance_options,
    "backup": _backup_options,
    "log_cleanup": _log_cleanup_options,
}


def job_from_options(
    name: str, params: dict[str, Any], declared: AgentSpec | None = None
) -> tuple[str, dict[str, Any]]:
    """(agent, job) for `aishell run NAME` from its parsed parameters (named as the
    command's options are: kind, tables, no_rebuild_indexes, ...); `declared`: the
    spec of an agent with no command of its own, whose options were made from it."""
    if declared is not None:
        return declared.name, declared_job(declared, params)
    agent = name.replace("-", "_")  # `log-cleanup` names the agent log_cleanup
    try:
        job_of = _FROM_OPTIONS[agent]
    except KeyError:
        known = sorted(_FROM_OPTIONS)
        raise UsageError(f"Unknown job {name!r}; jobs are: {', '.join(known)}") from None
    return agent, job_of(params)


def scheduled_job(
    name: str, params: dict[str, Any], declared: AgentSpec | None = None
) -> tuple[str, dict[str, Any], str | None, dict[str, Any]]:
    """What a schedule stores for `aishell run NAME` with these parsed parameters:
    (agent, job, target, options). Refused when they approve in advance."""
    # Here, not at the top: the approval rules import the policy and SQLAlchemy, which
    # the command line must not pay for at start.
    from aishell.policy.approvers import refuse_approval_in_advance
    from aishell.policy.window import window_override

    refuse_approval_in_advance(bool(params.get("yes")), params.get("approve_up_to"))
    # Nobody is there to give a reason when the schedule fires: it is given now, or the
    # schedule is refused; who is the user the scheduler runs as, recorded at each run.
    ignored = window_override(bool(params.get("ignore_window")), params.get("reason"), "")
    agent, job = job_from_options(name, params, declared)
    options = {k: params[k] for k in _SCHEDULED_OPTIONS if params.get(k)}
    if ignored is not None:
        options.update(ignore_window=True, reason=ignored.reason)
    if params.get("max_run_time") is not None:
        options["max_run_seconds"] = params["max_run_time"]
    return agent, job, params.get("target"), options


def declared_job(spec: AgentSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The job of an agent with no command of its own (`aishell run NAME`), from the
    options made from its declaration: each given value under its key; a flag given as
    --no-KEY turns its key off; what was not given is left to the agent."""
    job: dict[str, Any] = {}
    for option in spec.options:
        if option.flag is None or params.get(option.param) is None:
            continue
        value = params[option.param]
        if option.kind == "flag" and "/" not in option.cli_flag:
            if not value:
                continue  # a one-way flag not given: the agent's default
            value = not option.cli_flag.startswith("--no-")
        job[option.key] = value
    return job


def scheduled_options(
    options: dict[str, Any], configured: str
) -> tuple[dict[str, Any], str | None]:
    """A schedule's stored options as its trigger runs with them, under the agent's
    `configured` safety level now; and why its safety level is not its own, if it is not
    (scheduled_level)."""
    level, held = scheduled_level(options, configured)
    run = {key: value for key, value in options.items() if key != LEVEL_ADDED_UNDER}
    if held is not None:
        run["safety_level"] = level
    return run, held


def scheduled_level(options: dict[str, Any], configured: str) -> tuple[str | None, str | None]:
    """The safety level a schedule's trigger runs at (None: the agent's), and why it is
    not the schedule's own, if it is not. A --safety-level looser than the agent's level
    was decided against the level the agent had when the schedule was added: where the
    agent's level is stricter now (or that level is not known), no one decided to loosen
    this one, and the agent's level holds, as it does for a resumed run."""
    given = options.get("safety_level")
    if given not in SAFETY_LEVELS or configured not in SAFETY_LEVELS:
        return given, None  # none, or one the run refuses by name
    if SAFETY_LEVELS.index(given) <= SAFETY_LEVELS.index(configured):
        return given, None
    then = options.get(LEVEL_ADDED_UNDER)
    if then in SAFETY_LEVELS and SAFETY_LEVELS.index(then) <= SAFETY_LEVELS.index(configured):
        return given, None
    return configured, (
        f"its --safety-level {given} was given against the agent's "
        f"{then or 'unrecorded'} safety level, and the agent's level is {configured} now, "
        f"which holds: add the schedule again to run it at {given}"
    )
