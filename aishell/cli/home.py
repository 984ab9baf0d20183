"""Commands about this aishell home itself: making it, the demo database, the metrics it
exports, and the doctor (is it ready; what killed runs left behind)."""

from __future__ import annotations

from pathlib import Path

import click

from aishell import commands, render
from aishell.cli.completion import complete_target
from aishell.cli.context import State, pass_state
from aishell.cli.options import WholeNumber, json_option, quiet_option, targets_selector
from aishell.cli.output import emit_json
from aishell.errors import EXIT_FAILED, ConfigError
from aishell.terminal import printable

# A demo's log table is for trying a purge: ten million rows is some gigabytes already.
MOST_DEMO_ROWS = 10_000_000
# Users and orders are there for maintenance to find fragmented indexes: a million of
# each is already a large shop.
MOST_DEMO_SHOP_ROWS = 1_000_000


@click.command()
@click.option(
    "--target",
    shell_complete=complete_target,
    help="SQLite target to create (default: the default target).",
)
@click.option(
    "--log-rows",
    type=WholeNumber(min=1, max=MOST_DEMO_ROWS),
    default=200_000,
    show_default=True,
    help="Rows of app_logs to generate.",
)
@click.option(
    "--users",
    type=WholeNumber(min=1, max=MOST_DEMO_SHOP_ROWS),
    default=5_000,
    show_default=True,
    help="Rows of users to generate.",
)
@click.option(
    "--orders",
    type=WholeNumber(min=1, max=MOST_DEMO_SHOP_ROWS),
    default=60_000,
    show_default=True,
    help="Rows of orders to generate (the cancelled ones are then purged).",
)
@json_option
@quiet_option
@pass_state
def demo(
    state: State, target: str | None, log_rows: int, users: int, orders: int, as_json: bool
) -> None:
    """Create or refresh the demo SQLite database with realistic, fragmented data."""
    console = render.console(as_json)
    quiet = bool(click.get_current_context().meta.get("aishell.quiet"))
    with render.demo_progress(console, log_rows, quiet) as tell:
        result = commands.create_demo_database(
            state.config, target, log_rows, progress=tell, users=users, orders=orders
        )
    if as_json:
        emit_json(result)
    else:
        render.demo_result(console, result)


@click.command("metrics")
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


@click.command()
@click.option("--force", is_flag=True, help="Replace an existing config (kept as .bak).")
@click.option(
    "--systemd",
    is_flag=True,
    help="Make nothing: print the systemd units and the cron file shipped with aishell "
    "(with their install steps), and where they are.",
)
@json_option
@pass_state
def init(state: State, force: bool, systemd: bool, as_json: bool) -> None:
    """Make the home: a commented aishell.yaml, the agents' defaults, the state store.

    The home is --home, else AISHELL_HOME, else your user folders (on Linux
    ~/.config/aishell for the config, ~/.local/state/aishell for state.db,
    ~/.local/share/aishell for the demo database and backups). An existing config is
    left alone unless --force."""
    if systemd:
        shipped = commands.scheduler_units()
        if as_json:
            emit_json(shipped)
        else:
            render.scheduler_units(shipped)
        return
    result = commands.init_home(state.home, force=force)
    if as_json:
        emit_json(result)
    else:
        render.init_result(result)


@click.command()
@click.option(
    "--clean",
    is_flag=True,
    help="Only remove what killed runs left: kill orphaned dump processes, delete scratch "
    "files, drop scratch databases.",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    shell_complete=complete_target,
    help="Check only this target (repeat for more; default: every target).",
)
@targets_selector("selector")
@click.option(
    "--backup-state",
    is_flag=True,
    help="Only write a consistent copy of the state store (state.db.backup-<time>, mode "
    "0600) beside it, and print its path.",
)
@json_option
@pass_state
@click.pass_context
def doctor(
    ctx: click.Context,
    state: State,
    clean: bool,
    targets: tuple[str, ...],
    selector: str | None,
    backup_state: bool,
    as_json: bool,
) -> None:
    """Is this home ready: its files, state store and versions, and per target whether it
    answers, the privileges each agent needs, the client programs backups run (pg_dump,
    pg_restore, mariadb-dump, mariadb) and the free space where its backups go. Each
    problem is printed with its fix. Also lists what killed runs left behind: scratch
    files, scratch databases, child processes of this host's dead runs.

    Exits 1 when it finds a problem, or when --clean could not remove something (each
    says why); a live run's scratch is never touched."""
    if backup_state:
        copied = commands.backup_state(state.config)
        if as_json:
            emit_json(copied)
        else:
            click.echo(printable(copied["backup"]))
        return
    try:
        config = state.config
    except ConfigError as exc:
        if clean:
            raise
        result = commands.doctor_without_config(state.home, state.config_path, exc)
    else:
        result = commands.doctor(config, clean=clean, targets=targets, selector=selector)
    if as_json:
        emit_json(result)
    elif clean:
        for entry in result.get("removed", []):
            click.echo(printable(f"{entry['done']}: {entry['kind']} {entry['name']}"))
        for entry in result.get("kept", []):
            click.echo(printable(f"not removed: {entry['kind']} {entry['name']}: {entry['why']}"))
        if not result.get("removed") and not result.get("kept"):
            click.echo("Nothing left behind by killed runs.")
    else:
        render.doctor_report(result)
    if result.get("kept") or result.get("problems"):
        ctx.exit(EXIT_FAILED)
