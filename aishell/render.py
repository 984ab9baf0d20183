"""Human output with rich: tables, progress, the approval prompt. Nothing here decides."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.status import Status
from rich.table import Table
from rich.text import Text

from aishell.approval import PROMPT_CHOICES, ApprovalRequest
from aishell.commands import PlanPreview
from aishell.executor import RunResult, StepResult
from aishell.registry import ToolDefinition
from aishell.terminal import printable

STATUS_STYLE = {
    "succeeded": "green",
    "completed": "green",
    "previewed": "cyan",
    "skipped": "yellow",
    "waiting_approval": "yellow",
    "denied": "red",
    "failed": "red",
    "aborted": "red",
    "interrupted": "red",
    "running": "blue",
    "pending": "dim",
    "completed_with_denials": "yellow",
    "deferred": "yellow",
    "out_of_window": "yellow",
    "approved": "cyan",
}
RISK_STYLE = {
    "safe": "green",
    "low": "cyan",
    "medium": "yellow",
    "high": "red",
    "critical": "bold red",
}


def console(as_json: bool) -> Console:
    """Human output goes to stderr when stdout carries JSON."""
    return Console(stderr=as_json, highlight=False)


def _styled(value: str, styles: dict[str, str]) -> Text:
    return Text(printable(value), style=styles.get(value, ""))


def _text(value: Any, style: str = "", newlines: bool = False) -> Text:
    """Anything a database, a config file, a person or a model wrote, for the terminal:
    control characters escaped, and never read as rich markup or emoji codes."""
    return Text(printable("" if value is None else value, newlines=newlines), style=style)


def _p(value: Any) -> str:
    return printable("" if value is None else value)


def _subject(params: dict[str, Any]) -> str:
    """The table(s) a step works on, printable."""
    table = params.get("table")
    if isinstance(table, str):
        return printable(table)
    tables = params.get("tables")
    if isinstance(tables, list):
        return printable(", ".join(str(t) for t in tables)) if tables else "(all)"
    if isinstance(tables, str):
        return printable(tables)
    return ""


def _size(n: Any) -> str:
    if not isinstance(n, int | float):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# --- demo -------------------------------------------------------------------------------


@contextmanager
def demo_progress(out: Console, log_rows: int) -> Iterator[Callable[[str, int], None]]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} rows"),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}
        totals = {"app_logs": log_rows}

        def tell(label: str, done: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=totals.get(label, done))
            progress.update(tasks[label], completed=done)

        yield tell


def demo_result(out: Console, result: dict[str, Any]) -> None:
    rows = ", ".join(f"{t} {n:,}" for t, n in result["tables"].items())
    out.print(
        Text.assemble(
            "Demo database for target ",
            _text(result["target"], "bold"),
            ": ",
            _text(result["path"]),
        )
    )
    out.print(_text(f"{_size(result['size_bytes'])}; rows: {rows}"))


# --- plan and run -------------------------------------------------------------------------


def plan_preview(out: Console, preview: PlanPreview) -> None:
    plan = preview.plan
    out.print(
        Text.assemble(
            _text(f"{plan.agent} plan{_kind(plan.job)}", "bold"),
            " for target ",
            _text(plan.target),
            _text(f" [{preview.environment}, safety level {preview.safety_level}]"),
        )
    )
    drafted = plan.drafted_by
    if drafted.get("planner") == "llm":
        how = (
            "from the plan cache"
            if drafted.get("cached")
            else f"in {drafted.get('drafts')} draft(s)"
        )
        out.print(
            Text.assemble(
                ("Drafted by the model ", "cyan"),
                (_p(drafted.get("model")), "bold cyan"),
                (f" {how}; checked by the validator, gated by the policy", "cyan"),
            )
        )
        if drafted.get("summary"):
            out.print(_text(f"Model's summary: {drafted['summary']}", "dim"))
    if out.width >= 110:
        table = Table()
        table.add_column("step", no_wrap=True)
        table.add_column("tool", no_wrap=True)
        table.add_column("on", overflow="fold")
        table.add_column("risk", no_wrap=True)
        table.add_column("approval", no_wrap=True)
        table.add_column("SQL", overflow="fold", ratio=1)
        for step in preview.steps:
            table.add_row(
                _text(step.step_id),
                _text(step.tool),
                Text(_subject(step.params)),
                _styled(step.risk_level, RISK_STYLE),
                Text("needed", style="yellow") if step.requires_approval else Text("-"),
                Text(_sql_cell(step.risk_level, step.sql)),
            )
        out.print(table)
    else:
        # Too narrow for a SQL column: one block per step, its SQL indented below.
        for step in preview.steps:
            out.print(
                Text.assemble(
                    (f"{_p(step.step_id):<8}", "bold"),
                    f"{_p(step.tool)}  ",
                    (_subject(step.params), "bold"),
                    "  risk ",
                    _styled(step.risk_level, RISK_STYLE),
                    ("  approval needed" if step.requires_approval else "", "yellow"),
                )
            )
            for line in _sql_cell(step.risk_level, step.sql).splitlines():
                out.print(Text(f"        {line}", style="dim"))
    out.print(f"plan hash {plan.hash}")


def plan_warnings(out: Console, warnings: list[str]) -> None:
    for warning in warnings:
        out.print(_text(f"Warning: {warning}", "yellow"))


def _kind(job: dict[str, Any]) -> str:
    if job.get("request"):
        return f": {job['request']}"
    if job.get("type"):
        return f" ({job['type']})"
    return f" ({job['table']})" if job.get("table") else ""


def _sql_cell(risk: str, sql: list[str]) -> str:
    # Read-only analysis runs many catalog queries; `tools show` and --json list them.
    if risk == "safe" and len(sql) > 2:
        return f"(read-only: {len(sql)} catalog queries)"
    return "\n".join(printable(statement, newlines=True) for statement in sql)


class _RowsColumn(ProgressColumn):
    """Rows done, and of how many when the step knows (a purge told no expected count
    does not)."""

    def render(self, task: Task) -> Text:
        done = int(task.completed)
        if task.total is None:
            return Text(f"{done:,} rows")
        return Text(f"{done:,}/{int(task.total):,} rows")


class StepProgress:
    """A spinner while a step runs (a bar once it reports rows) and one line per step."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self._status: Status | None = None
        self._bar: Progress | None = None
        self._task: Any = None
        self._started = 0.0

    def step_progress(self, step: StepResult, figures: dict[str, Any]) -> None:
        """Figures from a long step: rows done, of how many, and how fast."""
        if "throttled" in figures and len(figures) == 1:
            if self._bar is not None:
                why = figures["throttled"]
                self._bar.update(self._task, note=escape(f"paused: {_p(why)}") if why else "")
            return
        if self._bar is None:
            self._stop()
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                _RowsColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                TextColumn("[yellow]{task.fields[note]}"),
                console=self.out,
                transient=True,
            )
            self._bar.start()
            total = figures.get("expected_rows") or None
            self._task = self._bar.add_task(
                escape(f"{_p(step.step_id)} {_p(step.tool)} {_subject(step.params)}"),
                total=total,
                rate="",
                note="",
            )
        rate = figures.get("rows_per_second")
        self._bar.update(
            self._task,
            completed=figures.get("rows_deleted", 0),
            rate=f"{rate:,} rows/s" if rate else "",
        )

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *_: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def planning(self, what: str | None) -> None:
        """A spinner while a model drafts the plan; None ends it."""
        self._stop()
        if what is not None:
            self._status = self.out.status(_text(what), spinner="dots")
            self._status.start()

    def step_started(self, step: StepResult, total: int) -> None:
        self._stop()
        self._started = time.monotonic()
        label = f"{_p(step.step_id)} {_p(step.tool)} {_subject(step.params)}"
        self._status = self.out.status(Text(label), spinner="dots")
        self._status.start()

    def step_finished(self, step: StepResult, total: int) -> None:
        self._stop()
        mark = {
            "succeeded": "✓",
            "previewed": "·",
            "skipped": "-",
            "waiting_approval": "?",
            "deferred": "…",
        }.get(step.status, "✗")
        style = STATUS_STYLE.get(step.status, "")
        took = f" {step.seconds:.2f}s" if step.seconds is not None else ""
        note = f"  {_p(step.error)}" if step.error else _purge_line(step.output)
        self.out.print(
            Text.assemble(
                (f"{mark} ", style),
                f"{_p(step.step_id)} {_p(step.tool)} ",
                (_subject(step.params), "bold"),
                (f" {step.status}{took}", style),
                (note, "dim"),
            )
        )


