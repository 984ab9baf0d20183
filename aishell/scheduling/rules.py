"""What each alert rule finds firing now, read from the state store: failed runs, steps
running past a limit, runs waiting for approval past a limit, targets whose newest
restore-proven backup is older than a limit, schedules whose due trigger started no run.

Each finding names its occurrence: what makes it a new alert rather than the same one
still firing (the run's end, the step's start, the waiting's start, the newest backup,
the due time). Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aishell.config.models import Config
from aishell.config.monitoring import AlertRule
from aishell.errors import UsageError
from aishell.scheduling.crontab import CrontabTrigger
from aishell.scheduling.notify import approve_with
from aishell.state.store import StateStore
from aishell.units import exact, stamp, took


@dataclass(frozen=True)
class Finding:
    """One alert firing: what it is about, which occurrence, and what to tell."""

    subject: str
    occurrence: str
    summary: str  # one line a person acts on
    details: dict[str, Any] = field(default_factory=dict)  # run_id, step, target, ...


@dataclass(frozen=True)
class Facts:
    """What every rule reads, read once per evaluation."""

    config: Config
    store: StateStore
    now: datetime
    runs: list[dict[str, Any]]


def _age(now: datetime, when: str | None) -> float:
    return 0.0 if when is None else (now - datetime.fromisoformat(when)).total_seconds()


def _wanted(rule: AlertRule, target: str | None) -> bool:
    return rule.targets is None or target in rule.targets


def run_failed(rule: AlertRule, facts: Facts) -> Iterator[Finding]:
    """A run that ended failed with more failed steps than the limit (a run that failed
    before any step counts one); it resolves when a resume ends it otherwise, or a later
    run of its agent on its target completes (last night's failure is over)."""
    completed: dict[tuple[str, str], str] = {}
    for run in facts.runs:  # oldest first: the newest completed run of each kind wins
        if run["status"] == "completed":
            completed[(run["agent"], run["target"])] = run["created_at"]
    for run in facts.runs:
        if run["status"] != "failed" or not _wanted(rule, run["target"]):
            continue
        if completed.get((run["agent"], run["target"]), "") > run["created_at"]:
            continue
        failed = [s["idx"] for s in run["steps"] if s["status"] == "failed"]
        if max(len(failed), 1) <= rule.limit:
            continue
        yield Finding(
            run["run_id"],
            run["finished_at"] or run["created_at"],
            f"run {run['run_id']} ({run['agent']} on {run['target']}) failed: {run['error']}",
            {
                "run_id": run["run_id"],
                "agent": run["agent"],
                "target": run["target"],
                "error": run["error"],
                "failed_steps": failed,
                "errors_encountered": max(len(failed), 1),
            },
        )


def step_slow(rule: AlertRule, facts: Facts) -> Iterator[Finding]:
    """A step of a running run that has run longer than the limit; it resolves when the
    step ends."""
    for run in facts.runs:
        if run["status"] != "running" or not _wanted(rule, run["target"]):
            continue
        for step in run["steps"]:
            running = _age(facts.now, step["started_at"])
            if step["status"] != "running" or running <= rule.limit:
                continue
            yield Finding(
                f"{run['run_id']}/{step['idx']}",
                step["started_at"],
                f"run {run['run_id']} step {step['idx']} ({step['tool']}) has run "
                f"{took(running, 0)}, over {took(rule.limit, None)}",
                {
                    "run_id": run["run_id"],
                    "step": step["idx"],
                    "tool": step["tool"],
                    "target": run["target"],
                    "execution_time": round(running),
                },
            )


def approval_waiting(rule: AlertRule, facts: Facts) -> Iterator[Finding]:
    """A run that has waited for approval longer than the limit; it resolves when it is
    approved and resumed, or denied."""
    for run in facts.runs:
        if run["status"] != "waiting_approval" or not _wanted(rule, run["target"]):
            continue
        since = run["finished_at"] or run["created_at"]
        waited = _age(facts.now, since)
        if waited <= rule.limit:
            continue
        steps = [s["idx"] for s in run["steps"] if s["status"] == "waiting_approval"]
        yield Finding(
            run["run_id"],
            since,
            f"run {run['run_id']} ({run['agent']} on {run['target']}) has waited "
            f"{took(waited, 0)} for approval: {approve_with(run['run_id'], steps)}",
            {
                "run_id": run["run_id"],
                "agent": run["agent"],
                "target": run["target"],
                "waiting_steps": steps,
                "approval_wait": round(waited),
            },
        )


def backup_stale(rule: AlertRule, facts: Facts) -> Iterator[Finding]:
    """A target whose newest backup proven by a restore (a passing validate_backup), of
    the database it reaches now (newest_restorable), is older than the limit, or that
    has none, or whose database is unknown (its config or SQLite file changed since a run
    reached it, or none has): no age is vouched, and `reason` says why. It resolves with
    a newer proven backup of that database."""
    names = [t for t in sorted(facts.config.main.targets) if _wanted(rule, t)]
    found = facts.store.newest_restorable(facts.config, names)
    for target in names:
        newest = found[target]
        age = newest.age_seconds(facts.now)
        hours = None if age is None else age / 3600
        if hours is not None and hours <= rule.limit:
            continue
        taken = (
            None if newest.created_at is None else stamp(datetime.fromisoformat(newest.created_at))
        )
        summary = (
            f"target {target}: no backup age is vouched ({newest.reason})"
            if hours is None
            else f"target {target}: the newest restore-proven backup is {hours:.1f} h old, "
            f"over {exact(rule.limit)} h"
        )
        yield Finding(
            target,
            taken or newest.unknown_key or "never",
            summary,
            {
                "target": target,
                "backup_created_at": taken,
                "backup_age_hours": None if hours is None else round(hours, 2),
                "reason": newest.reason,
            },
        )


def schedule_missed(rule: AlertRule, facts: Facts) -> Iterator[Finding]:
    """A schedule whose trigger was due longer ago than the limit (by default the
    scheduler's misfire grace) and started no run since: serve is down, or gave up on
    it. A trigger that starts nothing because the last run still waits for approval is
    approval_waiting's. It resolves when the schedule's next run starts, or it is
    paused or removed."""
    grace = facts.config.main.scheduler.misfire_grace_seconds
    late_limit = grace if rule.limit < 0 else rule.limit
    for schedule in facts.store.list_schedules():
        if schedule["paused"] or not _wanted(rule, schedule["target"]):
            continue
        recent = facts.store.schedule_runs(schedule["name"], limit=1)
        if recent and recent[0]["status"] == "waiting_approval":
            continue
        since = max([schedule["created_at"], *(r["started_at"] for r in recent)])
        due = _due_after(schedule, datetime.fromisoformat(since))
        if due is None or (facts.now - due).total_seconds() <= late_limit:
            continue
        yield Finding(
            schedule["name"],
            stamp(due),
            f"schedule {schedule['name']} was due at {stamp(due)} and started no run",
            {
                "schedule": schedule["name"],
                "target": schedule["target"],
                "due": stamp(due),
                "schedule_late": round((facts.now - due).total_seconds()),
            },
        )


def _due_after(schedule: dict[str, Any], since: datetime) -> datetime | None:
    """The schedule's first fire time after `since`; None for a cron no longer taken
    (serve says so when it starts)."""
    try:
        trigger = CrontabTrigger(schedule["cron"], schedule["timezone"])
    except (UsageError, ValueError, KeyError):
        return None
    due: datetime | None = trigger.get_next_fire_time(since, since)
    return None if due is None else due.astimezone(UTC)


Rule = Callable[[AlertRule, Facts], Iterator[Finding]]
FINDERS: dict[str, Rule] = {
    "run_failed": run_failed,
    "step_slow": step_slow,
    "approval_waiting": approval_waiting,
    "backup_stale": backup_stale,
    "schedule_missed": schedule_missed,
}


def lookback_start(config: Config, now: datetime) -> str:
    return stamp(now - timedelta(hours=config.main.monitoring.lookback_hours))
