"""Commands on runs already started: list and show them, approve or deny their waiting
steps, stop them, resume them."""

from __future__ import annotations

import shlex
from typing import Any

import click

from aishell import commands, render
from aishell.cli import options
from aishell.cli.completion import run_id_argument
from aishell.cli.context import AishellGroup, State, pass_state
from aishell.cli.output import answer, emit_json, run_and_render
from aishell.executor import RUN_STATUSES
from aishell.render import machine

# The steps `runs show` shows at most unless --limit says otherwise: a run of 100,000
# steps is a page, which says how to see the next (as the web view's run page).
STEPS_SHOWN = 500


@click.group(cls=AishellGroup)
def runs() -> None:
    """Look at past and current runs in the state store."""


@runs.command("list")
@click.option(
    "--status",
    type=click.Choice(RUN_STATUSES),
    help="Only runs with this status.",
)
@click.option(
    "--limit",
    type=options.WholeNumber(min=1, max=options.MOST_LISTED),
    default=50,
    show_default=True,
)
@click.option(
    "--after",
    metavar="RUN_ID",
    help="Only the runs listed after this one (its full id): the next page of a list "
    "that ended with it.",
)
@options.targets_selector()
@options.json_option
@pass_state
def runs_list(
    state: State,
    status: str | None,
    limit: int,
    after: str | None,
    targets: str | None,
    as_json: bool,
) -> None:
    """List runs, newest first: of every target, or of those --targets selects; a page of
    --limit runs at a time (`next_after` in --json: the next page's --after)."""
    page = commands.runs_page(state.view, status, limit, targets, after)
    more = page["next_after"]
    after_this = None if more is None else _next_list(status, limit, targets, more)
    answer(as_json, page, lambda out: render.runs_table(out, page["runs"], after_this))


def _next_list(status: str | None, limit: int, targets: str | None, after: str) -> str:
    """The command line of the next page of a runs list: the same options, --after."""
    words = ["aishell", "runs", "list", *(["--status", status] if status else [])]
    words += ["--limit", str(limit), *(["--targets", targets] if targets else [])]
    return shlex.join([*words, "--after", after])


@runs.command("show")
@run_id_argument
@click.option(
    "--sql", "with_sql", is_flag=True, help="Also list the statements of the steps shown."
)
@click.option(
    "--step",
    "start",
    type=options.WholeNumber(min=0),
    default=0,
    show_default=True,
    help="The first step shown (its index, from 0).",
)
@click.option(
    "--limit",
    type=options.WholeNumber(min=1, max=options.MOST_LISTED),
    default=STEPS_SHOWN,
    show_default=True,
    help="The most steps shown; the whole run is checked whatever part is shown.",
)
@options.json_option
@pass_state
def runs_show(
    state: State, run_id: str, with_sql: bool, start: int, limit: int, as_json: bool
) -> None:
    """Show one run: its steps (--limit of them from --step on), their params, outputs
    and errors, and the decisions on them."""
    data = commands.show_run(state.config, run_id, with_sql=with_sql, start=start, limit=limit)
    if as_json:
        emit_json(machine.run_json(data))
    else:
        console = render.console(False)
        render.run_detail(console, data)
        if with_sql:
            render.statements(console, data["statements"])
        render.steps_left(console, data, [] if limit == STEPS_SHOWN else ["--limit", str(limit)])


@click.command()
@run_id_argument
@options.run_options
@options.approval_options
@options.max_run_time_option
@options.window_options
@options.quiet_option
@options.json_option
@pass_state
@click.pass_context
def resume(
    ctx: click.Context,
    state: State,
    run_id: str,
    as_json: bool,
    approval: dict[str, Any],
    run_options: dict[str, Any],
) -> None:
    """Continue a waiting, deferred, failed or interrupted run; done steps never rerun."""
    run_and_render(ctx, as_json, approval, commands.resume_run, state.config, run_id, **run_options)


@click.command()
@options.targets_selector()
@options.json_option
@pass_state
def approvals(state: State, targets: str | None, as_json: bool) -> None:
    """List the steps waiting for a person's approval, oldest run first: of every target,
    or of those --targets selects; decide with `aishell approve` or `aishell deny`."""
    rows = commands.list_approvals(state.config, targets=targets)
    answer(as_json, {"approvals": rows}, lambda out: render.approvals_table(out, rows))


@click.command()
@run_id_argument
@click.option(
    "--step",
    type=options.WholeNumber(min=0),
    help="Only this step (its index, from 0); default: every waiting step.",
)
@click.option("--reason", help="Why; recorded with the decision.")
@click.option(
    "--mark-done",
    is_flag=True,
    help="The step's effect is there (checked by you): record it as succeeded.",
)
@click.option("--skip", is_flag=True, help="Leave the step out of the run.")
@options.json_option
@pass_state
def approve(
    state: State,
    run_id: str,
    step: int | None,
    reason: str | None,
    mark_done: bool,
    skip: bool,
    as_json: bool,
) -> None:
    """Approve the steps of a run that wait for a person; then `aishell resume RUN_ID`."""
    if mark_done and skip:
        raise click.UsageError("--mark-done and --skip exclude each other")
    decision = "succeeded" if mark_done else "skipped" if skip else "approved"
    report_decision(commands.decide_steps(state.config, run_id, decision, step, reason), as_json)


@click.command()
@run_id_argument
@click.option(
    "--step",
    type=options.WholeNumber(min=0),
    help="Only this step (its index, from 0); default: every waiting step.",
)
@click.option("--reason", help="Why; recorded with the decision.")
@options.json_option
@pass_state
def deny(state: State, run_id: str, step: int | None, reason: str | None, as_json: bool) -> None:
    """Deny the steps of a run that wait for a person: all of them ends the run (denied);
    --step N denies that one, and `aishell resume RUN_ID` runs what does not need it."""
    report_decision(commands.decide_steps(state.config, run_id, "denied", step, reason), as_json)


def report_decision(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    steps = ", ".join(f"{s['index']} {s['tool']}" for s in result["steps"])
    then = (
        f"the run ended {result['run_status']}; what had not run will not"
        if result["run_status"] in ("denied", "completed_with_denials")
        else f"continue with `aishell resume {result['run_id']}`"
    )
    # A step only its own approval passes still waits, and `resume` would stop at it.
    held = [
        f"step {s['index']} {s['tool']} still waits for its own approval: "
        f"`aishell approve {result['run_id']} --step {s['index']}`"
        for s in result.get("still_waiting") or []
    ]
    click.echo(
        f"{result['decision'].capitalize()}: step(s) {steps} of run {result['run_id']}, "
        f"by {result['decided_by']}; {'; '.join([*held, then])}."
    )


@click.command()
@run_id_argument
@options.json_option
@pass_state
def stop(state: State, run_id: str, as_json: bool) -> None:
    """Stop a running run after its current statement or batch; resume it later."""
    result = commands.stop_run(state.config, run_id)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"Run {result['run_id']} will stop after its current statement or batch; "
            f"continue it with `aishell resume {result['run_id']}`."
        )
