"""The fleet: one row per configured target (`aishell fleet status`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from aishell.render.base import STATUS_STYLE, safe_text, styled
from aishell.units import age_words


def fleet_table(out: Console, status: dict[str, Any]) -> None:
    if not status["targets"]:
        out.print("No targets are configured; add one with `aishell targets add`.")
        return
    table = Table()
    for column in (
        "target",
        "last run",
        "when (UTC)",
        "approvals",
        "proven backup",
        "next job (UTC)",
    ):
        table.add_column(column, overflow="fold")
    for row in status["targets"]:
        run, waiting, backup, job = (
            row["last_run"],
            row["approvals"],
            row["backup"],
            row["next_job"],
        )
        table.add_row(
            safe_text(row["target"]),
            _run(run),
            "-" if run is None else run["created_at"][:16].replace("T", " "),
            _waiting(waiting),
            safe_text(backup["reason"] or "none", "red")
            if backup["proven_at"] is None
            else Text(f"{age_words(backup['age_seconds'])} old"),
            _next(job),
        )
    out.print(table)


def _next(job: dict[str, Any] | None) -> Text:
    if job is None:
        return Text("-")
    if job.get("refused"):
        # Serve runs none of its triggers: as `schedule list` shows it.
        return safe_text(f"{job['schedule']} never: changed outside aishell", "red")
    return safe_text(f"{job['schedule']} {job['at'][:16].replace('T', ' ')}")


def _run(run: dict[str, Any] | None) -> Text:
    if run is None:
        return Text("never ran", style="dim")
    shown = Text.assemble(safe_text(f"{run['agent']} "), styled(run["status"], STATUS_STYLE))
    if run.get("dry_run"):
        shown.append(" (dry run)")  # it changed nothing: not the last time the agent ran
    refused = run.get("delivery_refused")
    if refused:
        # Nothing in the queue resumes it: said where its status is, as `fleet show` says it.
        said = f"its last delivery was refused on {refused['hostname']} at {refused['at']}: "
        shown.append("\n").append(safe_text(said + refused["error"], style="red"))
    return shown


def _waiting(waiting: dict[str, Any]) -> Text:
    if not waiting["waiting"]:
        return Text("0")
    oldest = age_words(waiting["oldest_age_seconds"])
    return Text(f"{waiting['waiting']}, oldest {oldest}", style="yellow")
