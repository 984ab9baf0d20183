"""`aishell run`: run a maintenance, log-cleanup or backup job now, or the job of any
other agent (`aishell run NAME`, its options made from its declaration)."""

from __future__ import annotations

from typing import Any

import click

from aishell import commands
from aishell.agents import jobs
from aishell.cli.completion import target_option
from aishell.cli.context import JobGroup, State, pass_state
from aishell.cli.options import (
    approval_options,
    declared_options,
    job_run_options,
    json_option,
    lock_wait_option,
    log_cleanup_options,
    maintenance_options,
    max_run_time_option,
    planner_option,
    quiet_option,
    run_options,
    table_option,
)
from aishell.cli.output import run_and_render
from aishell.config.options import (
    BACKUP_RETENTION_DAYS,
    BACKUP_TYPE,
    CLEANUP,
    KEEP_LAST,
    QUICK,
    VERIFY,
)


@click.group(cls=JobGroup)
def run() -> None:
    """Run a job: plan, check each step against the policy, execute, checkpoint."""


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


@run.command("maintenance")
@maintenance_options
@job_run_options("Read-only: run analysis, preview the rest.")
@pass_state
@click.pass_context
def run_maintenance(
    ctx: click.Context,
    state: State,
    target: str | None,
    maintenance: dict[str, Any],
    as_json: bool,
    approval: dict[str, Any],
    run_options: dict[str, Any],
) -> None:
    """Run maintenance on a target and print a summary of every step."""
    job = jobs.maintenance_job(**maintenance)
    start_job(ctx, state, as_json, approval, "maintenance", job, target, run_options)


@run.command("log-cleanup")
@log_cleanup_options
@job_run_options("Read-only: count what would go, show one batch.")
@pass_state
@click.pass_context
def run_log_cleanup(
    ctx: click.Context,
    state: State,
    /,
    target: str | None,
    as_json: bool,
    approval: dict[str, Any],
    run_options: dict[str, Any],
    **flags: Any,
) -> None:
    """Purge rows older than the retention from a table, in short throttled batches.

    Each batch walks the table's key and commits on its own, sized to take about
    --max-batch-ms; progress is checkpointed per batch, so `aishell stop` ends the
    purge after the current batch and `aishell resume` goes on from there.
    """
    job = jobs.log_cleanup_job(**flags)
    start_job(ctx, state, as_json, approval, "log_cleanup", job, target, run_options)


@run.command("backup")
@run_options
@planner_option
@table_option(BACKUP_TYPE)
@target_option
@table_option(VERIFY)
@table_option(QUICK)
@table_option(CLEANUP)
@table_option(BACKUP_RETENTION_DAYS)
@table_option(KEEP_LAST)
@lock_wait_option
@approval_options
@max_run_time_option
@quiet_option
@json_option
@pass_state
@click.pass_context
def run_backup(
    ctx: click.Context,
    state: State,
    kind: str,
    target: str | None,
    verify: bool,
    quick: bool,
    cleanup: bool,
    retention_days: float,
    keep_last: int,
    lock_wait: float | None,
    as_json: bool,
    approval: dict[str, Any],
    run_options: dict[str, Any],
) -> None:
    """Back up a target into the backup folder and validate the backup."""
    job = jobs.backup_job(kind, verify, quick, cleanup, retention_days, keep_last, lock_wait)
    start_job(ctx, state, as_json, approval, "backup", job, target, run_options)


def declared_run(name: str) -> click.Command:
    """`aishell run NAME` for an agent with no command of its own: its declared job
    options, then how the run goes, as `aishell run log-cleanup` takes them."""
    spec = commands.agent_spec(name)

    @click.command(name, help=f"{spec.description}\n\nThe {spec.name} agent's job, run now.")
    @declared_options(spec.options)
    @job_run_options("Read-only: run analysis, preview the rest.")
    @pass_state
    @click.pass_context
    def command(
        ctx: click.Context,
        state: State,
        /,
        target: str | None,
        as_json: bool,
        approval: dict[str, Any],
        run_options: dict[str, Any],
        **flags: Any,
    ) -> None:
        job = jobs.declared_job(spec, flags)
        start_job(ctx, state, as_json, approval, spec.name, job, target, run_options)

    return command


run.declared = declared_run
