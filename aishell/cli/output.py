"""How commands answer: JSON on stdout, or a run shown live and summed up, and the exit
code a run's status maps to."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from aishell import commands, render
from aishell.errors import EXIT_FAILED
from aishell.render import machine
from aishell.render.machine import RUN_EXIT

if TYPE_CHECKING:
    from aishell.executor import RunResult
    from aishell.policy.approvers import Approver


def emit_json(data: Any) -> None:
    click.echo(machine.dumps(data))


def answer(as_json: bool, data: Any, show: Callable[[Any], object]) -> None:
    """`data` as one JSON object with --json; else `show` draws it on the console."""
    if as_json:
        emit_json(data)
    else:
        show(render.console(False))


def can_ask() -> bool:
    """A person can be asked: answers come from a terminal and the question, shown on
    stderr, reaches one. With stderr sent to a file a prompt would wait unseen, so the
    run goes on as with nobody to ask."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def make_approver(yes: bool, approve_up_to: str | None, non_interactive: bool) -> Approver:
    """The approver for these flags, prompting on stderr (render.prompt_console) when it
    may prompt."""
    # Here, not at the top: the approval rules import the policy and SQLAlchemy.
    from aishell.policy.approvers import choose_approver

    return choose_approver(
        yes,
        approve_up_to,
        non_interactive,
        at_terminal=not non_interactive and can_ask(),
        ask=lambda request: render.approval_prompt(render.prompt_console(), request),
    )


class PlanReviewer:
    """Shows a drafted plan before it runs; at a terminal, unless approval flags were
    given, asks whether to run it at all, the plan shown beside the question (stderr)."""

    def __init__(self, console: Any, approval: dict[str, Any]) -> None:
        self.confirm = can_ask() and not any(approval.values())
        self.console = render.prompt_console() if self.confirm else console
        self.preview: commands.PlanPreview | None = None

    def __call__(self, preview: commands.PlanPreview) -> bool:
        self.preview = preview
        render.plan_preview(self.console, preview)
        render.plan_warnings(self.console, preview.plan.warnings)
        if not self.confirm:
            return True
        try:
            return click.confirm("Run this plan?", default=False, err=True)
        except click.Abort as exc:
            # Ctrl-D is an answer, and it is no (PlanDeclined); Ctrl-C stays an interruption.
            if isinstance(exc.__context__, EOFError):
                return False
            raise


def run_and_render(
    ctx: click.Context,
    as_json: bool,
    approval: dict[str, Any],
    start: Callable[..., RunResult],
    *args: Any,
    review: bool = False,
    **kwargs: Any,
) -> None:
    """Start a run, `start(*args, **kwargs)` of commands, with a progress display (none
    with --quiet); print its summary and exit with its status.

    `start` is also given the approver that `approval` (yes, approve_up_to,
    non_interactive) makes and the progress display as its observer; with `review`, the
    reviewer that shows a plan a model drafted before it runs.
    """
    console = render.console(as_json)
    approver = make_approver(**approval)
    reviewer = PlanReviewer(console, approval)
    reviewing = {"review": reviewer} if review else {}
    quiet = bool(ctx.meta.get("aishell.quiet"))  # options.quiet_option
    with render.StepProgress(console, quiet=quiet) as observer:
        result = start(*args, approver=approver, observer=observer, **reviewing, **kwargs)
    shown = reviewer.preview.to_dict() if reviewer.preview is not None else None
    finish_run(ctx, console, result, as_json, preview=shown)


def finish_run(
    ctx: click.Context,
    console: Any,
    result: RunResult,
    as_json: bool,
    preview: dict[str, Any] | None = None,
) -> None:
    """Print a finished run (JSON, then the summary) and exit with its status's code."""
    if as_json:
        shown = machine.run_json(result.to_dict())
        emit_json({**shown, "preview": preview} if preview else shown)
    render.run_summary(console, result)
    ctx.exit(RUN_EXIT.get(result.status, EXIT_FAILED))
