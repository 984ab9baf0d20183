"""Schedules: adding, listing, pausing and removing them, running one as its trigger
does, and the scheduler in the foreground. A scheduled run's progress lines go to this
module's logger (and take-back's, notify's and serve's, all under `aishell`)."""

from __future__ import annotations

import logging
import re
import shlex
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy.engine import make_url

from aishell.agents.archive import refuse_relative_archives
from aishell.agents.available import agent_names, get_agent
from aishell.agents.base import Agent, job_as_given
from aishell.agents.jobs import LEVEL_ADDED_UNDER, scheduled_options
from aishell.commands.runs import resume_run, run_job, show_run
from aishell.commands.takeback import failed_trigger, notify_run, take_back, waiting_for_lock
from aishell.commands.tools import load_catalog
from aishell.config.models import Config
from aishell.config.options import SAFETY_LEVELS
from aishell.dialects import family
from aishell.errors import AishellError, StateTampered, UsageError
from aishell.executor import WAITING_APPROVAL, RunResult
from aishell.policy.approvers import NonInteractive
from aishell.scheduling import nextruns
from aishell.scheduling import serve as scheduling
from aishell.scheduling.due import StoppedBeforeStart
from aishell.scheduling.stuck import refuse_tampered
from aishell.state.store import StateStore, checking_store, signed_store
from aishell.units import exact

SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Runs a schedule left unfinished (out of the window, or stopped) are resumed first.
UNFINISHED = ("interrupted", "out_of_window")
_RESUMING = "schedule %s: resuming unfinished run %s first"

logger = logging.getLogger(__name__)


def add_schedule(
    config: Config,
    name: str,
    cron: str,
    timezone: str,
    words: list[str],
    agent_name: str,
    job: dict[str, Any],
    target: str | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Check a schedule now, not at 2 a.m.: its name, cron, time zone, target and job."""
    if not SCHEDULE_NAME.match(name):
        raise UsageError(
            f"Schedule name {name!r}: use letters, digits, '.', '_' and '-' (at most 128)"
        )
    scheduling.check_timezone(timezone)
    first = scheduling.first_fire(cron, timezone)
    target_name, target_config = config.target(target)
    agent = get_agent(agent_name)
    job, normalized = job_as_given(agent, job, config.agent(agent_name))
    _check_names(config, agent, normalized, make_url(target_config.url).get_backend_name())
    options = _level_as_added(config, agent_name, target_name, options)
    with signed_store(config) as store:  # signed: serve runs only what was added here
        store.add_schedule(
            name=name,
            cron=cron,
            timezone=timezone,
            words=words,
            agent=agent_name,
            job=job,
            target=target_name,
            options=options,
        )
    return {"name": name, "cron": cron, "timezone": timezone, "next_run": first}


def _level_as_added(
    config: Config, agent_name: str, target: str, options: dict[str, Any]
) -> dict[str, Any]:
    """The options with the agent's safety level the schedule's own is given against
    (each trigger holds a level the agent tightened since: scheduled_level); a loosening
    a production target refuses without --force is refused now, not every night."""
    given = options.get("safety_level")
    if given is None:
        return options
    if given not in SAFETY_LEVELS:
        raise UsageError(f"--safety-level {given!r}: expected one of {', '.join(SAFETY_LEVELS)}")
    configured = config.agent(agent_name).defaults.safety_level
    loosens = SAFETY_LEVELS.index(given) > SAFETY_LEVELS.index(configured)
    production = config.main.targets[target].environment == "production"
    if loosens and production and not options.get("force"):
        raise UsageError(
            f"Target '{target}' is production: loosening the safety level from "
            f"{configured} to {given} needs --force"
        )
    return {**options, LEVEL_ADDED_UNDER: configured}


def _check_names(config: Config, agent: Agent, job: dict[str, Any], dialect: str) -> None:
    """Each value of the job that names a table, column or index (an option declared
    with an `identifier`, or a job key named as an `x-identifier` param of a tool the
    agent declares) is a name the target's engine can hold: refused now, in one line.
    Whether it exists is the run's to check (the target may be unreachable now, the
    table made before the schedule fires)."""
    registry = load_catalog(config)
    # The option's own word first: a package's option may feed a param of another name.
    kinds = {o.key: o.identifier for o in agent.spec.options if o.identifier}
    for tool in agent.spec.tools:
        if tool in registry.tools:
            for param, (kind, _) in registry.get(tool).identifiers.items():
                kinds.setdefault(param, kind)
    flags = {o.key: o.cli_flag for o in agent.spec.options}
    for key, value in job.items():
        names = value if isinstance(value, list | tuple) else [value]
        for name in names if key in kinds else ():
            wrong = name_problem(name, dialect) if isinstance(name, str) else ""
            if wrong:
                raise UsageError(
                    f"{flags.get(key, key)}: {name!r} {wrong}, so no {kinds[key]} has it"
                )


def name_problem(name: str, dialect: str) -> str:
    """Why no table, column or index of the engine can be named `name` ("": one may be):
    PostgreSQL cuts a name to 63 bytes (NAMEDATALEN - 1), so a longer one names another
    object; MySQL and MariaDB refuse over 64 characters, a trailing space, or a
    character past U+FFFF; no engine takes a NUL."""
    if "\x00" in name:
        return "holds a NUL character"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    engine = family(dialect)
    if engine == "postgresql" and size > 63:
        return f"is {size} bytes long, and PostgreSQL names are at most 63"
    if engine == "mysql" and len(name) > 64:
        return f"is {len(name)} characters long, and MySQL names are at most 64"
    if engine == "mysql" and name.endswith(" "):
        return "ends with a space, which MySQL names may not"
    if engine == "mysql" and any(ord(c) > 0xFFFF for c in name):
        return "holds a character past U+FFFF, which MySQL names may not"
    return ""


def list_schedules(config: Config) -> list[dict[str, Any]]:
    """Every schedule with its next run and its last run's status, and `seal_error`: why
    serve runs none of its triggers, its row not being what the home's key signed."""
    found = []
    with checking_store(config) as store:
        alerts = store.schedule_alerts()
        schedules = store.list_schedules()
        held = nextruns.next_runs(config, schedules)
        for schedule in schedules:
            name = schedule["name"]
            upcoming, cron_error = nextruns.upcoming(schedule, held)
            recent = store.schedule_runs(name, limit=1)
            found.append(
                {
                    **schedule,
                    "next_run": None if schedule["seal_error"] else upcoming,
                    "cron_error": cron_error,
                    "agent_error": agent_missing(schedule),
                    "target_error": target_missing(schedule, config),
                    "last_run": recent[0] if recent else None,
                    "alert": _current_alert(alerts.get(name, []), recent),
                }
            )
    return found


