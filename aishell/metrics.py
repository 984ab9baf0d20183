"""Prometheus metrics of the last run per target and agent, and of backups and schedules.

Text exposition for `aishell metrics`, or a file written atomically for
node_exporter's textfile collector.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest, write_to_textfile

from aishell.executor import RUN_STATUSES
from aishell.state import StateStore


def collect(store: StateStore, schedules: list[dict[str, Any]]) -> CollectorRegistry:
    registry = CollectorRegistry()
    labels = ["target", "agent"]
    status = Gauge(
        "aishell_last_run_status",
        "1 for the status of the last run per target and agent, 0 for the others",
        [*labels, "status"],
        registry=registry,
    )
    finished = Gauge(
        "aishell_last_run_finish_time_seconds",
        "When the last run finished (Unix time)",
        labels,
        registry=registry,
    )
    duration = Gauge(
        "aishell_last_run_duration_seconds", "How long the last run took", labels, registry=registry
    )
    steps = Gauge(
        "aishell_last_run_steps",
        "Steps of the last run by status",
        [*labels, "status"],
        registry=registry,
    )
    purged = Gauge(
        "aishell_last_run_rows_purged",
        "Rows the last run's purges deleted",
        labels,
        registry=registry,
    )
    backup_age = Gauge(
        "aishell_backup_age_seconds",
        "Age of the newest verified backup per target",
        ["target"],
        registry=registry,
    )
    next_run = Gauge(
        "aishell_schedule_next_run_time_seconds",
        "When each schedule next runs (Unix time; absent when paused)",
        ["schedule"],
        registry=registry,
    )
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for run in store.list_runs(limit=1000):  # newest first
        latest.setdefault((run["target"], run["agent"]), run)
    now = datetime.now(UTC)
    for (target, agent), run in sorted(latest.items()):
        full = store.get_run(run["run_id"])
        for value in RUN_STATUSES:
            status.labels(target, agent, value).set(1 if full["status"] == value else 0)
        started = datetime.fromisoformat(full["created_at"])
        if full["finished_at"]:
            ended = datetime.fromisoformat(full["finished_at"])
            finished.labels(target, agent).set(ended.timestamp())
            duration.labels(target, agent).set((ended - started).total_seconds())
        counts: dict[str, int] = {}
        rows = 0
        for step in full["steps"]:
            counts[step["status"]] = counts.get(step["status"], 0) + 1
            output = step.get("output") or {}
            if step["tool"] == "delete_old_records" and isinstance(output, dict):
                rows += int(output.get("rows_deleted") or 0)
        for value, count in counts.items():
            steps.labels(target, agent, value).set(count)
        if agent == "log_cleanup":
            purged.labels(target, agent).set(rows)
    for target in sorted({t for t, _ in latest}):
        newest = store.last_verified_backup(target)
        if newest is not None:
            backup_age.labels(target).set((now - newest).total_seconds())
    for schedule in schedules:
        if schedule.get("next_run") is not None:
            next_run.labels(schedule["name"]).set(schedule["next_run"].timestamp())
    return registry


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def write_textfile(registry: CollectorRegistry, path: Path) -> None:
    """Written beside the target and renamed over it: a reader never sees half a file."""
    write_to_textfile(str(path), registry)