def _purge_line(output: Any) -> str:
    if not isinstance(output, dict):
        return ""
    if "rows_deleted" in output:
        line = (
            f"  {output['rows_deleted']:,} rows deleted in {output['batches']:,} batches, "
            f"{output.get('rows_per_second') or 0:,} rows/s, longest batch "
            f"{output.get('longest_batch_ms') or 0:g} ms"
        )
        if output.get("stopped_by"):
            line += f"; stopped early: {output['stopped_by']}"
        return printable(line)
    if "older_rows" in output:
        return printable(
            f"  {output['row_count']:,} rows, {output['older_rows']:,} older than "
            f"{output['cutoff']}"
        )
    return ""


def _purge_preview(step: StepResult) -> list[str]:
    estimate = step.estimate or {}
    if "rows_to_delete" not in estimate:
        return []
    lines = [
        f"    would delete {estimate['rows_this_run']:,} of {estimate['table_rows']:,} rows "
        f"(older than {estimate['cutoff']}), walking {estimate['key']}"
    ]
    lines += [f"    warning: {w}" for w in estimate.get("warnings", [])]
    return [printable(line) for line in lines]


def run_summary(out: Console, result: RunResult) -> None:
    report = result.report
    if report:
        out.print(_text(f"Report: {report.get('summary')}"))
        size_before, size_after = report.get("size_before"), report.get("size_after")
        if size_before is not None:
            out.print(f"Database size: {_size(size_before)} -> {_size(size_after)}")
    if result.dry_run:
        previewed = [s for s in result.steps if s.status == "previewed"]
        out.print(f"Dry run: nothing was changed; {len(previewed)} step(s) previewed.")
        for step in previewed:
            out.print(
                _text(f"  {step.step_id} {step.tool} ")
                + Text(f"{_subject(step.params)}: ")
                + _text(" ; ".join(step.sql), newlines=True)
            )
            for line in _purge_preview(step):
                out.print(Text(line))
    counts: dict[str, int] = {}
    for step in result.steps:
        counts[step.status] = counts.get(step.status, 0) + 1
    tally = _p(", ".join(f"{n} {s}" for s, n in counts.items()))
    out.print(
        Text.assemble(
            f"Run {_p(result.run_id)} ",
            (result.status, STATUS_STYLE.get(result.status, "")),
            f" ({tally})",
        )
    )
    if result.error:
        out.print(_text(result.error, "red"))
    if result.status == "waiting_approval":
        out.print(
            f"Approve with `aishell approve {result.run_id}` (or deny with `aishell deny "
            f"{result.run_id}`), then `aishell resume {result.run_id}`."
        )
    elif result.status == "out_of_window":
        out.print(f"Continue inside the window with `aishell resume {result.run_id}`.")


