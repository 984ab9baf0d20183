"""Runs after the fact: the summary a run ends with, the runs list, one run in detail
and the statements it sent."""

from __future__ import annotations

import re
import shlex
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from aishell import units
from aishell.render.base import (
    RISK_STYLE,
    STATUS_STYLE,
    SUMMARY_FROM,
    alike,
    cutoff_text,
    human_size,
    names_summary,
    plain,
    safe_text,
    step_subject,
    steps_label,
    styled,
)
from aishell.terminal import printable

if TYPE_CHECKING:  # the runs list draws stored runs: no need of the step loop's results
    from aishell.executor import RunResult, StepResult


def _purge_preview(step: StepResult) -> list[str]:
    estimate = step.estimate or {}
    if "rows_to_delete" not in estimate:
        return []
    about = "about " if estimate.get("estimated") else ""
    lines = [
        f"    would delete {about}{estimate['rows_this_run']:,} of {about}"
        f"{estimate['table_rows']:,} rows (older than {cutoff_text(estimate)}), walking "
        f"{estimate['key']}"
    ]
    if estimate.get("how"):
        lines.append(f"    estimated from {estimate['how']}")
    params = step.params or {}
    if params.get("archive_file"):
        lines.append(f"    each row archived first to the file {params['archive_file']}")
    elif params.get("archive_table"):
        lines.append(f"    each row archived first to the table {params['archive_table']}")
    else:
        lines.append("    not archived: deleted rows cannot be brought back")
    lines += [f"    warning: {w}" for w in estimate.get("warnings", [])]
    return [printable(line) for line in lines]


def _reach_preview(group: list[StepResult]) -> list[str]:
    """What the steps' writes do beyond the rows they name (each step's own: alike steps
    on other tables may differ)."""
    lines: list[str] = []
    for step in group:
        estimate = step.estimate or {}
        lines += [f"    {said}" for said in estimate.get("cascades") or []]
        lines += [f"    {said}" for said in estimate.get("fires") or []]
        lines += [f"    {said}" for said in estimate.get("user_code") or []]
    return [printable(line) for line in lines]


def run_summary(out: Console, result: RunResult) -> None:
    report = result.report
    if report:
        out.print(safe_text(f"Report: {report.get('summary')}"))
        size_before, size_after = report.get("size_before"), report.get("size_after")
        if size_before is not None:
            out.print(f"Database size: {human_size(size_before)} -> {human_size(size_after)}")
    if result.dry_run:
        _dry_run_steps(out, [s for s in result.steps if s.status == "previewed"])
        # What would not run, and why: a condition that did not hold, a table gone.
        for step in (s for s in result.steps if s.status == "skipped" and s.error):
            out.print(safe_text(f"  {step.step_id} {step.tool}: {step.error}", "dim"))
    counts: dict[str, int] = {}
    for step in result.steps:
        counts[step.status] = counts.get(step.status, 0) + 1
    tally = plain(", ".join(f"{n} {s}" for s, n in counts.items()))
    out.print(
        Text.assemble(
            f"Run {plain(result.run_id)} ",
            (result.status, STATUS_STYLE.get(result.status, "")),
            f" ({tally})",
        )
    )
    if result.error:
        out.print(safe_text(result.error, "red"))
    if result.status == "waiting_approval":
        out.print(safe_text(_approve_hint(result)))
    elif result.status == "out_of_window":
        out.print(f"Continue inside the window with `aishell resume {result.run_id}`.")


def _approve_hint(result: RunResult) -> str:
    """The commands that take the run on: a step only a person may pass (a purge over
    its limits) is approved by its number, which `aishell approve RUN` alone refuses."""
    run = result.run_id
    waiting = [s for s in result.steps if s.status == "waiting_approval"]
    named = [s.index for s in waiting if s.personal]
    others = len(waiting) > len(named)
    if not named:
        approve = f"`aishell approve {run}`"
    else:
        each = ", ".join(f"`aishell approve {run} --step {n}`" for n in named)
        whose = "its" if len(named) == 1 else "each its"
        approve = f"{each} ({whose} own approval: no flag covers it)"
        if others:
            approve += f" and `aishell approve {run}` for the other waiting steps"
    return (
        f"Approve with {approve}, then `aishell resume {run}`; or end the run with "
        f"`aishell deny {run}`."
    )


