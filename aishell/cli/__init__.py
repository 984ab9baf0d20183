"""The command line: parse options, call one function of commands, render the result.

The top-level group lives here; each subject's commands live in their own module, named
below and imported when one of them is looked up. `aishell.cli:main` is the console
entry point.
"""

from __future__ import annotations

import gc
import sys

import click

from aishell.cli.closedpipe import drop_output_once_its_reader_is_gone
from aishell.cli.context import AishellGroup, NonEmpty, State, Subcommands
from aishell.terminal import writes_any_text

# Each subcommand by name, and where it is defined: a command imports its own module when
# it runs (`targets list` does not pay for `run`'s), --help and docs/cli.md import them
# all to list them (by name, whatever the order here).
SUBCOMMANDS: dict[str, str] = {
    "init": "aishell.cli.home:init",
    "demo": "aishell.cli.home:demo",
    "plan": "aishell.cli.plans:plan",
    "ask": "aishell.cli.model_planner:ask",
    "planner": "aishell.cli.model_planner:planner",
    "run": "aishell.cli.run_jobs:run",
    "restore": "aishell.cli.backup_catalog:restore_command",
    "backups": "aishell.cli.backup_catalog:backups",
    "apply": "aishell.cli.plans:apply",
    "runs": "aishell.cli.run_control:runs",
    "resume": "aishell.cli.run_control:resume",
    "approvals": "aishell.cli.run_control:approvals",
    "approve": "aishell.cli.run_control:approve",
    "deny": "aishell.cli.run_control:deny",
    "stop": "aishell.cli.run_control:stop",
    "doctor": "aishell.cli.home:doctor",
    "targets": "aishell.cli.targets_and_tools:targets",
    "schedule": "aishell.cli.schedules:schedule",
    "alerts": "aishell.cli.alerts:alerts",
    "metrics": "aishell.cli.home:metrics_command",
    "fleet": "aishell.cli.fleet:fleet",
    "serve": "aishell.cli.fleet:serve",
    "worker": "aishell.cli.fleet_jobs:worker",
    "tools": "aishell.cli.targets_and_tools:tools",
    "agents": "aishell.cli.agents:agents",
}

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
    commands=Subcommands(SUBCOMMANDS),
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config",
    "config_path",
    type=NonEmpty(click.Path(dir_okay=False)),
    help="Config file to use instead of the home's own (default: AISHELL_CONFIG); "
    "/etc/aishell/aishell.yaml is read under either.",
)
@click.option(
    "--home",
    type=NonEmpty(click.Path(file_okay=False)),
    help="The aishell home: DIR/config/aishell.yaml, state.db and relative paths under DIR "
    "(default: AISHELL_HOME, else your user folders; `aishell doctor` shows them).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="aishell")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, home: str | None, debug: bool) -> None:
    """aishell: a DBA assistant that plans, checks, runs and checkpoints database maintenance."""
    ctx.obj = State(config_path, home, debug)


# Allocations between the cyclic collector's passes (Python's default: 700). A command
# holds what it read of every table until it ends, and a plan of 10,000 tables makes
# millions of objects that live that long: at the default, the collector walked them
# again and again for nothing (0.3 s of a 2 s plan). Its cycles are still collected,
# a pass in about 10,000 allocations (the plan's peak memory the same, within 4 MiB).
ALLOCATIONS_PER_COLLECTION = 10_000


def collect_less() -> None:
    """The collector as every aishell command runs it (and the benchmarks that run a
    command's function in their own process): a pass every ALLOCATIONS_PER_COLLECTION
    allocations."""
    gc.set_threshold(ALLOCATIONS_PER_COLLECTION, *gc.get_threshold()[1:])


def main() -> None:
    # First: a locale whose encoding lacks a mark (ISO-8859-1, ASCII) never fails a
    # command at its first line of output, nor at its error's.
    writes_any_text(sys.stdout)
    writes_any_text(sys.stderr)
    drop_output_once_its_reader_is_gone()
    collect_less()
    try:
        cli(prog_name="aishell")
    finally:
        # The command is done: the interpreter's exit need not walk every object the
        # imports made looking for cycles (a full collection: a tenth of a second and
        # more). atexit handlers and open files are closed as before.
        gc.freeze()


__all__ = ["cli", "collect_less", "main"]
