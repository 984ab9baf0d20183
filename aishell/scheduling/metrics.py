"""Prometheus metrics of the last run per target and agent, and per target of what waits
for approval, its newest restore-proven backup and its schedules' next runs.

Text exposition for `aishell metrics`, or a file written atomically for
node_exporter's textfile collector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.executor import RUN_STATUSES
from aishell.files import write_beside
from aishell.state.store import StateStore

_RUN = ("target", "agent")
# Each gauge: its name, its help, its labels.
_GAUGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "status": (
        "aishell_last_run_status",
        "1 for the status of the last run per target and agent, 0 for the others",
        (*_RUN, "status"),
    ),
    "finished": (
        "aishell_last_run_finish_time_seconds",
        "When the last run finished (Unix time)",
        _RUN,
    ),
    "started": (
        "aishell_last_run_start_time_seconds",
        "When the last run started (Unix time)",
        _RUN,
    ),
    "duration": ("aishell_last_run_duration_seconds", "How long the last run took", _RUN),
    "steps": ("aishell_last_run_steps", "Steps of the last run by status", (*_RUN, "status")),
    "purged": ("aishell_last_run_rows_purged", "Rows the last run's purges deleted", _RUN),
    "waiting": (
        "aishell_approvals_waiting",
        "Steps waiting for a person's approval per target",
        ("target",),
    ),
    "waited": (
        "aishell_approval_oldest_wait_seconds",
        "How long the oldest step waiting for approval has waited, per target (absent: none)",
        ("target",),
    ),
    "backup_age": (
        "aishell_backup_age_seconds",
        "Age of the newest restore-proven backup of the database each target reaches now "
        "(absent: it has none, or that database is unknown)",
        ("target",),
    ),
    "next_run": (
        "aishell_schedule_next_run_time_seconds",
        "When each schedule next runs, with the target it runs on (Unix time; absent when paused)",
        ("schedule", "target"),
    ),
}


def collect(
    config: Config,
    store: StateStore,
    schedules: list[dict[str, Any]],
    rows_purged: Mapping[str, str],
    targets: Sequence[str] = (),
) -> CollectorRegistry:
    """`rows_purged` maps each tool that deletes rows to its output's count of them;
    `targets`, the configured ones: each has its approvals and backup series even before
    its first run. A schedule naming no target runs on `default_target`."""
    registry = CollectorRegistry()
    gauge = {
        key: Gauge(name, about, list(labels), registry=registry)
        for key, (name, about, labels) in _GAUGES.items()
    }
    # A preview changed nothing: not the agent's last run. Read whatever the number of
    # newer runs: a weekly job's failure must not drop out of sight under nightly runs.
    latest = store.last_real_runs()
    now = datetime.now(UTC)
    # What the gauges show alone, counted by the store: never a run's every step read
    # (a run of 100,000 steps cost seconds and hundreds of megabytes).
    ids = [run["run_id"] for run in latest.values()]
    store.check_runs(ids)
    figures = store.step_figures(ids, rows_purged)
    for (target, agent), run in sorted(latest.items()):
        for value in RUN_STATUSES:
            gauge["status"].labels(target, agent, value).set(int(run["status"] == value))
        started = datetime.fromisoformat(run["created_at"])
        gauge["started"].labels(target, agent).set(started.timestamp())
        if run["finished_at"]:
            ended = datetime.fromisoformat(run["finished_at"])
            gauge["finished"].labels(target, agent).set(ended.timestamp())
            gauge["duration"].labels(target, agent).set((ended - started).total_seconds())
        counts, rows = figures[run["run_id"]]
        for value, count in counts.items():
            gauge["steps"].labels(target, agent, value).set(count)
        if rows is not None:
            gauge["purged"].labels(target, agent).set(rows)
    _per_target(config, store, gauge, sorted({*targets, *(t for t, _ in latest)}), now)
    for schedule in schedules:
        if schedule.get("next_run") is not None:
            gauge["next_run"].labels(schedule["name"], schedule["target"] or "").set(
                schedule["next_run"].timestamp()
            )
    return registry


def _per_target(
    config: Config, store: StateStore, gauge: dict[str, Gauge], targets: list[str], now: datetime
) -> None:
    """Waiting approvals (counted by the store) and backup ages of every target, one
    query each. A backup's age is that of the database the target reaches now
    (newest_restorable): a target whose database is unknown has none, as one without a
    proven backup."""
    waiting = store.waiting_counts(targets)
    newest = store.newest_restorable(config, targets)
    for target in targets:
        theirs = waiting.get(target)
        gauge["waiting"].labels(target).set(theirs["waiting"] if theirs else 0)
        if theirs:
            since = datetime.fromisoformat(theirs["oldest_since"])
            gauge["waited"].labels(target).set((now - since).total_seconds())
        age = newest[target].age_seconds(now)
        if age is not None:
            gauge["backup_age"].labels(target).set(age)


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def write_textfile(registry: CollectorRegistry, path: Path) -> None:
    """Written beside the target and renamed over it: a reader never sees half a file,
    and nothing but a regular file is replaced (never /dev/null, a link or a FIFO)."""
    write_beside(path, generate_latest(registry), "Metrics file", UsageError)