def _dry_run_steps(out: Console, previewed: list[StepResult]) -> None:
    """What a dry run previewed: each step's SQL; over SUMMARY_FROM steps, alike steps
    (same tool and risk) as one line with the first one's SQL."""
    out.print(f"Dry run: nothing was changed; {len(previewed)} step(s) previewed.")
    groups = (
        [[step] for step in previewed]
        if len(previewed) <= SUMMARY_FROM
        else alike(previewed, lambda s: (s.tool, s.risk_level))
    )
    for group in groups:
        step = group[0]
        subject = (
            step_subject(step.params)
            if len(group) == 1
            else names_summary([name for s in group if (name := step_subject(s.params))])
        )
        out.print(
            Text(f"  {steps_label([s.step_id for s in group])} ")
            + safe_text(f"{step.tool} ")
            + Text(f"{subject}: ")
            + safe_text(" ; ".join(step.sql), newlines=True)
            + Text(f" (and its like for the other {len(group) - 1:,})" if len(group) > 1 else "")
        )
        if step.locks is not None:
            out.print(Text(f"    lock: {'; '.join(step.locks.in_brief())}"))
        for line in _purge_preview(step) + _reach_preview(group):
            out.print(Text(line))
    if len(groups) < len(previewed):
        out.print(
            f"{len(previewed):,} previewed steps shown as {len(groups)} lines of alike steps; "
            "`aishell plan ... --all` shows each step, --json every detail."
        )


# --- the runs in the state store ---------------------------------------------------------


def runs_table(out: Console, rows: list[dict[str, Any]], after_this: str | None = None) -> None:
    """The runs, and `after_this`, the command that lists the next page, when there is one."""
    if not rows:
        out.print("No runs yet.")
        return
    table = Table()
    for column in ("run id", "job", "target", "status", "started (UTC)", "took"):
        table.add_column(column, no_wrap=column in ("run id", "status", "started (UTC)"))
    for row in rows:
        job = f"{row['agent']} {row['job'].get('type', '')}".strip()
        table.add_row(
            safe_text(row["run_id"]),
            safe_text(job + (" (dry run)" if row["dry_run"] else "")),
            safe_text(row["target"]),
            styled(row["status"], STATUS_STYLE),
            row["created_at"][:16].replace("T", " "),
            _took(row["created_at"], row["finished_at"]),
        )
    out.print(table)
    if after_this:
        out.print(safe_text(f"Older runs: {after_this}"))


def approvals_table(out: Console, rows: list[dict[str, Any]]) -> None:
    if not rows:
        out.print("No step waits for an approval.")
        return
    table = Table()
    for column in ("run id", "target", "step", "tool", "risk", "why", "asked (UTC)"):
        table.add_column(column, overflow="fold", no_wrap=column in ("run id", "risk"))
    for row in rows:
        tool = row["tool"] + (f" {row['subject']}" if row["subject"] else "")
        table.add_row(
            safe_text(row["run_id"]),
            safe_text(row["target"]),
            str(row["index"]),
            safe_text(tool),
            styled(row["risk_level"], RISK_STYLE),
            safe_text("; ".join(row["reasons"])),
            (row["asked_at"] or "")[:16].replace("T", " "),
        )
    out.print(table)
    out.print(
        "Decide with `aishell approve RUN_ID` (a step only a person may pass, such as a "
        "purge over its limits: `aishell approve RUN_ID --step STEP`) or `aishell deny RUN_ID`."
    )


def _took(started: str, finished: str | None) -> str:
    if not finished:
        return "-"
    seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return units.took(seconds, places=1)


