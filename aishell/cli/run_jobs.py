"""`aishell run`: run a maintenance, log_cleanup or backup job now, or the job of any
other agent (`aishell run NAME`, its options made from its declaration)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from aishell import commands
from aishell.agents import jobs
from aishell.cli.context import JobGroup, State, pass_state
from aishell.cli.options import (
    approval_options,
    backup_options,
    declared_options,
    dry_run_option,
    job_run_options,
    json_option,
    log_cleanup_options,
    maintenance_options,
    max_run_time_option,
    planner_option,
    quiet_option,
    run_options,
    window_options,
)
from aishell.cli.output import run_and_render


@click.group(cls=JobGroup)
def run() -> None:
    """Run a job: plan, check each step against the policy, execute, checkpoint.

    Each command is an agent, named as `aishell agents list` names it; `-` for `_`
    names the same one (`log-cleanup`)."""


def start_job(
    ctx: click.Context,
    state: State,
    as_json: bool,
    approval: dict[str, Any],
    agent: str,
    job: dict[str, Any],
    target: str | None,
    run_options: dict[str, Any],
) -> None:
    """Run `job` with `agent` on `target` (see commands.run_job for `run_options`)."""
    run_and_render(
        ctx,
        as_json,
        approval,
        commands.run_job,
        state.config,
        agent,
        job,
        target,
        review=True,
        **run_options,
    )


def start_given(
    ctx: click.Context,
    state: State,
    agent: str,
    make_job: Callable[[dict[str, Any]], dict[str, Any]],
    given: dict[str, Any],
) -> None:
    """start_job with what a job command's options gave: the target, --json, the approval
    flags and the run options; the rest makes the job."""
    target, as_json = given.pop("target"), given.pop("as_json")
    approval, run_options = given.pop("approval"), given.pop("run_options")
    job = make_job(given)
    start_job(ctx, state, as_json, approval, agent, job, target, run_options)


@run.command("maintenance")
@maintenance_options
@job_run_options("Read-only: run analysis, preview the rest.")
@pass_state
@click.pass_context
def run_maintenance(ctx: click.Context, state: State, /, **given: Any) -> None:
    """Run maintenance on a target and print a summary of every step."""
    start_given(
        ctx, state, "maintenance", lambda g: jobs.maintenance_job(**g["maintenance"]), given
    )


@run.command("log_cleanup")
@log_cleanup_options
@job_run_options("Read-only: count what would go, show one batch.")
@pass_state
@click.pass_context
def run_log_cleanup(ctx: click.Context, state: State, /, **given: Any) -> None:
    """Purge rows older than the retention from a table, in short throttled batches.

    Each batch walks the table's key and commits on its own, sized to take about
    --max-batch-ms; progress is checkpointed per batch, so `aishell stop` ends the
    purge after the current batch and `aishell resume` goes on from there.
    """
    start_given(ctx, state, "log_cleanup", lambda g: jobs.log_cleanup_job(**g), given)


BACKUP_DRY_RUN = (
    "Read-only: estimate the backup's size and show its steps; nothing is written to the "
    "backup folder."
)


@run.command("backup")
@run_options
@planner_option
@backup_options
@dry_run_option(BACKUP_DRY_RUN)
@approval_options
@max_run_time_option
@window_options
@quiet_option
@json_option
@pass_state
@click.pass_context
def run_backup(ctx: click.Context, state: State, /, **given: Any) -> None:
    """Back up a target into the backup folder and validate the backup."""
    start_given(ctx, state, "backup", lambda g: jobs.backup_job(**g["backup"]), given)


def declared_run(name: str) -> click.Command:
    """`aishell run NAME` for an agent with no command of its own: its declared job
    options, then how the run goes, as `aishell run log_cleanup` takes them."""
    spec = commands.agent_spec(name)

    @click.command(name, help=f"{spec.description}\n\nThe {spec.name} agent's job, run now.")
    @declared_options(spec.options)
    @job_run_options("Read-only: run analysis, preview the rest.")
    @pass_state
    @click.pass_context
    def command(ctx: click.Context, state: State, /, **given: Any) -> None:
        start_given(ctx, state, spec.name, lambda g: jobs.declared_job(spec, g), given)

    return command


run.declared = declared_run