def approval_prompt(out: Console, request: ApprovalRequest) -> str:
    """Show everything about the step, then ask: yes, no, all (this risk level), quit."""
    if request.confirmation == "review":
        plan = Table(title="The whole plan, for review", title_justify="left")
        for column in ("step", "tool", "on", "risk"):
            plan.add_column(column, no_wrap=column != "on")
        for step_id, tool, subject, risk in request.plan:
            marker = " <" if step_id == request.step_id else ""
            plan.add_row(
                _text(f"{step_id}{marker}"), _text(tool), _text(subject), _styled(risk, RISK_STYLE)
            )
        out.print(plan)
    body = Table.grid(padding=(0, 2))
    body.add_row("target", _text(f"{request.target} ({request.environment})"))
    body.add_row("step", _text(f"{request.step_id} {request.tool}: {request.rationale}"))
    body.add_row("risk", _styled(request.risk, RISK_STYLE))
    body.add_row("params", _text(json.dumps(request.params, sort_keys=True, default=str)))
    body.add_row("SQL", _lines(request.sql))
    body.add_row("why asked", _lines(request.reasons))
    if request.risks:
        body.add_row("risks", _lines(request.risks))
    if request.mitigations:
        body.add_row("mitigations", _lines(request.mitigations))
    effect = _effect_text(request.estimate)
    if effect:
        body.add_row("effect", _text(effect, newlines=True))
    title = "Review needed" if request.confirmation == "review" else "Approval needed"
    out.print(Panel(body, title=title, border_style="yellow"))
    try:
        return click.prompt(
            "Run this step? (all = approve every remaining step at this risk)",
            type=click.Choice(PROMPT_CHOICES),
            default="no",
            show_choices=True,
            err=True,
        )
    except click.Abort as exc:
        # Ctrl-D ends the input: an answer the approver turns into no; Ctrl-C stays an
        # interruption.
        if isinstance(exc.__context__, EOFError):
            raise EOFError("end of input") from None
        raise


