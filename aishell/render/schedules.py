"""Schedules: their table, when they run next, and their scheduled runs' log lines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from aishell.render.base import STATUS_STYLE, plain, safe_text, styled


def log_line(out: Console, line: str) -> None:
    """One line of a scheduled run's log, as written: no markup, controls escaped."""
    out.print(safe_text(line))


def when(moment: Any) -> str:
    if moment is None:
        return "-"
    return f"{moment:%Y-%m-%d %H:%M %Z}"


def schedules_table(out: Console, schedules: list[dict[str, Any]]) -> None:
    if not schedules:
        out.print("No schedules; add one with `aishell schedule add NAME --cron ... -- JOB`.")
        return
    table = Table()
    for column in ("schedule", "cron", "job", "next run", "last run"):
        table.add_column(column, overflow="fold")
    for schedule in schedules:
        last = schedule["last_run"]
        last_text = (
            Text.assemble(f"{plain(last['run_id'])} ", styled(last["status"], STATUS_STYLE))
            if last
            else Text("-")
        )
        upcoming: str | Text = "paused" if schedule["paused"] else when(schedule["next_run"])
        due = schedule["next_run"]
        if not schedule["paused"] and due is not None and due < datetime.now(UTC):
            # Due while nothing served: it runs when `schedule serve` starts (within
            # the grace time), or is reported missed.
            upcoming = Text(f"overdue since {when(due)}", style="yellow")
        if schedule.get("cron_error"):
            upcoming = Text("never: its cron is not crontab's", style="red")
        if schedule.get("target_error"):
            upcoming = Text("fails: its target is not configured", style="red")
        if schedule.get("agent_error"):
            upcoming = Text("fails: its agent is not installed", style="red")
        if schedule.get("seal_error"):
            upcoming = Text("never: changed outside aishell", style="red")
        alert = schedule.get("alert")
        if alert:
            at = f"{alert['at'][:16].replace('T', ' ')} UTC"
            last_text = Text.assemble(last_text, (f"\n{alert['kind']} ({at})", "red"))
        table.add_row(
            safe_text(schedule["name"]),
            safe_text(f"{schedule['cron']} {schedule['timezone']}"),
            safe_text(" ".join(schedule["words"])),
            upcoming,
            last_text,
        )
    out.print(table)
    # Which field changed, and the fix: a line each, as serve's log says it.
    for schedule in schedules:
        if schedule.get("seal_error"):
            out.print(safe_text(schedule["seal_error"]), style="red")
