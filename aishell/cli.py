"""The command line: parse options, call one function of commands.py, render the result."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from aishell import commands, render
from aishell.approval import PROMPT_CHOICES, NonInteractive, PreApproved, Prompting
from aishell.config import Config, load_config
from aishell.errors import EXIT_DENIED, EXIT_FAILED, EXIT_WAITING_APPROVAL, AishellError
from aishell.executor import RunResult

EXIT_CODES_HELP = """
\b
Exit codes:
  0  succeeded
  1  failed
  2  usage or configuration error
  3  waiting for approval
  4  denied or aborted by a person
  5  another run holds the target's lock
"""

RUN_EXIT = {
    "completed": 0,
    "failed": EXIT_FAILED,
    "waiting_approval": EXIT_WAITING_APPROVAL,
    "completed_with_denials": EXIT_DENIED,
    "denied": EXIT_DENIED,
    "aborted": EXIT_DENIED,
    "interrupted": EXIT_DENIED,
}


class AishellGroup(click.Group):
    """Turns domain errors into one line and an exit code; tracebacks only with --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AishellError as exc:
            if ctx.find_root().params.get("debug"):
                traceback.print_exc()
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)


class State:
    """Options of the top-level command, shared by every subcommand."""

    def __init__(self, config_path: str | None, home: str | None, debug: bool) -> None:
        self.config_path, self.home, self.debug = config_path, home, debug
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path, self.home)
        return self._config


pass_state = click.make_pass_decorator(State)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(
        f
    )


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(cls=AishellGroup, epilog=EXIT_CODES_HELP)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file (default: AISHELL_CONFIG, ./config/aishell.yaml, then the built-in one).",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    help="Folder for state.db and relative paths (default: AISHELL_HOME or the current folder).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="aishell")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, home: str | None, debug: bool) -> None:
    """aishell: a DBA assistant that plans, checks, runs and checkpoints database maintenance."""
    ctx.obj = State(config_path, home, debug)


# --- demo ------------------------------------------------------------------------------


@cli.command()
@click.option("--target", help="SQLite target to create (default: the default target).")
@click.option(
    "--log-rows",
    type=click.IntRange(min=1),
    default=200_000,
    show_default=True,
    help="Rows of app_logs to generate.",
)
@json_option
@pass_state
def demo(state: State, target: str | None, log_rows: int, as_json: bool) -> None:
    """Create or refresh the demo SQLite database with realistic, fragmented data."""
    console = render.console(as_json)
    with render.demo_progress(console, log_rows) as tell:
        result = commands.create_demo_database(state.config, target, log_rows, progress=tell)
    if as_json:
        emit_json(result)
    else:
        render.demo_result(console, result)


# --- plan and run ------------------------------------------------------------------------