def _lines(items: Any) -> Text:
    """One item per line; a line break inside an item stays (SQL), other controls not."""
    return Text("\n".join(printable(item, newlines=True) for item in items))


def _effect_text(estimate: dict[str, Any]) -> str:
    lines = []
    for table, figures in (estimate.get("tables") or {}).items():
        lines.append(f"{table}: about {figures['rows']:,} rows, {_size(figures['bytes'])}")
    labels = {
        "indexes_to_rebuild": "indexes to rebuild",
        "index_bytes_to_rewrite": "index bytes to rewrite",
        "database_bytes_to_rewrite": "database bytes to rewrite",
        "free_bytes_to_reclaim": "free bytes to reclaim",
    }
    for key, label in labels.items():
        if key in estimate:
            value = estimate[key]
            shown = ", ".join(value) if isinstance(value, list) else _size(value)
            lines.append(f"{label}: {shown or 'none'}")
    return "\n".join(lines)


# --- runs ---------------------------------------------------------------------------------


def runs_table(out: Console, rows: list[dict[str, Any]]) -> None:
    if not rows:
        out.print("No runs yet.")
        return
    table = Table()
    for column in ("run id", "job", "target", "status", "started (UTC)", "took"):
        table.add_column(column, no_wrap=column in ("run id", "status", "started (UTC)"))
    for row in rows:
        job = f"{row['agent']} {row['job'].get('type', '')}".strip()
        table.add_row(
            _text(row["run_id"]),
            _text(job + (" (dry run)" if row["dry_run"] else "")),
            _text(row["target"]),
            _styled(row["status"], STATUS_STYLE),
            row["created_at"][:16].replace("T", " "),
            _took(row["created_at"], row["finished_at"]),
        )
    out.print(table)