def agent_missing(schedule: dict[str, Any]) -> str | None:
    """Why a schedule's agent cannot run: none of that name is installed (a package's,
    uninstalled since), so each trigger fails; None when it is there."""
    names = agent_names()
    if schedule["agent"] in names:
        return None
    return (
        f"schedule {schedule['name']} runs the agent '{schedule['agent']}', which is not "
        f"installed (agents are: {', '.join(names)}): each of its triggers fails"
    )


def target_missing(schedule: dict[str, Any], config: Config) -> str | None:
    """Why a schedule's target cannot be reached: it is not in the config (removed or
    renamed since), so each trigger fails; None when it is there (or the schedule runs
    on the default target)."""
    target = schedule.get("target")
    if target is None or target in config.main.targets:
        return None
    return (
        f"schedule {schedule['name']} runs on target '{target}', which is not configured "
        f"(targets are: {', '.join(sorted(config.main.targets))}): each of its triggers fails"
    )


def _current_alert(
    alerts: list[dict[str, Any]], recent: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The newest missed trigger, stuck run or refused trigger, unless a run has started
    since."""
    if not alerts:
        return None
    newest = alerts[0]
    ran_since = bool(recent) and recent[0]["started_at"] > newest["at"]
    if newest["kind"] in ("missed", "refused") and ran_since:
        return None
    if newest["kind"] == "stuck" and recent and recent[0]["status"] != "running":
        return None
    return newest


def added_again(schedule: dict[str, Any]) -> str:
    """How a schedule whose row its key did not sign is made anew: removed, and added
    again by the command that adds what it holds, to be checked first (a field written
    into the store since is in it)."""
    name = schedule["name"]
    add = ["aishell", "schedule", "add", name, "--cron", schedule["cron"]]
    add += ["--timezone", schedule["timezone"]]
    limit = schedule["options"].get("max_run_seconds")
    if isinstance(limit, int | float) and not isinstance(limit, bool):
        add += ["--max-run-time", exact(limit) + "s"]  # the command line's own form
    add += ["--", *schedule["words"]]
    return (
        f"aishell schedule remove {shlex.quote(name)}, then, if it is what you meant, "
        f"{shlex.join(add)}"
    )


def remove_schedule(config: Config, name: str) -> None:
    with StateStore(config.state_url) as store:
        store.remove_schedule(name)


def pause_schedule(config: Config, name: str, paused: bool) -> None:
    with signed_store(config) as store:
        store.set_schedule_paused(name, paused)


def run_schedule(
    config: Config,
    name: str,
    how: str = "run-now",
    stop: threading.Event | None = None,
) -> RunResult | None:
    """Run a schedule's job as its trigger does: runs its scheduler left behind first,
    then unfinished runs of the schedule, never a prompt, and the outcome to the
    notifiers. A trigger whose previous run still waits for approval starts nothing (the
    waiting run is notified again), so unapproved runs do not pile up night after night;
    `run-now` always runs. A run-now that cannot start raises; a trigger that cannot is
    stored as a failed run and notified, as any failure is, unless `stop` (the scheduler's
    own) ended its wait first: that raises StoppedBeforeStart, no failure of the run. How
    `recover` only takes back what was left; it starts nothing new. A schedule whose row
    is not what the home's key signed runs nothing: a trigger says so (refuse_tampered),
    a run-now raises."""
    try:
        with signed_store(config) as store:
            schedule = store.get_schedule(name)
    except StateTampered as exc:
        if how == "run-now":
            raise
        refuse_tampered(config, name, str(exc))
        return None
    try:
        return _trigger(config, schedule, how, stop or threading.Event())
    except StoppedBeforeStart:
        raise  # serve is stopping: the trigger is due again when it starts
    except AishellError as exc:
        if how == "run-now":
            raise
        failed_trigger(config, schedule, how, str(exc))
        return None
    except Exception as exc:  # an unattended trigger never ends unheard
        if how == "run-now":
            raise
        failed_trigger(config, schedule, how, f"{type(exc).__name__}: {exc}")
        return None


def _trigger(
    config: Config, schedule: dict[str, Any], how: str, stop: threading.Event
) -> RunResult | None:
    name, options = schedule["name"], schedule["options"]
    approver = NonInteractive(why=f"scheduled run of {name}")
    # Serve's take-back as it starts comes at no time of the schedule's: held to the
    # grace a trigger is; a trigger, in time itself, resumes what it finds.
    left = take_back(config, schedule["target"], approver, stop, graced=how == "recover")
    if how == "recover" or (left is not None and left.status in UNFINISHED):
        return left  # still not done: new work would meet the same wall
    with StateStore(config.state_url) as store:
        recent = store.schedule_runs(name, limit=5)
        unfinished = [r for r in recent if r["status"] in UNFINISHED]
    if how == "cron" and recent and recent[0]["status"] == WAITING_APPROVAL:
        waiting = show_run(config, recent[0]["run_id"])
        still = "schedule %s: run %s still waits for approval; not started again"
        logger.info(still, name, waiting["run_id"], extra={"run_id": waiting["run_id"]})
        notify_run(config, waiting, name, how)
        return None
    for earlier in reversed(unfinished):
        logger.info(_RESUMING, name, earlier["run_id"], extra={"run_id": earlier["run_id"]})
        resumed = waiting_for_lock(
            config,
            partial(
                resume_run,
                config,
                earlier["run_id"],
                approver=approver,
                max_run_seconds=options.get("max_run_seconds"),
            ),
            f"schedule {name}",
            stop,
        )
        ids = {"run_id": earlier["run_id"]}
        logger.info("schedule %s: run %s %s", name, earlier["run_id"], resumed.status, extra=ids)
        notify_run(config, resumed.to_dict(), name, how)
        if resumed.status in UNFINISHED:
            return resumed  # still not done: the new run would meet the same wall
    return _new_run(config, schedule, how, approver, stop)


def _new_run(
    config: Config,
    schedule: dict[str, Any],
    how: str,
    approver: NonInteractive,
    stop: threading.Event,
) -> RunResult:
    """The trigger's new run, with the schedule's options as they hold now."""
    name = schedule["name"]
    configured = config.agent(schedule["agent"]).defaults.safety_level
    options, held = scheduled_options(schedule["options"], configured)
    if held is not None:
        logger.warning("schedule %s: %s", name, held)
    result = waiting_for_lock(
        config,
        lambda: run_job(
            config,
            schedule["agent"],
            _stored_job(schedule),
            schedule["target"],
            dry_run=bool(options.get("dry_run")),
            approver=approver,
            safety_level=options.get("safety_level"),
            force=bool(options.get("force")),
            ignore_window=bool(options.get("ignore_window")),
            reason=options.get("reason"),
            planner=options.get("planner"),
            schedule=(name, how),
            max_run_seconds=options.get("max_run_seconds"),
        ),
        f"schedule {name}",
        stop,
    )
    ids = {"run_id": result.run_id}
    logger.info("schedule %s: run %s %s", name, result.run_id, result.status, extra=ids)
    notify_run(config, result.to_dict(), name, how)
    return result


def _stored_job(schedule: dict[str, Any]) -> dict[str, Any]:
    """The schedule's job, refused where it holds a relative file archive."""
    refuse_relative_archives(schedule, get_agent(schedule["agent"]).spec.options)
    return dict(schedule["job"])


def serve_schedules(
    config: Config,
    stop: threading.Event | None = None,
    standby: bool = False,
    fleet: bool = False,
    reload: Callable[[], Config] | None = None,
) -> list[str]:
    """The scheduler in the foreground, until SIGTERM or SIGINT; the runs still going
    when it gave up waiting for them (scheduling.STOP_SECONDS), to be left behind. With
    `standby`, it first waits for the scheduler serving the store to end; with `fleet`,
    each due job goes to the queue as a fleet job instead of running here. `reload`
    reads the config again: each trigger runs on what its files hold then, and none runs
    while they do not load (refuse_trigger)."""
    from aishell.commands.fleet import queue_schedule  # the queue only for --fleet

    run = queue_schedule if fleet else run_schedule
    return scheduling.serve(
        config, run, stop, standby=standby, reload=reload, refuse=refuse_trigger
    )


def refuse_trigger(config: Config, name: str, how: str, reason: str) -> None:
    """A trigger serve does not run (its config's files no longer load): stored as a
    failed run and notified, as a trigger that cannot start is."""
    with signed_store(config) as store:
        schedule = store.get_schedule(name)
    failed_trigger(config, schedule, how, reason)
