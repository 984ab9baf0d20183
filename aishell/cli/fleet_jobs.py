"""`aishell fleet run`, `fleet show` and `aishell worker`: one job on many targets
through the queue, and the processes that run it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from aishell import commands
from aishell.agents import jobs
from aishell.cli.context import JobGroup, State, pass_state
from aishell.cli.options import (
    MOST_LISTED,
    FiniteFloat,
    WholeNumber,
    declared_options,
    json_option,
    max_run_time_option,
    targets_selector,
)
from aishell.cli.output import emit_json
from aishell.config.bounds import MAX_RUN_TIME_SECONDS
from aishell.errors import EXIT_FAILED, EXIT_WAITING_APPROVAL, UsageError
from aishell.terminal import printable

# Statuses of a target's run that make `fleet run --wait` exit 1.
_BAD = (
    "failed",
    "aborted",
    "denied",
    "interrupted",
    "queued",
    "running",
    "not_started",
)


@click.group("run", cls=JobGroup)
def fleet_run() -> None:
    """Send a job to every selected target: one task per target on the queue.

    Each target's run is started once: a worker killed mid-run has its task delivered
    again and the run resumed, no step redone. Steps that need a person wait, as
    waiting_approval (`aishell approvals`)."""


def declared_fleet_run(name: str) -> click.Command:
    """`aishell fleet run NAME`: the agent's job options, the targets, how to wait."""
    spec = commands.agent_spec(name)

    @click.command(
        name, help=f"{spec.description}\n\nThe {spec.name} agent's job, on many targets."
    )
    @declared_options(spec.options, target=False)
    @targets_selector("selector")
    @max_run_time_option
    @click.option("--dry-run", is_flag=True, help="Each run read-only: analysis, preview the rest.")
    @wait_options
    @json_option
    @pass_state
    def command(state: State, /, **given: Any) -> None:
        selector = given.pop("selector")
        if selector is None:
            raise UsageError("Name the targets: --targets SELECTOR or --all-targets")
        as_json, wait = given.pop("as_json"), given.pop("wait")
        wait_seconds = given.pop("wait_seconds")
        options = {
            "dry_run": given.pop("dry_run") or None,
            "max_run_seconds": given.pop("max_run_seconds", None),
        }
        shown = _Progress(as_json)
        summary = commands.fleet_run(
            state.config,
            spec.name,
            jobs.declared_job(spec, given),
            selector,
            options=options,
            wait_seconds=wait_seconds if wait else None,
            progress=shown,
        )
        _render(summary, as_json)
        _exit_if_bad(summary, wait)

    return command


def wait_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--wait/--no-wait and --wait-seconds: whether and how long to watch the runs."""
    command = click.option(
        "--wait-seconds",
        type=FiniteFloat(min=1, max=MAX_RUN_TIME_SECONDS),
        default=6 * 3600,  # whole seconds: --help shows the default as written
        show_default=True,
        help="How long --wait watches.",
    )(command)
    return click.option(
        "--wait/--no-wait",
        default=True,
        help="Watch until every target's run is over (default), or only send the tasks.",
    )(command)


def _exit_if_bad(summary: dict[str, Any], waited: bool) -> None:
    """Exit 1 when a run did not complete; else 3 when one waits for a person or for its
    maintenance window, as `aishell run` exits: a script that runs the fleet never takes
    a run left waiting for done."""
    if not waited:
        return
    statuses = {r["status"] for r in summary["runs"]}
    if statuses & set(_BAD):
        raise SystemExit(EXIT_FAILED)
    if statuses & {"waiting_approval", "out_of_window"}:
        raise SystemExit(EXIT_WAITING_APPROVAL)


fleet_run.declared = declared_fleet_run


class _Progress:
    """One line each time the counts change (none with --json)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json, self.last = as_json, ""

    def __call__(self, summary: dict[str, Any]) -> None:
        line = _counts(summary)
        if not self.as_json and line != self.last:
            click.echo(f"fleet {summary['fleet_id']}: {line}", err=True)
            self.last = line


def _counts(summary: dict[str, Any]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(summary["counts"].items()))


def _render(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(summary)
        return
    click.echo(
        f"fleet job {summary['fleet_id']}: {summary['agent']} on {len(summary['runs'])} targets"
    )
    for row in summary["runs"]:
        where = f" on {row['host']}" if row["host"] else ""
        error = f": {row['error']}" if row["error"] else ""
        run = row["run_id"] or "-"
        click.echo(printable(f"  {row['target']}: {row['status']} (run {run}{where}){error}"))


@click.command("show")
@click.argument("fleet_id")
@json_option
@pass_state
def fleet_show(state: State, fleet_id: str, as_json: bool) -> None:
    """A fleet job and where each of its targets stands."""
    _render(commands.fleet_summary(state.config, fleet_id), as_json)


@click.command("jobs")
@click.option("--limit", type=WholeNumber(min=1, max=MOST_LISTED), default=20, show_default=True)
@json_option
@pass_state
def fleet_jobs(state: State, limit: int, as_json: bool) -> None:
    """The newest fleet jobs: when, what, on which targets, and where their runs stand."""
    listing = commands.list_fleet_jobs(state.config, limit)
    if as_json:
        emit_json(listing)
        return
    if not listing["fleet_jobs"]:
        click.echo("No fleet jobs yet: `aishell fleet run` sends one")
    for job in listing["fleet_jobs"]:
        click.echo(
            printable(
                f"{job['fleet_id']}  {job['created_at']}  {job['agent']} on "
                f"{len(job['targets'])} targets ({job['selector']}): {_counts(job)}"
            )
        )


@click.command("resend")
@click.argument("fleet_id")
@wait_options
@json_option
@pass_state
def fleet_resend(
    state: State, fleet_id: str, wait: bool, wait_seconds: float, as_json: bool
) -> None:
    """Send again the task of each target of a fleet job whose run is not over, or never
    began (not_started, once what stopped it is mended): after a send failed midway, or
    the broker lost its queue (a Redis restarted without its data). A target's run
    starts once however often its task comes."""
    summary = commands.fleet_resend(
        state.config,
        fleet_id,
        wait_seconds=wait_seconds if wait else None,
        progress=_Progress(as_json),
    )
    if not as_json:
        sent = ", ".join(summary["resent"]) or "none: every target's run is over"
        click.echo(printable(f"sent again: {sent}"), err=True)
    _render(summary, as_json)
    _exit_if_bad(summary, wait)


@click.command("worker")
@click.option(
    "--concurrency",
    type=WholeNumber(min=1, max=256),
    default=1,
    show_default=True,
    help="Tasks at once, each in a child process of the worker.",
)
@click.option("--name", help="The worker's name on the broker (default aishell@HOST).")
@pass_state
def worker(state: State, concurrency: int, name: str | None) -> None:
    """Run fleet tasks from the queue until stopped (SIGTERM: the running tasks finish,
    or are interrupted resumably and sent back to the queue)."""
    commands.start_worker(state.config, concurrency=concurrency, name=name)