def _took(started: str, finished: str | None) -> str:
    if not finished:
        return "-"
    from datetime import datetime

    seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def run_detail(out: Console, run: dict[str, Any]) -> None:
    out.print(
        Text.assemble(
            ("Run ", "bold"),
            (_p(run["run_id"]), "bold"),
            _p(f"  {run['agent']} {run['job'].get('type', '')} on {run['target']}  "),
            (run["status"], STATUS_STYLE.get(run["status"], "")),
            "  (dry run)" if run["dry_run"] else "",
        )
    )
    out.print(
        _text(f"started {run['created_at']} by {run['started_by']}; finished {run['finished_at']}")
    )
    if run["error"]:
        out.print(_text(run["error"], "red"))
    for step in run["steps"]:
        tries = f"  attempt {step['attempts']}" if step["attempts"] > 1 else ""
        out.print(
            Text.assemble(
                (f"{step['index']:>3} ", "bold"),
                f"{_p(step['tool'])}  ",
                (_subject(step["params"] or {}), "bold"),
                "  ",
                _styled(step["risk_level"], RISK_STYLE),
                "  ",
                _styled(step["status"], STATUS_STYLE),
                tries,
            )
        )
        detail = step["error"] or _output_digest(step["output"])
        if detail:
            out.print(_text(f"    {detail}", "red" if step["error"] else "dim"))
    for approval in run["approvals"]:
        out.print(
            _text(
                f"step {approval['step_idx']}: {approval['decision']} by "
                f"{approval['decided_by']} ({approval['how']}) at {approval['at']}: "
                f"{approval['reason']}"
            )
        )


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
                _p(f"{row['started_at'][11:23]} {took}{rows_text}{error}  "),
                (sql, "dim"),
            )
        )


def _output_digest(output: Any) -> str:
    if not isinstance(output, dict):
        return "" if output is None else str(output)
    if "summary" in output:
        return str(output["summary"])
    keys = (
        "row_count",
        "stat_rows",
        "fragmentation_percent",
        "indexes_rebuilt",
        "vacuumed",
        "reclaimed_bytes",
        "corrupted_tables",
        "repaired_tables",
        "database_size_bytes",
        "recommendation",
    )
    parts = [f"{k}={output[k]}" for k in keys if k in output]
    return ", ".join(parts)


# --- backups ------------------------------------------------------------------------------


def backups_table(
    out: Console, rows: list[dict[str, Any]], freshness: dict[str, dict[str, Any]]
) -> None:
    if not rows:
        out.print("No backups yet.")
        return
    for target in sorted({r["target"] for r in rows}):
        newest = freshness.get(target)
        if newest:
            out.print(
                _text(
                    f"{target}: newest backup proven restorable is {newest['backup_id']}, "
                    f"{newest['age_hours']} h old"
                )
            )
        else:
            out.print(_text(f"{target}: no backup proven restorable", "red"))
    table = Table()
    for column in ("id", "target", "kind", "taken (UTC)", "size", "verified", "file"):
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "taken (UTC)"))
    for row in rows:
        verified = _text((row["verified_at"] or "")[:16].replace("T", " ")) or Text(
            "no", style="red"
        )
        table.add_row(
            str(row["id"]),
            _text(row["target"]),
            _text(row["kind"]),
            row["created_at"][:16].replace("T", " "),
            _size(row["size_bytes"]),
            verified,
            _text(row["path"]),
        )
    out.print(table)


def backup_detail(out: Console, row: dict[str, Any]) -> None:
    out.print(
        Text.assemble(
            (f"Backup {row['id']}", "bold"),
            _p(f" of {row['target']} ({row['kind']}): {row['path']}"),
        )
    )
    out.print(
        _text(f"sha256 {row['sha256']}; {_size(row['size_bytes'])}; taken {row['created_at']}")
    )
    manifest = row["manifest"] or {}
    out.print(_text(f"server {manifest.get('server_version')}; tool {manifest.get('tool')}"))
    for table, count in (manifest.get("tables") or {}).items():
        out.print(_text(f"  {table}: {count:,} rows"))
    verification = row["verification"] or {}
    if row["verified_at"]:
        out.print(Text(f"verified {row['verified_at']}", style="green"))
    elif verification:
        out.print(_text(f"failed validation: {'; '.join(verification.get('problems', []))}", "red"))
    else:
        out.print(Text("never validated", style="yellow"))


# --- targets ------------------------------------------------------------------------------


def targets_table(out: Console, rows: list[dict[str, Any]]) -> None:
    table = Table()
    for column in ("target", "dialect", "environment", "location", "description"):
        table.add_column(column, overflow="fold", no_wrap=column == "target")
    for row in rows:
        name = row["name"] + (" (default)" if row["default"] else "")
        table.add_row(
            *(
                _text(value)
                for value in (
                    name,
                    row["dialect"],
                    row["environment"],
                    row["location"],
                    row["description"],
                )
            )
        )
    out.print(table)


