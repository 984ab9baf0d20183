"""The command line: parse options, call one function of commands.py, render the result."""

from __future__ import annotations

import json
import math
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from aishell import commands, render
from aishell.agents.log_cleanup import ARCHIVE_FORMS, parse_archive_to
from aishell.approval import Approver, NonInteractive, PreApproved, Prompting
from aishell.config import (
    MAX_BATCH_MS,
    MAX_RETENTION_DAYS,
    MAX_RUN_TIME_SECONDS,
    MAX_SLEEP_MS,
    Config,
    load_config,
)
from aishell.errors import (
    EXIT_DENIED,
    EXIT_FAILED,
    EXIT_WAITING_APPROVAL,
    AishellError,
    UsageError,
)
from aishell.executor import RUN_STATUSES, RunResult
from aishell.registry import RiskLevel
from aishell.terminal import printable

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

RUN_EXIT = {
    "completed": 0,
    "failed": EXIT_FAILED,
    "waiting_approval": EXIT_WAITING_APPROVAL,
    "out_of_window": EXIT_WAITING_APPROVAL,
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
            click.echo(f"Error: {printable(exc)}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a defect: still one line, the traceback on request
            if ctx.find_root().params.get("debug"):
                traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            click.echo(
                f"Error: internal error ({type(exc).__name__}: {printable(first)}); "
                "run with --debug for the traceback",
                err=True,
            )
            ctx.exit(EXIT_FAILED)


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


class FiniteFloat(click.FloatRange):
    """A float range that refuses NaN and infinity (NaN compares false with every
    limit, so a range alone lets it through)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


class Duration(click.ParamType):
    """Seconds, or a number with s, m, h or d (as pt-archiver's --run-time)."""

    name = "duration"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def __init__(self, most: float = MAX_RUN_TIME_SECONDS) -> None:
        self.most = most

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            unit = self._UNITS.get(text[-1:], None)
            number = text[:-1].strip() if unit else text
            try:
                seconds = float(number) * (unit or 1)
            except ValueError:
                self.fail(f"{value!r} is not a duration such as 90, 90s, 30m, 2h or 1d", param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite duration", param, ctx)
        if seconds < 1:
            self.fail(f"{value!r} is under a second", param, ctx)
        if seconds > self.most:
            self.fail(f"{value!r} is over the limit of {self.most / 86400:g} days", param, ctx)
        return seconds


class ArchiveTo(click.ParamType):
    """`file:PATH` or `table:NAME`; the kind is said, never guessed from the text."""

    name = "archive"

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return "file:PATH|table:NAME"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        try:
            kind, where = parse_archive_to(value)
        except UsageError:
            self.fail(f"{value!r}: give {ARCHIVE_FORMS}", param, ctx)
        # A file is fixed relative to where the command was typed, not where a
        # scheduler later runs it.
        return f"{kind}:{where}"


def log_cleanup_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--table", required=True, help="Table to purge."),
        click.option("--date-column", help="Column holding each row's date (default from config)."),
        click.option(
            "--retention-days",
            type=FiniteFloat(0, MAX_RETENTION_DAYS),
            help="Keep rows younger than this (default from config).",
        ),
        click.option(
            "--batch-size", type=click.IntRange(1, 1_000_000), help="Rows in the first batch."
        ),
        click.option(
            "--max-batch-size",
            type=click.IntRange(1, 1_000_000),
            help="Never more rows (keys) in one batch.",
        ),
        click.option(
            "--max-batch-ms",
            type=FiniteFloat(1, MAX_BATCH_MS),
            help="Size batches to take about this long.",
        ),
        click.option(
            "--sleep-ms", type=FiniteFloat(0, MAX_SLEEP_MS), help="Pause between batches."
        ),
        click.option(
            "--max-rows",
            type=click.IntRange(min=1),
            help="Stop after this many rows; the next run goes on.",
        ),
        click.option("--run-time", type=Duration(), help="Stop after this long (90s, 30m, 2h)."),
        click.option(
            "--archive-to",
            type=ArchiveTo(),
            help="Copy rows here before deleting them: file:PATH (a JSON lines file) or "
            "table:NAME (an existing table with the same columns).",
        ),
        click.option("--target", help="Target from config (default: the default target)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def log_cleanup_job(**flags: Any) -> dict[str, Any]:
    """The job from the flags; flags left out take the agent's configured defaults."""
    names = {"run_time": "run_time_seconds"}
    return {names.get(k, k): v for k, v in flags.items() if v is not None}


@cli.group(cls=AishellGroup)
def plan() -> None:
    """Show what a job would do, step by step, without running it.

    A plan saved with --out is signed with this home's key, kept in
    plan-signing.key in the home (mode 0600); `aishell plan rotate-key` replaces it.
    """


planner_option = click.option(
    "--planner",
    type=click.Choice(["rules", "llm"]),
    help="Who drafts the plan: the agent's rules, or the model through Ollama "
    "(default: planner.default in config). A drafted plan is validated and shown first.",
)

safety_level_option = click.option(
    "--safety-level",
    type=click.Choice(["strict", "moderate", "permissive"]),
    help="Override the agent's safety level for this run (loosening production needs --force).",
)


def show_plan(preview: commands.PlanPreview, out: Path | None, as_json: bool) -> None:
    if as_json:
        emit_json(preview.to_dict())
    else:
        console = render.console(False)
        render.plan_preview(console, preview)
        render.plan_warnings(console, preview.plan.warnings)
        if out is not None:
            console.print(f"Plan saved to {out}; run it with `aishell apply {out}`.", markup=False)


@plan.command("maintenance")
@maintenance_options
@planner_option
@safety_level_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Save the plan, signed with this home's key, for `aishell apply`.",
)
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
    as_json: bool,
) -> None:
    """Plan maintenance: each step's tool, risk, whether it needs approval, and its SQL."""
    with render.StepProgress(render.console(as_json)) as progress:
        preview = commands.plan_job(
            state.config,
            "maintenance",
            maintenance_job(kind, tables, no_rebuild_indexes),
            target,
            safety_level=safety_level,
            out=out,
            planner=planner,
            notice=progress.planning,
        )
    show_plan(preview, out, as_json)


@plan.command("log-cleanup")
@log_cleanup_options
@planner_option
@safety_level_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Save the plan, signed with this home's key, for `aishell apply`.",
)
@json_option
@pass_state
def plan_log_cleanup(
    state: State,
    target: str | None,
    planner: str | None,
    safety_level: str | None,
    out: Path | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Plan a purge of old rows: count, delete in batches, count again, statistics."""
    with render.StepProgress(render.console(as_json)) as progress:
        preview = commands.plan_job(
            state.config,
            "log_cleanup",
            log_cleanup_job(**flags),
            target,
            safety_level=safety_level,
            out=out,
            planner=planner,
            notice=progress.planning,
        )
    show_plan(preview, out, as_json)


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


def approval_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--yes", "-y", is_flag=True, help="Approve steps up to high risk (not critical)."
        ),
        click.option(
            "--approve-up-to",
            type=click.Choice(["safe", "low", "medium", "high"]),
            help="Approve steps up to this risk; critical steps always need a person.",
        ),
        click.option(
            "--non-interactive",
            is_flag=True,
            help="Never prompt; steps needing approval leave the run waiting_approval.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def make_approver(
    console: Any, yes: bool, approve_up_to: str | None, non_interactive: bool
) -> Approver:
    """Flags first; then a prompt at a terminal; otherwise wait (fail closed)."""
    if non_interactive or not sys.stdin.isatty():
        why = "--non-interactive" if non_interactive else "no terminal on stdin"
        fallback: Approver = NonInteractive(why=why)
    else:
        fallback = Prompting(ask=lambda request: render.approval_prompt(console, request))
    if approve_up_to or yes:
        level = RiskLevel(approve_up_to or "high")
        how = f"--approve-up-to {level.value}" if approve_up_to else "--yes"
        return PreApproved(up_to=level, how=how, then=fallback)
    return fallback


@cli.group(cls=AishellGroup)
def run() -> None:
    """Run a job: plan, check each step against the policy, execute, checkpoint."""


@run.command("maintenance")
@maintenance_options
@planner_option
@click.option("--dry-run", is_flag=True, help="Read-only: run analysis, preview the rest.")
@approval_options
@safety_level_option
@click.option("--force", is_flag=True, help="Allow loosening a production target's safety level.")
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
    planner: str | None,
    dry_run: bool,
    yes: bool,
    approve_up_to: str | None,
    non_interactive: bool,
    safety_level: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Run maintenance on a target and print a summary of every step."""
    run_and_render(
        ctx,
        as_json,
        dict(yes=yes, approve_up_to=approve_up_to, non_interactive=non_interactive),
        lambda approver, observer, review: commands.run_job(
            state.config,
            "maintenance",
            maintenance_job(kind, tables, no_rebuild_indexes),
            target,
            dry_run=dry_run,
            approver=approver,
            observer=observer,
            safety_level=safety_level,
            force=force,
            planner=planner,
            review=review,
        ),
    )


@run.command("log-cleanup")
@log_cleanup_options
@planner_option
@click.option("--dry-run", is_flag=True, help="Read-only: count what would go, show one batch.")
@approval_options
@safety_level_option
@click.option("--force", is_flag=True, help="Allow loosening a production target's safety level.")
@json_option
@pass_state
@click.pass_context
def run_log_cleanup(
    ctx: click.Context,
    state: State,
    target: str | None,
    planner: str | None,
    dry_run: bool,
    yes: bool,
    approve_up_to: str | None,
    non_interactive: bool,
    safety_level: str | None,
    force: bool,
    as_json: bool,
    **flags: Any,
) -> None:
    """Purge rows older than the retention from a table, in short throttled batches.

    Each batch walks the table's key and commits on its own, sized to take about
    --max-batch-ms; progress is checkpointed per batch, so `aishell stop` ends the
    purge after the current batch and `aishell resume` goes on from there.
    """
    run_and_render(
        ctx,
        as_json,
        dict(yes=yes, approve_up_to=approve_up_to, non_interactive=non_interactive),
        lambda approver, observer, review: commands.run_job(
            state.config,
            "log_cleanup",
            log_cleanup_job(**flags),
            target,
            dry_run=dry_run,
            approver=approver,
            observer=observer,
            safety_level=safety_level,
            force=force,
            planner=planner,
            review=review,
        ),
    )


def backup_job(
    kind: str, verify: bool, quick: bool, cleanup: bool, retention_days: float, keep_last: int
) -> dict[str, Any]:
    return {
        "type": kind,
        "verify": verify,
        "quick": quick,
        "cleanup": cleanup,
        "retention_days": retention_days,
        "keep_last": keep_last,
    }


@run.command("backup")
@planner_option
@click.option(
    "--type",
    "kind",
    type=click.Choice(["full", "incremental", "drill"]),
    default="full",
    show_default=True,
    help="full: back up the whole database; incremental: only the tables changed since "
    "the newest verified backup; drill: restore the newest backup into a scratch "
    "database and check it.",
)
@click.option("--target", help="Target from config (default: the default target).")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Prove the backup restores (checksum, restore, row counts).",
)
@click.option("--quick", is_flag=True, help="Verify by decoding the archive, not restoring it.")
@click.option("--cleanup", is_flag=True, help="Then delete backups past retention.")
@click.option(
    "--retention-days",
    type=FiniteFloat(0, MAX_RETENTION_DAYS),
    default=30,
    show_default=True,
    help="With --cleanup: keep backups younger than this.",
)
@click.option(
    "--keep-last",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="With --cleanup: always keep this many newest backups.",
)
@approval_options
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
    planner: str | None,
    yes: bool,
    approve_up_to: str | None,
    non_interactive: bool,
    as_json: bool,
) -> None:
    """Back up a target into the backup folder and validate the backup."""
    run_and_render(
        ctx,
        as_json,
        dict(yes=yes, approve_up_to=approve_up_to, non_interactive=non_interactive),
        lambda approver, observer, review: commands.run_job(
            state.config,
            "backup",
            backup_job(kind, verify, quick, cleanup, retention_days, keep_last),
            target,
            approver=approver,
            observer=observer,
            planner=planner,
            review=review,
        ),
    )


@cli.command("restore")
@click.argument("backup_id", type=int)
@click.option("--to", "to", required=True, help="Target to restore into.")
@click.option("--replace", is_flag=True, help="Replace what the target holds.")
@approval_options
@json_option
@pass_state
@click.pass_context
def restore_command(
    ctx: click.Context,
    state: State,
    backup_id: int,
    to: str,
    replace: bool,
    yes: bool,
    approve_up_to: str | None,
    non_interactive: bool,
    as_json: bool,
) -> None:
    """Restore a verified backup into a target (critical: a person approves it)."""
    run_and_render(
        ctx,
        as_json,
        dict(yes=yes, approve_up_to=approve_up_to, non_interactive=non_interactive),
        lambda approver, observer, _review: commands.restore(
            state.config, backup_id, to, replace=replace, approver=approver, observer=observer
        ),
    )


@cli.group(cls=AishellGroup)
def backups() -> None:
    """The backup catalog in the state store."""


@backups.command("list")
@click.option("--target", help="Only this target's backups.")
@json_option
@pass_state
def backups_list(state: State, target: str | None, as_json: bool) -> None:
    """List backups, newest first, and whether each was proven restorable."""
    rows = commands.list_backups(state.config, target)
    freshness = commands.backup_freshness(rows)
    if as_json:
        emit_json({"backups": rows, "newest_restorable": freshness})
    else:
        render.backups_table(render.console(False), rows, freshness)


@backups.command("show")
@click.argument("backup_id", type=int)
@json_option
@pass_state
def backups_show(state: State, backup_id: int, as_json: bool) -> None:
    """Show one backup: its manifest and the result of its validation."""
    data = commands.show_backup(state.config, backup_id)
    if as_json:
        emit_json(data)
    else:
        render.backup_detail(render.console(False), data)


@cli.command()
@click.argument("plan_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Read-only: run analysis, preview the rest.")
@approval_options
@safety_level_option
@click.option("--force", is_flag=True, help="Allow loosening a production target's safety level.")
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
    as_json: bool,
) -> None:
    """Run exactly a plan saved with `plan --out`, checked whole before its first step.

    Refused, with nothing changed, when its signature is missing or not made with this
    home's key (an edited plan, one made in another home, or one signed before the key
    was rotated), the file has unknown or missing keys, its target is not configured or
    now points at another database, a tool, table or column it names is gone, a tool
    changed, or the target drifted from what the plan assumed.
    """
    saved = commands.load_plan_file(plan_file)
    run_and_render(
        ctx,
        as_json,
        dict(yes=yes, approve_up_to=approve_up_to, non_interactive=non_interactive),
        lambda approver, observer, _review: commands.apply_plan(
            state.config,
            saved,
            dry_run=dry_run,
            approver=approver,
            observer=observer,
            safety_level=safety_level,
            force=force,
        ),
    )