def run_detail(out: Console, run: dict[str, Any]) -> None:
    # Here, not at the top: the figures are for one run's detail, not the runs list.
    from aishell.render.figures import step_figures

    out.print(
        Text.assemble(
            ("Run ", "bold"),
            (plain(run["run_id"]), "bold"),
            plain(f"  {run['agent']} {run['job'].get('type', '')} on {run['target']}  "),
            (run["status"], STATUS_STYLE.get(run["status"], "")),
            "  (dry run)" if run["dry_run"] else "",
        )
    )
    ended = f"finished {run['finished_at']}" if run["finished_at"] else "not finished"
    out.print(safe_text(f"started {run['created_at']} by {run['started_by']}; {ended}"))
    if run["error"]:
        out.print(safe_text(run["error"], "red"))
    for lifted in run.get("window_ignored") or []:
        out.print(
            safe_text(
                f"maintenance window ignored by {lifted['by']} at {lifted['at']}: "
                f"{lifted['reason']}",
                "yellow",
            )
        )
    for step in run["steps"]:
        tries = f"  attempt {step['attempts']}" if step["attempts"] > 1 else ""
        out.print(
            Text.assemble(
                (f"{step['index']:>3} ", "bold"),
                f"{plain(step['tool'])}  ",
                (step_subject(step["params"] or {}), "bold"),
                "  ",
                styled(step["risk_level"], RISK_STYLE),
                "  ",
                styled(step["status"], STATUS_STYLE),
                tries,
            )
        )
        detail = step["error"] or step_figures(step["output"])
        if detail:
            out.print(safe_text(f"    {detail}", "red" if step["error"] else "dim"))
    for approval in run["approvals"]:
        out.print(
            safe_text(
                f"step {approval['step_idx']}: {approval['decision']} by "
                f"{approval['decided_by']} ({approval['how']}) at {approval['at']}: "
                f"{approval['reason']}"
            )
        )


def steps_left(out: Console, run: dict[str, Any], options: list[str]) -> None:
    """Which of a run's steps `runs show` showed, and the command that shows the next
    ones (with `options` besides --step), when it did not show them all."""
    count, shown = run["sizes"]["steps"], run["steps"]
    if not shown or len(shown) == count:
        return
    line = f"Steps {shown[0]['index']:,} to {shown[-1]['index']:,} of {count:,} shown"
    if run["next_step"] is not None:
        more = ["aishell", "runs", "show", run["run_id"], "--step", str(run["next_step"])]
        more += options
        line += f"; the next: {shlex.join(more)}"
    out.print(safe_text(line + "."))


def statements(out: Console, rows: list[dict[str, Any]]) -> None:
    """The statement audit: one line per statement, in the order they were sent."""
    if not rows:
        out.print("No statements recorded.")
        return
    for row in rows:
        took = _took(row["started_at"], row["finished_at"]) if row["finished_at"] else "unfinished"
        rows_text = f" rows={row['rows']}" if row["rows"] is not None else ""
        error = f" error: {row['error']}" if row["error"] else ""
        sql = printable(" ".join(row["sql"].split()))
        out.print(
            Text.assemble(
                (f"step {row['step_index']} try {row['attempt']} ", "bold"),
                plain(f"{row['started_at'][11:23]} UTC {took}{rows_text}{error}  "),
                (sql, "dim"),
                plain(_values_apart(row)),
            )
        )


# A placeholder left in the text as the server received it: PostgreSQL's $1, SQLite's
# :name (MySQL's values are in the text already, quoted as the driver sent them).
_PLACEHOLDER = re.compile(r"\$\d+|(?<![:\w]):[A-Za-z_]\w*")


def _values_apart(row: dict[str, Any]) -> str:
    """The values a statement was sent with apart from its text, each exactly as it was
    recorded (a cutoff with its microseconds): what the statement ran with."""
    values = row.get("parameters")
    if not isinstance(values, dict) or not values or not _PLACEHOLDER.search(row["sql"]):
        return ""
    return "  with " + ", ".join(f"{name}={_value(values[name])}" for name in sorted(values))


def _value(value: Any) -> str:
    """A bound value as recorded; a batch's list of keys as how many it holds."""
    if isinstance(value, list) and len(value) > 10:
        return f"[{len(value):,} values]"
    return str(value)