def target_check(out: Console, info: dict[str, Any]) -> None:
    out.print(
        Text.assemble(
            (_p(info["target"]), "bold"),
            _p(f" ({info['dialect']}): {info['server_version']}; {info['tables']} tables"),
        )
    )
    for key, value in info["privileges"].items():
        shown = "\n  ".join(map(_p, value)) if isinstance(value, list) else _p(value)
        out.print(Text(f"  {_p(key)}: {shown}"))
    if info["extensions"]:
        out.print(_text(f"  extensions: {', '.join(info['extensions'])}"))
    for warning in info["warnings"]:
        out.print(_text(f"warning: {warning}", "yellow"))


# --- tools --------------------------------------------------------------------------------


def tools_table(out: Console, found: list[ToolDefinition]) -> None:
    table = Table()
    for column in ("tool", "category", "risk", "approval", "dialects", "description"):
        table.add_column(column, overflow="fold", no_wrap=column == "tool")
    for tool in found:
        table.add_row(
            _text(tool.name),
            _text(tool.category.value),
            _styled(tool.risk_level.value, RISK_STYLE),
            "always" if tool.requires_approval else "by policy",
            _text(", ".join(sorted(tool.implementations))),
            _text(tool.description),
        )
    out.print(table)


def tool_detail(out: Console, data: dict[str, Any]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_row("category", _text(data["category"]))
    grid.add_row("risk", _styled(data["risk_level"], RISK_STYLE))
    grid.add_row("capabilities", _text(", ".join(data["required_capabilities"])))
    grid.add_row("approval", "always" if data["requires_approval"] else "by policy")
    grid.add_row("destructive", "yes" if data["destructive"] else "no")
    grid.add_row("idempotent", "yes" if data["idempotent"] else "no")
    grid.add_row("max time", f"{data['max_execution_time']} s")
    for name, spec in (data["params"].get("properties") or {}).items():
        required = name in (data["params"].get("required") or [])
        default = f" (default {spec['default']!r})" if "default" in spec else ""
        grid.add_row(
            _text(f"param {name}"),
            _text(
                f"{spec.get('type')}{' required' if required else ''}{default}: "
                f"{spec.get('description', '')}"
            ),
        )
    if data["notes"]:
        grid.add_row("notes", _text(data["notes"], newlines=True))
    out.print(
        Panel(grid, title=_text(f"{data['name']}: {data['description']}"), title_align="left")
    )
    out.print(_text(f"SQL for example params {json.dumps(data['example_params'])}:"))
    for dialect, statements in data["sql"].items():
        out.print(_text(f"-- {dialect}", "bold"))
        for sql in statements:
            out.print(_text(sql, newlines=True))


# --- schedules ----------------------------------------------------------------------------


def log_line(out: Console, line: str) -> None:
    """One line of a scheduled run's log, as written: no markup, controls escaped."""
    out.print(_text(line))


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
            Text.assemble(f"{_p(last['run_id'])} ", _styled(last["status"], STATUS_STYLE))
            if last
            else Text("-")
        )
        upcoming: str | Text = "paused" if schedule["paused"] else when(schedule["next_run"])
        due = schedule["next_run"]
        if not schedule["paused"] and due is not None and due < datetime.now(UTC):
            # Due while nothing served: it runs when `schedule serve` starts (within
            # the grace time), or is reported missed.
            upcoming = Text(f"overdue since {when(due)}", style="yellow")
        alert = schedule.get("alert")
        if alert:
            last_text = Text.assemble(last_text, (f"\n{alert['kind']} ({alert['at'][:16]})", "red"))
        table.add_row(
            _text(schedule["name"]),
            _text(f"{schedule['cron']} {schedule['timezone']}"),
            _text(" ".join(schedule["words"])),
            upcoming,
            last_text,
        )
    out.print(table)