@cli.command()
@click.argument("run_id")
@approval_options
@json_option
@pass_state
@click.pass_context
def resume(
    ctx: click.Context,
    state: State,
    run_id: str,
    yes: bool,
    approve_up_to: str | None,
    non_interactive: bool,
    as_json: bool,
) -> None:
    """Continue a waiting, deferred, failed or interrupted run; done steps never rerun."""
    run_and_render(
        ctx,
        as_json,
        dict(yes=yes, approve_up_to=approve_up_to, non_interactive=non_interactive),
        lambda approver, observer, _review: commands.resume_run(
            state.config, run_id, approver=approver, observer=observer
        ),
    )


@cli.command()
@click.argument("run_id")
@click.option("--step", type=int, help="Only this step (its index); default: every waiting step.")
@click.option("--reason", help="Why; recorded with the decision.")
@click.option(
    "--mark-done",
    is_flag=True,
    help="The step's effect is there (checked by you): record it as succeeded.",
)
@click.option("--skip", is_flag=True, help="Leave the step out of the run.")
@json_option
@pass_state
def approve(
    state: State,
    run_id: str,
    step: int | None,
    reason: str | None,
    mark_done: bool,
    skip: bool,
    as_json: bool,
) -> None:
    """Approve the steps of a run that wait for a person; then `aishell resume RUN_ID`."""
    if mark_done and skip:
        raise click.UsageError("--mark-done and --skip exclude each other")
    decision = "succeeded" if mark_done else "skipped" if skip else "approved"
    report_decision(commands.decide_steps(state.config, run_id, decision, step, reason), as_json)


