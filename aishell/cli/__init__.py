"""The command line: parse options, call one function of commands, render the result.

The top-level group lives here; each subject's commands live in their own module and
are added below. `aishell.cli:main` is the console entry point.
"""

from __future__ import annotations

import gc

import click

from aishell.cli.agents import agents
from aishell.cli.alerts import alerts
from aishell.cli.backup_catalog import backups, restore_command
from aishell.cli.closedpipe import drop_output_once_its_reader_is_gone
from aishell.cli.context import AishellGroup, State
from aishell.cli.fleet import fleet, serve
from aishell.cli.fleet_jobs import worker
from aishell.cli.home import demo, doctor, init, metrics_command
from aishell.cli.model_planner import ask, planner
from aishell.cli.plans import apply, plan
from aishell.cli.run_control import approvals, approve, deny, resume, runs, stop
from aishell.cli.run_jobs import run
from aishell.cli.schedules import job_from_words, schedule
from aishell.cli.targets_and_tools import targets, tools

EXIT_CODES_HELP = """
\b
Exit codes:
  0  succeeded
  1  failed
  2  usage or configuration error
  3  waiting: for approval, or for the maintenance window
  4  denied, aborted or interrupted
  5  another run holds the target's lock
"""


@click.group(
    cls=AishellGroup,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file to use instead of the home's own (default: AISHELL_CONFIG); "
    "/etc/aishell/aishell.yaml is read under either.",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    help="The aishell home: DIR/config/aishell.yaml, state.db and relative paths under DIR "
    "(default: AISHELL_HOME, else your user folders; `aishell doctor` shows them).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="aishell")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, home: str | None, debug: bool) -> None:
    """aishell: a DBA assistant that plans, checks, runs and checkpoints database maintenance."""
    ctx.obj = State(config_path, home, debug)


# --help and docs/cli.md list them by name, whatever the order here.
SUBCOMMANDS: tuple[click.Command, ...] = (
    init,
    demo,
    plan,
    ask,
    planner,
    run,
    restore_command,
    backups,
    apply,
    runs,
    resume,
    approvals,
    approve,
    deny,
    stop,
    doctor,
    targets,
    schedule,
    alerts,
    metrics_command,
    fleet,
    serve,
    worker,
    tools,
    agents,
)
for subcommand in SUBCOMMANDS:
    cli.add_command(subcommand)


def main() -> None:
    drop_output_once_its_reader_is_gone()
    try:
        cli(prog_name="aishell")
    finally:
        # The command is done: the interpreter's exit need not walk every object the
        # imports made looking for cycles (a full collection: a tenth of a second and
        # more). atexit handlers and open files are closed as before.
        gc.freeze()


__all__ = ["cli", "job_from_words", "main"]