def maintenance_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--type",
            "kind",
            type=click.Choice(["quick", "standard", "full", "emergency"]),
            default="standard",
            show_default=True,
            help="quick: statistics; standard: + fragmentation; full: + rebuild and "
            "compact; emergency: corruption check and repair.",
        ),
        click.option("--target", help="Target from config (default: the default target)."),
        click.option("--tables", help="Comma-separated tables (default: every user table)."),
        click.option(
            "--no-rebuild-indexes", is_flag=True, help="Leave indexes alone in a full run."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def maintenance_job(kind: str, tables: str | None, no_rebuild_indexes: bool) -> dict[str, Any]:
    return {
        "type": kind,
        "tables": tables.split(",") if tables is not None else None,
        "rebuild_indexes": not no_rebuild_indexes,
    }


@cli.group(cls=AishellGroup)
def plan() -> None:
    """Show what a job would do, step by step, without running it."""


@plan.command("maintenance")
@maintenance_options
@json_option
@pass_state
def plan_maintenance(
    state: State,
    kind: str,
    target: str | None,
    tables: str | None,
    no_rebuild_indexes: bool,
    as_json: bool,
) -> None:
    """Plan maintenance: each step's tool, risk, whether it needs approval, and its SQL."""
    preview = commands.plan_job(
        state.config, "maintenance", maintenance_job(kind, tables, no_rebuild_indexes), target
    )
    if as_json:
        emit_json(preview.to_dict())
    else:
        render.plan_preview(render.console(False), preview)


@cli.group(cls=AishellGroup)
def run() -> None:
    """Run a job: plan, check each step against the policy, execute, checkpoint."""


@run.command("maintenance")
@maintenance_options
@click.option("--dry-run", is_flag=True, help="Read-only: run analysis, preview the rest.")
@click.option("--yes", "-y", is_flag=True, help="Approve every step that needs approval.")
@click.option(
    "--non-interactive",
    is_flag=True,
    help="Never prompt; steps needing approval leave the run waiting_approval.",
)
@json_option
@pass_state
@click.pass_context
def run_maintenance(
    ctx: click.Context,
    state: State,
    kind: str,
    target: str | None,
    tables: str | None,
    no_rebuild_indexes: bool,
    dry_run: bool,
    yes: bool,
    non_interactive: bool,
    as_json: bool,
) -> None:
    """Run maintenance on a target and print a summary of every step."""
    console = render.console(as_json)
    if yes:
        approver: Any = PreApproved()
    elif non_interactive or not sys.stdin.isatty():
        approver = NonInteractive()
    else:
        approver = Prompting(ask=lambda request: render.approval_prompt(console, request))
    with render.StepProgress(console) as observer:
        result = commands.run_job(
            state.config,
            "maintenance",
            maintenance_job(kind, tables, no_rebuild_indexes),
            target,
            dry_run=dry_run,
            approver=approver,
            observer=observer,
        )
    finish_run(ctx, console, result, as_json)


def finish_run(ctx: click.Context, console: Any, result: RunResult, as_json: bool) -> None:
    if as_json:
        emit_json(result.to_dict())
    render.run_summary(console, result)
    ctx.exit(RUN_EXIT.get(result.status, EXIT_FAILED))


# --- runs ---------------------------------------------------------------------------------


@cli.group(cls=AishellGroup)
def runs() -> None:
    """Look at past and current runs in the state store."""


@runs.command("list")
@click.option(
    "--status",
    type=click.Choice(
        [
            "running",
            "completed",
            "completed_with_denials",
            "failed",
            "waiting_approval",
            "aborted",
            "interrupted",
        ]
    ),
    help="Only runs with this status.",
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@pass_state
def runs_list(state: State, status: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first."""
    rows = commands.list_runs(state.config, status=status, limit=limit)
    if as_json:
        emit_json({"runs": rows})
    else:
        render.runs_table(render.console(False), rows)


@runs.command("show")
@click.argument("run_id")
@json_option
@pass_state
def runs_show(state: State, run_id: str, as_json: bool) -> None:
    """Show one run: its steps, their params, outputs and errors, and approvals."""
    data = commands.show_run(state.config, run_id)
    if as_json:
        emit_json(data)
    else:
        render.run_detail(render.console(False), data)


# --- tools --------------------------------------------------------------------------------


@cli.group(cls=AishellGroup)
def tools() -> None:
    """Browse the tool catalog: what the agents may run, and how risky it is."""


@tools.command("list")
@click.option(
    "--category", type=click.Choice(["analysis", "maintenance", "backup", "cleanup", "ddl"])
)
@click.option("--risk", type=click.Choice(["safe", "low", "medium", "high", "critical"]))
@json_option
@pass_state
def tools_list(state: State, category: str | None, risk: str | None, as_json: bool) -> None:
    """List tools, optionally of one category or risk level."""
    found = commands.list_tools(state.config, category=category, risk=risk)
    if as_json:
        emit_json({"tools": [t.metadata() for t in found]})
    else:
        render.tools_table(render.console(False), found)


@tools.command("show")
@click.argument("name")
@click.option("--dialect", type=click.Choice(["sqlite", "postgresql", "mysql"]))
@json_option
@pass_state
def tools_show(state: State, name: str, dialect: str | None, as_json: bool) -> None:
    """Show a tool's metadata and the SQL it runs for its example."""
    data = commands.show_tool(state.config, name, dialect)
    if as_json:
        emit_json(data)
    else:
        render.tool_detail(render.console(False), data)


def main() -> None:
    cli(prog_name="aishell")


__all__ = ["PROMPT_CHOICES", "cli", "main"]