@cli.command()
@click.argument("run_id")
@click.option("--step", type=int, help="Only this step (its index); default: every waiting step.")
@click.option("--reason", help="Why; recorded with the decision.")
@json_option
@pass_state
def deny(state: State, run_id: str, step: int | None, reason: str | None, as_json: bool) -> None:
    """Deny the steps of a run that wait for a person; then `aishell resume RUN_ID`."""
    report_decision(commands.decide_steps(state.config, run_id, "denied", step, reason), as_json)


def report_decision(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    steps = ", ".join(f"{s['index']} {s['tool']}" for s in result["steps"])
    click.echo(
        f"{result['decision'].capitalize()}: step(s) {steps} of run {result['run_id']}, "
        f"by {result['decided_by']}; continue with `aishell resume {result['run_id']}`."
    )


@cli.command()
@click.argument("run_id")
@json_option
@pass_state
def stop(state: State, run_id: str, as_json: bool) -> None:
    """Stop a running run after its current statement or batch; resume it later."""
    result = commands.stop_run(state.config, run_id)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"Run {result['run_id']} will stop after its current statement or batch; "
            f"continue it with `aishell resume {result['run_id']}`."
        )


@cli.command()
@click.option(
    "--clean",
    is_flag=True,
    help="Remove it: kill orphaned dump processes, delete scratch files, drop scratch databases.",
)
@json_option
@pass_state
@click.pass_context
def doctor(ctx: click.Context, state: State, clean: bool, as_json: bool) -> None:
    """Find what killed runs left behind: scratch files, scratch databases, child processes.

    Only processes of this host that are gone count; a live run's scratch is never
    touched. Exits 1 when --clean could not remove something (each says why)."""
    result = commands.doctor(state.config, clean=clean)
    if as_json:
        emit_json(result)
    else:
        for entry in result.get("leftovers", []):
            click.echo(printable(f"left by run {entry['run_id']}: {entry['kind']} {entry['name']}"))
        for entry in result.get("removed", []):
            click.echo(printable(f"{entry['done']}: {entry['kind']} {entry['name']}"))
        for entry in result.get("kept", []):
            click.echo(printable(f"not removed: {entry['kind']} {entry['name']}: {entry['why']}"))
        if not any(result.get(key) for key in ("leftovers", "removed", "kept")):
            click.echo("Nothing left behind by killed runs.")
        elif result.get("leftovers"):
            click.echo("Remove it with `aishell doctor --clean`.")
    if result.get("kept"):
        ctx.exit(EXIT_FAILED)


