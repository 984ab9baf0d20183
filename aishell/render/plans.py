"""A plan before it runs: its steps, their risk, whether they need approval, their SQL."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from aishell.commands import PlanPreview, StepPreview
from aishell.render import base
from aishell.render.catalogreads import is_catalog_read
from aishell.terminal import printable


def plan_preview(out: Console, preview: PlanPreview, every: bool = False) -> None:
    """The plan as a table (or blocks, on a narrow terminal). A plan of more than
    SUMMARY_FROM steps shows alike steps as one line, unless `every`."""
    plan = preview.plan
    out.print(
        Text.assemble(
            base.safe_text(f"{plan.agent} plan{_kind(plan.job)}", "bold"),
            " for target ",
            base.safe_text(plan.target),
            base.safe_text(f" [{preview.environment}, safety level {preview.safety_level}]"),
        )
    )
    if plan.drafted_by.get("planner") == "llm":
        _drafted_by_model(out, plan.drafted_by)
    groups = _groups(list(preview.steps), every)
    sql = _sql_cells(groups, plan.dialect, every)
    if out.width >= 110:
        out.print(_table(groups, sql, every, no_wrap=len(groups) == len(preview.steps)))
    else:
        _blocks(out, groups, sql, every)
    if len(groups) < len(preview.steps):
        out.print(
            f"{len(preview.steps):,} steps shown as {len(groups)} lines of alike steps "
            "(same tool, risk and approval); --all shows each step, --json every detail."
        )
    _conditions(out, preview)
    _parallel(out, preview)
    _reach(out, list(preview.steps))
    out.print(f"plan hash {plan.hash}")


def _conditions(out: Console, preview: PlanPreview) -> None:
    """The steps that run only when their condition over earlier outputs holds (checked
    when the plan was validated, evaluated when the step's turn comes)."""
    for step in preview.plan.steps:
        if step.condition:
            out.print(base.safe_text(f"{step.id} runs only if: {step.condition}", "cyan"))


def _parallel(out: Console, preview: PlanPreview) -> None:
    """The parallel groups: consecutive steps that only read, run at the same time
    (each on its own connection, up to the agent's max_parallel_steps at once)."""
    members: dict[str, list[str]] = {}
    for step in preview.plan.steps:
        if step.parallel_group:
            members.setdefault(step.parallel_group, []).append(step.id)
    for group, ids in members.items():
        shown = ", ".join(ids) if len(ids) <= 4 else f"{ids[0]} to {ids[-1]}"
        out.print(
            base.safe_text(
                f"parallel group {group!r}: {shown} run at the same time "
                f"({len(ids)} read-only steps)",
                "cyan",
            )
        )


def _reach(out: Console, steps: list[StepPreview]) -> None:
    """What each step's writes do beyond the rows it names: the rows foreign keys take
    with them, the triggers they fire, and the database's own code they run
    (usercode.py), which raise its risk and which a DBA may change or allow-list."""
    for step in steps:
        estimate = step.estimate or {}
        for said in [*(estimate.get("cascades") or []), *(estimate.get("fires") or [])]:
            out.print(base.safe_text(f"{step.step_id} reaches further: {said}", "yellow"))
        for said in estimate.get("user_code") or []:
            out.print(base.safe_text(f"{step.step_id} runs user code: {said}", "yellow"))


def _drafted_by_model(out: Console, drafted: dict[str, Any]) -> None:
    how = "from the plan cache" if drafted.get("cached") else f"in {drafted.get('drafts')} draft(s)"
    out.print(
        Text.assemble(
            ("Drafted by the model ", "cyan"),
            (base.plain(drafted.get("model")), "bold cyan"),
            (f" {how}; checked by the validator, gated by the policy", "cyan"),
        )
    )
    if drafted.get("summary"):
        out.print(base.safe_text(f"Model's summary: {drafted['summary']}", "dim"))


def _table(groups: list[list[StepPreview]], sql: list[str], every: bool, no_wrap: bool) -> Table:
    """One row per group of alike steps: its locks and lock wait, its SQL last."""
    table = Table()
    table.add_column("step", no_wrap=no_wrap)
    table.add_column("tool", no_wrap=True)
    table.add_column("on", overflow="fold")
    table.add_column("risk", no_wrap=True)
    table.add_column("approval", no_wrap=True)
    table.add_column("lock (wait)", overflow="fold")
    table.add_column("SQL", overflow="fold", ratio=1)
    for group, statements in zip(groups, sql, strict=True):
        step = group[0]
        table.add_row(
            Text(base.steps_label([s.step_id for s in group])),
            base.safe_text(step.tool),
            Text(_subject(group, every)),
            base.styled(step.risk_level, base.RISK_STYLE),
            Text("needed", style="yellow") if step.requires_approval else Text("-"),
            Text("\n".join(_lock_cell(step))),
            Text(statements),
        )
    return table


def _lock_cell(step: StepPreview) -> list[str]:
    """Each lock in a few words, then the lock wait that bounds them."""
    return list(step.locks.in_brief()) if step.locks is not None else ["-"]


def _blocks(out: Console, groups: list[list[StepPreview]], sql: list[str], every: bool) -> None:
    """Too narrow for a SQL column: one block per step, its locks and SQL indented below."""
    for group, statements in zip(groups, sql, strict=True):
        step = group[0]
        out.print(
            Text.assemble(
                (f"{base.steps_label([s.step_id for s in group]):<8} ", "bold"),
                f"{base.plain(step.tool)}  ",
                (_subject(group, every), "bold"),
                "  risk ",
                base.styled(step.risk_level, base.RISK_STYLE),
                ("  approval needed" if step.requires_approval else "", "yellow"),
            )
        )
        out.print(Text(f"        lock: {'; '.join(_lock_cell(step))}"))
        for line in statements.splitlines():
            out.print(Text(f"        {line}", style="dim"))


def plan_warnings(out: Console, warnings: list[str]) -> None:
    for warning in warnings:
        out.print(base.safe_text(f"Warning: {warning}", "yellow"))


def _kind(job: dict[str, Any]) -> str:
    if job.get("request"):
        return f": {job['request']}"
    if job.get("type"):
        return f" ({job['type']})"
    return f" ({job['table']})" if job.get("table") else ""


def _groups(steps: list[StepPreview], every: bool) -> list[list[StepPreview]]:
    if every or len(steps) <= base.SUMMARY_FROM:
        return [[step] for step in steps]
    return base.alike(steps, lambda s: (s.tool, s.risk_level, s.requires_approval))


def _subject(group: list[StepPreview], every: bool) -> str:
    if len(group) == 1:
        return base.step_subject(group[0].params, every)
    return base.names_summary([name for s in group if (name := base.step_subject(s.params))])


def _sql_cells(groups: list[list[StepPreview]], dialect: str, every: bool) -> list[str]:
    """Each group's SQL: every statement that touches a table in full; catalog reads
    once, where they first come (more than two of one step as their count), and a
    later step's repeat of them as a reference to that step."""
    seen: dict[str, str] = {}
    cells = []
    for group in groups:
        step = group[0]
        cell = _sql_cell(step, dialect, seen, every)
        if len(group) > 1:
            cell += f"\n... and its like for each of the other {len(group) - 1:,} steps"
        cells.append(cell)
    return cells


def _sql_cell(step: StepPreview, dialect: str, seen: dict[str, str], every: bool) -> str:
    reads = [is_catalog_read(s, dialect) for s in step.sql]
    catalog = [s for s, read in zip(step.sql, reads, strict=True) if read]
    repeated = list(dict.fromkeys(seen[s] for s in catalog if s in seen))
    fresh = [s for s in dict.fromkeys(catalog) if s not in seen]
    lines: list[str] = []
    if repeated:
        count = len(catalog) - len(fresh)
        lines.append(f"-- {count} catalog read{'s' * (count > 1)} as in {', '.join(repeated)}")
    if len(fresh) > 2:
        # `tools show` and --json list them.
        lines.append(f"-- {len(fresh)} catalog reads")
    else:
        lines += [printable(s, newlines=True).strip() for s in fresh]
    seen.update(dict.fromkeys(fresh, step.step_id))
    lines += _table_statements(
        [s for s, read in zip(step.sql, reads, strict=True) if not read], every
    )
    return "\n".join(lines)


# A quoted identifier, as the dialects quote them (doubling the quote inside).
_QUOTED = re.compile(r'"(?:[^"]|"")*"|`(?:[^`]|``)*`')
# More statements than this of one shape (one per table) are shown as the first and a
# line naming the others, unless --all: as many as a list names in full (NAMES_SHOWN).
ALIKE_FROM = base.NAMES_SHOWN


def _table_statements(statements: list[str], every: bool) -> list[str]:
    """Every statement that touches a table, in full; many of one shape that differ only
    in the table they name (a health step's count of each table) as the first of them
    and the names of the others, unless `every`."""
    shapes = [_QUOTED.sub('"?"', s) for s in statements]
    counts = Counter(shapes)
    lines: list[str] = []
    shown: set[str] = set()
    for statement, shape in zip(statements, shapes, strict=True):
        if every or counts[shape] <= ALIKE_FROM:
            lines.append(printable(statement, newlines=True))
            continue
        if shape in shown:
            continue
        shown.add(shape)
        group = [s for s, other in zip(statements, shapes, strict=True) if other == shape]
        # One shape: all of them name a quoted identifier, or none does.
        others = group[1:] if _QUOTED.search(statement) else []
        names = base.names_summary(others, show=_named)
        lines.append(printable(statement, newlines=True))
        lines.append(f"-- and {len(group) - 1:,} more alike, one each: {names}")
    return lines


def _named(statement: str) -> str:
    """The first quoted identifier of a statement, printable."""
    found = _QUOTED.search(statement)
    return printable(found.group(0)[1:-1]) if found else ""
