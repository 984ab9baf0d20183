"""`aishell schedule`: run jobs on a cron schedule, unattended, and serve them."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from aishell import commands, render
from aishell.agents import jobs
from aishell.cli.context import AishellGroup, State, pass_state
from aishell.cli.options import json_option, log_format_option, table_option
from aishell.cli.output import answer, emit_json, finish_run
from aishell.cli.run_jobs import declared_run, run
from aishell.config.options import SCHEDULE_MAX_RUN_TIME
from aishell.errors import UsageError
from aishell.terminal import printable


def job_from_words(
    words: tuple[str, ...],
) -> tuple[str, dict[str, Any], str | None, dict[str, Any]]:
    """The words `aishell run` takes (after `--`), parsed as it parses them:
    (agent, job, target, options)."""
    if not words:
        raise UsageError("Give the job after --, as `aishell run` takes it: -- maintenance ...")
    # `-` for `_` names the same job, as `aishell run` reads it (`log-cleanup`).
    name, rest = words[0].replace("-", "_"), list(words[1:])
    command, spec = run.commands.get(name), None
    if command is None:
        try:  # an agent with no command of its own
            spec = commands.agent_spec(name)
        except UsageError:
            from aishell.agents.available import agent_names

            # A package's agents too: each is a job `aishell run` takes.
            known = ", ".join(sorted({*run.commands, *agent_names()}))
            raise UsageError(f"Unknown job {words[0]!r}; jobs are: {known}") from None
        command = declared_run(name)
    try:
        # The help options `aishell` gives its commands: click keeps the first a
        # command is given, for every later help of it in the process.
        names = ["-h", "--help"]
        with command.make_context(f"aishell run {name}", rest, help_option_names=names) as ctx:
            params = dict(ctx.params)
    except click.exceptions.Exit:
        raise UsageError("The job words asked for help; give the job itself") from None
    except click.ClickException as exc:
        raise UsageError(f"Job words: {exc.format_message()}") from None
    return jobs.scheduled_job(name, params, spec)


@click.group(cls=AishellGroup)
def schedule() -> None:
    """Run jobs on a cron schedule, unattended (served by `aishell schedule serve`)."""


@schedule.command("add")
@click.argument("name")
@click.option(
    "--cron",
    required=True,
    help="When, as in crontab(5): five fields, minute hour day month weekday (0 and 7 are "
    "Sunday; names jan..dec and sun..sat), or a macro such as @daily or @weekly.",
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="The cron's time zone, by its IANA name (Europe/Berlin; not localtime).",
)
@table_option(SCHEDULE_MAX_RUN_TIME)
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
@json_option
@pass_state
def schedule_add(
    state: State,
    name: str,
    cron: str,
    timezone: str,
    max_run_time: float | None,
    words: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add a schedule: aishell schedule add NAME --cron "0 2 * * *" -- maintenance --type full

    The words after -- are those `aishell run` takes; they are checked now. This one
    runs every day at 02:00 (UTC unless --timezone says otherwise).
    """
    agent, job, target, options = job_from_words(words)
    if max_run_time is not None:
        options["max_run_seconds"] = max_run_time
    shown = [agent, *words[1:]]  # the job named as `aishell agents list` names it
    added = commands.add_schedule(
        state.config, name, cron, timezone, shown, agent, job, target, options
    )
    if as_json:
        emit_json(added)
    else:
        click.echo(
            f"Schedule {printable(name)} added; next run {render.when(added['next_run'])} "
            "(served by `aishell schedule serve`)."
        )


@schedule.command("list")
@json_option
@pass_state
def schedule_list(state: State, as_json: bool) -> None:
    """Every schedule: its job, next run, and last run's status."""
    found = commands.list_schedules(state.config)
    answer(as_json, {"schedules": found}, lambda out: render.schedules_table(out, found))


@schedule.command("remove")
@click.argument("name")
@pass_state
def schedule_remove(state: State, name: str) -> None:
    """Remove a schedule (its past runs stay in the state store)."""
    commands.remove_schedule(state.config, name)
    click.echo(f"Schedule {name} removed.")


@schedule.command("pause")
@click.argument("name")
@pass_state
def schedule_pause(state: State, name: str) -> None:
    """Stop a schedule's triggers until `aishell schedule resume`."""
    commands.pause_schedule(state.config, name, True)
    click.echo(f"Schedule {name} paused.")


@schedule.command("resume")
@click.argument("name")
@pass_state
def schedule_resume(state: State, name: str) -> None:
    """Let a paused schedule's triggers fire again."""
    commands.pause_schedule(state.config, name, False)
    click.echo(f"Schedule {name} resumed.")


@schedule.command("run-now")
@click.argument("name")
@json_option
@pass_state
@click.pass_context
def schedule_run_now(ctx: click.Context, state: State, name: str, as_json: bool) -> None:
    """Run a schedule's job now, exactly as its trigger would (never a prompt)."""
    console = render.console(as_json)
    from aishell.cli.logs import rendered_log  # late: logging is for this command alone

    with rendered_log(console):
        result = commands.run_schedule(state.config, name, "run-now")
    assert result is not None  # run-now always starts or resumes a run
    finish_run(ctx, console, result, as_json)


@schedule.command("serve")
@click.option(
    "--standby",
    is_flag=True,
    help="When a scheduler already serves the state store, wait until it ends (its "
    "machine too), then serve: a hot standby on a second machine.",
)
@click.option(
    "--fleet",
    is_flag=True,
    help="Send each due job to the queue (`fleet:` in config) for `aishell worker` "
    "processes to run, instead of running it here.",
)
@log_format_option
@pass_state
def schedule_serve(state: State, standby: bool, fleet: bool, log_format: str | None) -> None:
    """Serve the schedules in the foreground (for systemd or a container).

    One line per event on stdout. SIGTERM or SIGINT: running steps end resumably,
    then it exits, within 20 s whatever the steps do (a run still going then is
    resumed when serve starts again, as is one left by a serve that was killed).
    Each trigger runs on the config as its files hold it then (a target or window
    added meanwhile needs no restart); while the files do not load, each trigger fails,
    notified, and none runs on the config read before. A second serve on the same state
    store refuses to start (exit 5), or with --standby waits to serve. On a state store
    on PostgreSQL the scheduler's lock is the server's, freed when the serving process
    or its machine dies; a serve that loses it stops (exit 2).
    """
    from aishell.cli.logs import serve_log  # late: logging is for this command alone

    with serve_log(log_format):
        left = commands.serve_schedules(
            state.config, standby=standby, fleet=fleet, reload=state.read_config_again
        )
    if left:
        # A step still in a statement would hold the exit past the bound: its run is
        # stored running with this pid, and taken back when serve starts again.
        sys.stdout.flush()
        os._exit(0)