class PlanReviewer:
    """Shows a drafted plan before it runs; at a terminal, unless approval flags were
    given, asks whether to run it at all."""

    def __init__(self, console: Any, as_json: bool, approval: dict[str, Any]) -> None:
        self.console, self.as_json = console, as_json
        self.confirm = sys.stdin.isatty() and not any(approval.values())
        self.preview: commands.PlanPreview | None = None

    def __call__(self, preview: commands.PlanPreview) -> bool:
        self.preview = preview
        render.plan_preview(self.console, preview)
        render.plan_warnings(self.console, preview.plan.warnings)
        if not self.confirm:
            return True
        return click.confirm("Run this plan?", default=False, err=self.as_json)


def run_and_render(
    ctx: click.Context,
    as_json: bool,
    approval: dict[str, Any],
    start: Callable[[Approver, Any, PlanReviewer], RunResult],
) -> None:
    """Start a run with a progress display, print its summary, exit with its status.

    `approval` holds the approval flags (yes, approve_up_to, non_interactive). A plan
    a model drafted is shown to the reviewer before it runs.
    """
    console = render.console(as_json)
    approver = make_approver(console, **approval)
    reviewer = PlanReviewer(console, as_json, approval)
    with render.StepProgress(console) as observer:
        result = start(approver, observer, reviewer)
    shown = reviewer.preview.to_dict() if reviewer.preview is not None else None
    finish_run(ctx, console, result, as_json, preview=shown)


