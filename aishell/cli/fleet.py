"""`aishell fleet` and `aishell serve --http`: every configured target at once, in a
table or in the read-only web view; and jobs on many targets (cli/fleet_jobs.py)."""

from __future__ import annotations

import click

from aishell import commands, render
from aishell.cli.context import AishellGroup, State, pass_state
from aishell.cli.fleet_jobs import fleet_jobs, fleet_resend, fleet_run, fleet_show
from aishell.cli.options import WholeNumber, json_option, log_format_option, targets_selector
from aishell.cli.output import answer
from aishell.errors import UsageError


@click.group(cls=AishellGroup)
def fleet() -> None:
    """Every configured target at once: its status (last run, approvals, backups, next
    job), and jobs sent to many targets through the queue (`fleet:` in config), run by
    `aishell worker` processes on any machine that reaches the broker and the state
    store."""


fleet.add_command(fleet_run)
fleet.add_command(fleet_show)
fleet.add_command(fleet_resend)
fleet.add_command(fleet_jobs)


@fleet.command("status")
@targets_selector("selector")
@json_option
@pass_state
def fleet_status(state: State, selector: str | None, as_json: bool) -> None:
    """Per target: its last run (agent, status, when), the steps waiting for approval
    (how many, the oldest's age), the age of its newest restore-proven backup, and its
    next scheduled job. A target that never ran says so."""
    status = commands.fleet_status(state.config, selector)
    answer(as_json, status, lambda out: render.fleet_table(out, status))


@click.command("serve")
@click.option("--http", is_flag=True, help="Serve the read-only web view over HTTP.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; other than loopback only with a token configured "
    "(web.token_env or web.token_file).",
)
@click.option(
    "--port",
    type=WholeNumber(min=0, max=65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0: one the system picks, printed at start).",
)
@log_format_option
@pass_state
def serve(state: State, http: bool, host: str, port: int, log_format: str | None) -> None:
    """Serve the read-only web view of the fleet: fleet status, runs, one run's steps,
    waiting approvals and backup ages. Nothing in it changes anything.

    Requests from this host are served; a request from another host must give the
    token (web.token_env or web.token_file) as `Authorization: Bearer TOKEN` or
    `?token=TOKEN`. In the foreground until SIGINT or SIGTERM; one line per request."""
    if not http:
        raise UsageError(
            "Say what to serve: --http (the read-only web view); the scheduler is "
            "`aishell schedule serve`"
        )
    from aishell.cli.logs import serve_log  # late: logging is for this command alone

    with serve_log(log_format):
        commands.serve_web(
            state.config, host, port, lambda url: click.echo(f"Serving {url}", err=True)
        )
