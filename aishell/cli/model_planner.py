"""The model planner: `aishell ask` (a request in plain words) and `aishell planner`
(is the model reachable, and its cache of drafted plans)."""

from __future__ import annotations

from typing import Any

import click

from aishell import commands
from aishell.cli.completion import complete_target, target_option
from aishell.cli.context import AishellGroup, State, pass_state
from aishell.cli.options import (
    approval_options,
    dry_run_option,
    force_option,
    json_option,
    quiet_option,
    run_options,
    safety_level_option,
)
from aishell.cli.output import emit_json, run_and_render


@click.command()
@click.argument("request", nargs=-1, required=True)
@target_option
@run_options
@dry_run_option()
@approval_options
@safety_level_option
@force_option
@quiet_option
@json_option
@pass_state
@click.pass_context
def ask(
    ctx: click.Context,
    state: State,
    request: tuple[str, ...],
    target: str | None,
    as_json: bool,
    approval: dict[str, Any],
    run_options: dict[str, Any],
) -> None:
    """Ask in plain words, e.g. aishell ask "purge audit_log rows older than 90 days".

    The model (planner.llm in config, through Ollama) picks the agent and drafts a
    plan; the validator checks it, the preview is shown, and it runs with approvals
    as usual. A request whose drafts all fail validation is refused with the reasons.
    """
    words = " ".join(request)
    run_and_render(
        ctx,
        as_json,
        approval,
        commands.ask,
        state.config,
        words,
        target,
        review=True,
        **run_options,
    )


@click.group(cls=AishellGroup)
def planner() -> None:
    """The model planner: is it reachable, and its cache of drafted plans."""


@planner.command("check")
@json_option
@pass_state
def planner_check(state: State, as_json: bool) -> None:
    """Check that the Ollama server answers and has the configured model."""
    found = commands.check_planner(state.config)
    if as_json:
        emit_json(found)
        return
    click.echo(
        f"Ollama at {found['host']} ({found['host_from']}) has the model {found['model']}; "
        f"the default planner is {found['default_planner']}."
    )


@planner.command("forget")
@click.option(
    "--target",
    shell_complete=complete_target,
    help="Only this target's drafts (default: every target's).",
)
@json_option
@pass_state
def planner_forget(state: State, target: str | None, as_json: bool) -> None:
    """Drop cached drafts, so the next request asks the model again."""
    dropped = commands.forget_drafts(state.config, target)
    if as_json:
        emit_json({"forgotten": dropped})
    else:
        click.echo(f"Forgot {dropped} cached plan(s).")
