"""`aishell plan` (show what a job would do, save it signed) and `aishell apply` (run
exactly a saved plan)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from aishell import commands, jobs, render
from aishell.cli.context import AishellGroup, State, pass_state
from aishell.cli.options import (
    approval_options,
    every_step_option,
    force_option,
    json_option,
    log_cleanup_options,
    maintenance_options,
    max_run_time_option,
    plan_out_option,
    planner_option,
    quiet_option,
    safety_level_option,
)
from aishell.cli.output import emit_json, run_and_render


@click.group(cls=AishellGroup)
def plan() -> None:
    """Show what a job would do, step by step, without running it.

    A plan saved with --out is signed with this home's key, kept in
    plan-signing.key in the home (mode 0600); `aishell plan rotate-key` replaces it.
    """


def plan_and_show(
    state: State,
    as_json: bool,
    agent: str,
    job: dict[str, Any],
    target: str | None,
    out: Path | None,
    every: bool = False,
    **plan_options: Any,
) -> None:
    """Plan `job` (a spinner while a model drafts it), save it when `out` is given, and
    show it, every step or alike steps together (see commands.plan_job for
    `plan_options`)."""
    with render.StepProgress(render.console(as_json)) as progress:
        preview = commands.plan_job(
            state.config, agent, job, target, out=out, notice=progress.planning, **plan_options
        )
    if as_json:
        emit_json(preview.to_dict())
    else:
        console = render.console(False)
        render.plan_preview(console, preview, every)
        render.plan_warnings(console, preview.plan.warnings)
        if out is not None:
            console.print(f"Plan saved to {out}; run it with `aishell apply {out}`.", markup=False)


@plan.command("maintenance")
@maintenance_options
@planner_option
@safety_level_option
@plan_out_option
@every_step_option
@json_option
@pass_state
def plan_maintenance(
    state: State,
    kind: str,
    target: str | None,
    tables: str | None,
    no_rebuild_indexes: bool,
    planner: str | None,
    safety_level: str | None,
    out: Path | None,
    every: bool,
    as_json: bool,
) -> None:
    """Plan maintenance: each step's tool, risk, whether it needs approval, and its SQL."""
    plan_and_show(
        state,
        as_json,
        "maintenance",
        jobs.maintenance_job(kind, tables, no_rebuild_indexes),
        target,
        out,
        every,
        safety_level=safety_level,
        planner=planner,
    )


@plan.command("log-cleanup")
@log_cleanup_options
@planner_option
@safety_level_option
@plan_out_option
@every_step_option
@json_option
@pass_state
def plan_log_cleanup(
    state: State,
    /,
    target: str | None,
    planner: str | None,
    safety_level: str | None,
    out: Path | None,
    every: bool,
    as_json: bool,
    **flags: Any,
) -> None:
    """Plan a purge of old rows: count, delete in batches, count again, statistics."""
    plan_and_show(
        state,
        as_json,
        "log_cleanup",
        jobs.log_cleanup_job(**flags),
        target,
        out,
        every,
        safety_level=safety_level,
        planner=planner,
    )


@plan.command("rotate-key")
@json_option
@pass_state
def plan_rotate_key(state: State, as_json: bool) -> None:
    """Replace this home's plan-signing key; plans signed with the old one are refused."""
    rotated = commands.rotate_plan_key(state.config)
    if as_json:
        emit_json(rotated)
        return
    previous = rotated["previous_key_id"]
    click.echo(
        f"New plan-signing key {rotated['key_id']} in {rotated['path']}"
        + (f"; plans signed with {previous} are refused from now on." if previous else ".")
    )


@click.command()
@click.argument("plan_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Read-only: run analysis, preview the rest.")
@approval_options
@max_run_time_option
@safety_level_option
@force_option
@quiet_option
@json_option
@pass_state
@click.pass_context
def apply(
    ctx: click.Context,
    state: State,
    plan_file: Path,
    dry_run: bool,
    yes: bool,
    approve_up_to: str | None,
    non_interactive: bool,
    safety_level: str | None,
    force: bool,
    max_run_time: float | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Run exactly a plan saved with `plan --out`, checked whole before its first step.

    Refused, with nothing changed, when its signature is missing or not made with this
    home's key (an edited plan, one made in another home, or one signed before the key
    was rotated), the file has unknown or missing keys, its target is not configured or
    now points at another database, a tool, table or column it names is gone, a tool
    changed, or the target drifted from what the plan assumed.
    """
    run_and_render(
        ctx,
        as_json,
        dict(yes=yes, approve_up_to=approve_up_to, non_interactive=non_interactive),
        lambda approver, observer, _review: commands.apply_plan(
            state.config,
            plan_file,
            dry_run=dry_run,
            approver=approver,
            observer=observer,
            safety_level=safety_level,
            force=force,
            max_run_seconds=max_run_time,
        ),
        quiet,
    )
