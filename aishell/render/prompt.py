"""The approval prompt: everything about a step a person is asked to approve."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from aishell.policy.approvers import PROMPT_ANSWERS, ApprovalRequest
from aishell.render.base import RISK_STYLE, cutoff_text, human_size, safe_text, styled
from aishell.terminal import printable


def approval_prompt(out: Console, request: ApprovalRequest) -> str:
    """Show everything about the step, then ask: yes, no, all (this risk level), quit."""
    if request.confirmation == "review":
        plan = Table(title="The whole plan, for review", title_justify="left")
        for column in ("step", "tool", "on", "risk"):
            plan.add_column(column, no_wrap=column != "on")
        for step_id, tool, subject, risk in request.plan:
            marker = " <" if step_id == request.step_id else ""
            plan.add_row(
                safe_text(f"{step_id}{marker}"),
                safe_text(tool),
                safe_text(subject),
                styled(risk, RISK_STYLE),
            )
        out.print(plan)
    body = Table.grid(padding=(0, 2))
    body.add_row("target", safe_text(f"{request.target} ({request.environment})"))
    body.add_row("step", safe_text(f"{request.step_id} {request.tool}: {request.rationale}"))
    body.add_row("risk", styled(request.risk, RISK_STYLE))
    body.add_row("params", safe_text(json.dumps(request.params, sort_keys=True, default=str)))
    body.add_row("SQL", _lines(request.sql))
    if request.locks is not None:
        body.add_row("locks", _lines([*request.locks.taken, *filter(None, [request.locks.wait])]))
    body.add_row("why asked", _lines(request.reasons))
    if request.risks:
        body.add_row("risks", _lines(request.risks))
    if request.mitigations:
        body.add_row("mitigations", _lines(request.mitigations))
    effect = _effect_text(request.estimate)
    if effect:
        body.add_row("effect", safe_text(effect, newlines=True))
    title = "Review needed" if request.confirmation == "review" else "Approval needed"
    out.print(Panel(body, title=title, border_style="yellow"))
    try:
        answer: str = click.prompt(
            "Run this step? [y]es, [n]o, [a]ll at this risk, [q]uit",
            type=click.Choice(sorted(PROMPT_ANSWERS), case_sensitive=False),
            default="no",
            show_choices=False,
            err=True,
        )
        choice = PROMPT_ANSWERS[answer.lower()]
        if request.risk == "critical" and choice in ("yes", "all"):
            # Each critical step is named on its own: "all" never covers the next one.
            return "yes" if _target_named(out, request.target) else "no"
        return choice
    except click.Abort as exc:
        # Ctrl-D ends the input: the step is not run and the run stops, resumably;
        # Ctrl-C is the run's interruption, which does the same.
        if isinstance(exc.__context__, EOFError):
            raise EOFError("end of input") from None
        raise
    except OSError:
        # The terminal closed under the read (EIO where SIGHUP is ignored): nobody is
        # left to answer, as at the end of input.
        raise EOFError("the terminal closed") from None


def _target_named(out: Console, target: str) -> bool:
    """A critical step runs only once its target's name is typed, as GitHub and
    Terraform ask before what cannot be undone: one `y` is too easy to give by habit."""
    typed: str = click.prompt(
        f"This step is critical: type the target's name ({printable(target)}) to run it",
        default="",
        show_default=False,
        err=True,
    )
    if typed.strip() == target:
        return True
    out.print(safe_text("Not the target's name: the step is not run.", "red"))
    return False


def _lines(items: Any) -> Text:
    """One item per line; a line break inside an item stays (SQL), other controls not."""
    return Text("\n".join(printable(item, newlines=True) for item in items))


def _effect_text(estimate: dict[str, Any]) -> str:
    lines = []
    if "rows_to_delete" in estimate and "cutoff" in estimate:
        about = "about " if estimate.get("estimated") else ""
        lines.append(
            f"rows to delete: {about}{estimate.get('rows_this_run', 0):,} of {about}"
            f"{estimate.get('table_rows', 0):,}, older than {cutoff_text(estimate)}"
        )
    for table, figures in (estimate.get("tables") or {}).items():
        lines += _table_figures(table, figures)
    labels = {
        "indexes_to_rebuild": "indexes to rebuild",
        "index_bytes_to_rewrite": "index bytes to rewrite",
        "database_bytes_to_rewrite": "database bytes to rewrite",
        "free_bytes_to_reclaim": "free bytes to reclaim",
    }
    for key, label in labels.items():
        if key in estimate:
            value = estimate[key]
            shown = ", ".join(value) if isinstance(value, list) else human_size(value)
            lines.append(f"{label}: {shown or 'none'}")
    return "\n".join(lines)


def _table_figures(table: str, figures: dict[str, Any]) -> list[str]:
    """A table's rows and bytes, saying which were read as the question is asked and
    what earlier steps of the run did to it (executor/asked.py)."""
    rows = figures.get("rows")
    if rows is None:
        counted = "rows not known"
    elif figures.get("counted"):
        counted = f"{'at least ' if figures.get('at_least') else ''}{rows:,} rows counted now"
    else:
        counted = f"about {rows:,} rows"
    said = f"{table}: {counted}, {human_size(figures.get('bytes'))}"
    changed = figures.get("changed_since") or []
    if not changed:
        return [said]
    if not figures.get("counted"):
        said += " (rows as of its statistics, before the changes below)"
    return [said, *(f"  earlier in this run: {each}" for each in changed)]
