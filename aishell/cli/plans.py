"""`aishell plan` (show what a job would do, save it signed) and `aishell apply` (run
exactly a saved plan)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from aishell import commands, render
from aishell.agents import jobs
from aishell.cli import options
from aishell.cli.context import JobGroup, State, pass_state
from aishell.cli.output import emit_json, run_and_render


@click.group(cls=JobGroup)
def plan() -> None:
    """Show what a job would do, step by step, without running it.

    A plan saved with --out is signed with this home's key, kept in
    plan-signing.key in the home (mode 0600); `aishell plan rotate-key` replaces it.
    Each other command is an agent, named as `aishell agents list` names it; `-` for `_`
    names the same one (`log-cleanup`).
    """


def plan_and_show(
    state: State,
    as_json: bool,
    agent: str,
    job: dict[str, Any],
    target: str | None,
    plan_options: dict[str, Any],
) -> None:
    """Plan `job` (a spinner while a model drafts it), save it when --out is given, and
    show it, every step or alike steps together (see commands.plan_job for
    `plan_options`)."""
    every, out = plan_options.pop("every"), plan_options["out"]
    quiet = bool(click.get_current_context().meta.get("aishell.quiet"))
    with render.StepProgress(render.console(as_json), quiet=quiet) as progress:
        preview = commands.plan_job(
            state.config, agent, job, target, notice=progress.planning, **plan_options
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
@options.maintenance_options
@options.plan_job_options
@pass_state
def plan_maintenance(
    state: State,
    target: str | None,
    maintenance: dict[str, Any],
    as_json: bool,
    plan_options: dict[str, Any],
) -> None:
    """Plan maintenance: each step's tool, risk, whether it needs approval, and its SQL."""
    job = jobs.maintenance_job(**maintenance)
    plan_and_show(state, as_json, "maintenance", job, target, plan_options)


@plan.command("log_cleanup")
@options.log_cleanup_options
@options.plan_job_options
@pass_state
def plan_log_cleanup(
    state: State,
    /,
    target: str | None,
    as_json: bool,
    plan_options: dict[str, Any],
    **flags: Any,
) -> None:
    """Plan a purge of old rows: count, delete in batches, count again, statistics."""
    job = jobs.log_cleanup_job(**flags)
    plan_and_show(state, as_json, "log_cleanup", job, target, plan_options)


@plan.command("backup")
@options.backup_options
@options.plan_job_options
@pass_state
def plan_backup(
    state: State,
    target: str | None,
    backup: dict[str, Any],
    as_json: bool,
    plan_options: dict[str, Any],
) -> None:
    """Plan a backup: size, dump, validation (and cleanup), each step's risk and locks."""
    job = jobs.backup_job(**backup)
    plan_and_show(state, as_json, "backup", job, target, plan_options)


def declared_plan(name: str) -> click.Command:
    """`aishell plan NAME` for an agent with no command of its own: its declared job
    options, then what `aishell plan log_cleanup` takes after the job."""
    spec = commands.agent_spec(name)

    @click.command(name, help=f"{spec.description}\n\nPlan the {spec.name} agent's job.")
    @options.declared_options(spec.options)
    @options.plan_job_options
    @pass_state
    def command(
        state: State,
        /,
        target: str | None,
        as_json: bool,
        plan_options: dict[str, Any],
        **flags: Any,
    ) -> None:
        job = jobs.declared_job(spec, flags)
        plan_and_show(state, as_json, spec.name, job, target, plan_options)

    return command


plan.declared = declared_plan


@plan.command("rotate-key")
@click.option(
    "--force",
    is_flag=True,
    help="Replace it though runs are not over: they can no longer be approved or resumed.",
)
@options.json_option
@pass_state
def plan_rotate_key(state: State, force: bool, as_json: bool) -> None:
    """Replace this home's plan-signing key; plans signed with the old one are refused,
    and so are the runs stored before (their history is no longer shown), the schedules
    (added again, they run) and the backups' catalog rows (`aishell backups adopt
    --all-unsigned` signs them again). Refused while a run is not over, unless --force."""
    rotated = commands.rotate_plan_key(state.config, force)
    if as_json:
        emit_json(rotated)
        return
    previous = rotated["previous_key_id"]
    click.echo(
        f"New plan-signing key {rotated['key_id']} in {rotated['path']}"
        + (f"; plans signed with {previous} are refused from now on" if previous else "")
        + (
            f", and the {rotated['runs_no_longer_readable']} run(s) stored before are no "
            "longer shown."
            if rotated["runs_no_longer_readable"]
            else "."
        )
    )
    if rotated["schedules_to_add_again"]:
        click.echo(
            "Schedules signed with the old key run no trigger until added again "
            f"(`aishell schedule remove NAME`, then `schedule add`): "
            f"{', '.join(rotated['schedules_to_add_again'])}"
        )
    if rotated["backups_to_adopt"]:
        click.echo(
            f"{rotated['backups_to_adopt']} kept backup row(s) are not signed with the new "
            "key: restore, validation and retention refuse them and no backup age counts "
            f"them until `{rotated['adopt_command']}` signs those whose files still match"
        )


@click.command()
@click.argument("plan_file", type=click.Path(dir_okay=False, path_type=Path))
@options.start_options()
@pass_state
@click.pass_context
def apply(
    ctx: click.Context,
    state: State,
    plan_file: Path,
    as_json: bool,
    approval: dict[str, Any],
    run_options: dict[str, Any],
) -> None:
    """Run exactly a plan saved with `plan --out`, checked whole before its first step.

    Refused, with nothing changed, when its signature is missing or not made with this
    home's key (an edited plan, one made in another home, or one signed before the key
    was rotated), the file has unknown or missing keys, its target is not configured or
    now points at another database, a tool, table or column it names is gone, a tool
    changed, or the target drifted from what the plan assumed.
    """
    run_and_render(
        ctx, as_json, approval, commands.apply_plan, state.config, plan_file, **run_options
    )