def finish_run(
    ctx: click.Context,
    console: Any,
    result: RunResult,
    as_json: bool,
    preview: dict[str, Any] | None = None,
) -> None:
    if as_json:
        emit_json({**result.to_dict(), "preview": preview} if preview else result.to_dict())
    render.run_summary(console, result)
    ctx.exit(RUN_EXIT.get(result.status, EXIT_FAILED))


@cli.command()
@click.argument("request", nargs=-1, required=True)
@click.option("--target", help="Target from config (default: the default target).")
@click.option("--dry-run", is_flag=True, help="Read-only: run analysis, preview the rest.")
@approval_options
@safety_level_option
@click.option("--force", is_flag=True, help="Allow loosening a production target's safety level.")
@json_option
@pass_state
@click.pass_context
def ask(
    ctx: click.Context,
    state: State,
    request: tuple[str, ...],
    target: str | None,
    dry_run: bool,
    yes: bool,
    approve_up_to: str | None,
    non_interactive: bool,
    safety_level: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Ask in plain words, e.g. aishell ask "purge audit_log rows older than 90 days".

    The model (planner.llm in config, through Ollama) picks the agent and drafts a
    plan; the validator checks it, the preview is shown, and it runs with approvals
    as usual. A request whose drafts all fail validation is refused with the reasons.
    """
    run_and_render(
        ctx,
        as_json,
        dict(yes=yes, approve_up_to=approve_up_to, non_interactive=non_interactive),
        lambda approver, observer, review: commands.ask(
            state.config,
            " ".join(request),
            target,
            dry_run=dry_run,
            approver=approver,
            observer=observer,
            safety_level=safety_level,
            force=force,
            review=review,
        ),
    )


@cli.group(cls=AishellGroup)
def planner() -> None:
    """The model planner: is it reachable, and its cache of drafted plans."""


@planner.command("check")
@json_option
@pass_state
def planner_check(state: State, as_json: bool) -> None:
    """Check that the Ollama server answers and has the configured model."""
    found = commands.check_planner(state.config)
    if as_json:
        emit_json(found)
        return
    click.echo(
        f"Ollama at {found['host']} ({found['host_from']}) has the model {found['model']}; "
        f"the default planner is {found['default_planner']}."
    )


@planner.command("forget")
@click.option("--target", help="Only this target's drafts (default: every target's).")
@json_option
@pass_state
def planner_forget(state: State, target: str | None, as_json: bool) -> None:
    """Drop cached drafts, so the next request asks the model again."""
    dropped = commands.forget_drafts(state.config, target)
    if as_json:
        emit_json({"forgotten": dropped})
    else:
        click.echo(f"Forgot {dropped} cached plan(s).")


# --- runs ---------------------------------------------------------------------------------


@cli.group(cls=AishellGroup)
def runs() -> None:
    """Look at past and current runs in the state store."""


@runs.command("list")
@click.option(
    "--status",
    type=click.Choice(RUN_STATUSES),
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
@click.option("--sql", "with_sql", is_flag=True, help="Also list every statement the run sent.")
@json_option
@pass_state
def runs_show(state: State, run_id: str, with_sql: bool, as_json: bool) -> None:
    """Show one run: its steps, their params, outputs and errors, and approvals."""
    data = commands.show_run(state.config, run_id)
    if with_sql:
        data["statements"] = commands.run_statements(state.config, data["run_id"])
    if as_json:
        emit_json(data)
    else:
        console = render.console(False)
        render.run_detail(console, data)
        if with_sql:
            render.statements(console, data["statements"])


# --- targets ---------------------------------------------------------------------------


@cli.group(cls=AishellGroup)
def targets() -> None:
    """The databases aishell is configured to maintain."""


@targets.command("list")
@json_option
@pass_state
def targets_list(state: State, as_json: bool) -> None:
    """List the configured targets (passwords are never shown)."""
    rows = commands.list_targets(state.config)
    if as_json:
        emit_json({"targets": rows})
    else:
        render.targets_table(render.console(False), rows)


@targets.command("check")
@click.argument("name", required=False)
@json_option
@pass_state
def targets_check(state: State, name: str | None, as_json: bool) -> None:
    """Connect to a target: server version, privileges that matter, extensions, warnings."""
    info = commands.check_target(state.config, name)
    if as_json:
        emit_json(info)
    else:
        render.target_check(render.console(False), info)


# --- schedules ----------------------------------------------------------------------------

# The job words' parameters that are not part of the job itself.
_RUN_OPTIONS = {
    "target",
    "planner",
    "dry_run",
    "yes",
    "approve_up_to",
    "non_interactive",
    "safety_level",
    "force",
    "as_json",
}


def job_from_words(words: tuple[str, ...]) -> tuple[str, dict[str, Any], str | None, dict]:
    """The words `aishell run` takes (after `--`), parsed as it parses them:
    (agent, job, target, options)."""
    if not words:
        raise UsageError("Give the job after --, as `aishell run` takes it: -- maintenance ...")
    name, rest = words[0], list(words[1:])
    command = run.commands.get(name)
    if command is None:
        raise UsageError(f"Unknown job {name!r}; jobs are: {', '.join(sorted(run.commands))}")
    try:
        with command.make_context(f"aishell run {name}", rest) as ctx:
            params = dict(ctx.params)
    except click.exceptions.Exit:
        raise UsageError("The job words asked for help; give the job itself") from None
    except click.ClickException as exc:
        raise UsageError(f"Job words: {exc.format_message()}") from None
    if params.get("yes") or params.get("approve_up_to"):
        raise UsageError(
            "A schedule never approves in advance: steps that need approval leave the run "
            "waiting_approval for a person (drop --yes / --approve-up-to)"
        )
    if name == "maintenance":
        agent, job = (
            "maintenance",
            maintenance_job(params["kind"], params["tables"], params["no_rebuild_indexes"]),
        )
    elif name == "backup":
        agent, job = (
            "backup",
            backup_job(
                params["kind"],
                params["verify"],
                params["quick"],
                params["cleanup"],
                params["retention_days"],
                params["keep_last"],
            ),
        )
    else:
        flags = {k: v for k, v in params.items() if k not in _RUN_OPTIONS}
        agent, job = "log_cleanup", log_cleanup_job(**flags)
    options = {
        k: params[k] for k in ("dry_run", "safety_level", "force", "planner") if params.get(k)
    }
    return agent, job, params.get("target"), options


@cli.group(cls=AishellGroup)
def schedule() -> None:
    """Run jobs on a cron schedule, unattended (served by `aishell schedule serve`)."""


@schedule.command("add")
@click.argument("name")
@click.option(
    "--cron",
    required=True,
    help="When: 5 fields as crontab (minute hour day month weekday), or 6 with seconds first.",
)
@click.option("--timezone", default="UTC", show_default=True, help="The cron's time zone.")
@click.option(
    "--max-run-time",
    type=Duration(),
    help="Stop each run after this long (90s, 30m, 2h), resumably; the next trigger goes "
    "on (default: max_run_seconds in config).",
)
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

    The words after -- are those `aishell run` takes; they are checked now.
    """
    agent, job, target, options = job_from_words(words)
    if max_run_time is not None:
        options["max_run_seconds"] = max_run_time
    added = commands.add_schedule(
        state.config, name, cron, timezone, list(words), agent, job, target, options
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
    if as_json:
        emit_json({"schedules": found})
    else:
        render.schedules_table(render.console(False), found)


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
    result = commands.run_schedule(
        state.config, name, "run-now", log=lambda line: render.log_line(console, line)
    )
    assert result is not None  # run-now always starts or resumes a run
    finish_run(ctx, console, result, as_json)


@schedule.command("serve")
@pass_state
def schedule_serve(state: State) -> None:
    """Serve the schedules in the foreground (for systemd or a container).

    One line per event on stdout. SIGTERM or SIGINT: running steps end resumably,
    then it exits. A second serve on the same state store refuses to start.
    """

    def log(line: str) -> None:
        click.echo(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} {printable(line)}")

    commands.serve_schedules(state.config, log)


@cli.command("metrics")
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write them to this file, atomically (node_exporter's textfile collector).",
)
@pass_state
def metrics_command(state: State, textfile: Path | None) -> None:
    """Prometheus metrics: the last run per target and agent, backup age, schedules."""
    text = commands.metrics(state.config, textfile)
    if textfile is None:
        click.echo(text, nl=False)


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


__all__ = ["cli", "main"]
