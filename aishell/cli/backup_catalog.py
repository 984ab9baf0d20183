"""`aishell backups` (the backup catalog) and `aishell restore` (a verified backup
into a target)."""

from __future__ import annotations

from typing import Any

import click

from aishell import commands, render
from aishell.cli.completion import complete_target
from aishell.cli.context import AishellGroup, State, pass_state
from aishell.cli.options import (
    WholeNumber,
    approval_options,
    json_option,
    lock_wait_option,
    quiet_option,
)
from aishell.cli.output import answer, run_and_render


@click.command("restore")
@click.argument("backup_id", type=WholeNumber(min=1))
@click.option("--to", "to", required=True, help="Target to restore into.")
@click.option("--replace", is_flag=True, help="Replace what the target holds.")
@click.option(
    "--create",
    is_flag=True,
    help="Make the target's database first if it does not exist (empty; kept if the "
    "restore is then declined).",
)
@lock_wait_option
@approval_options
@quiet_option
@json_option
@pass_state
@click.pass_context
def restore_command(
    ctx: click.Context,
    state: State,
    backup_id: int,
    to: str,
    replace: bool,
    create: bool,
    lock_wait: float | None,
    as_json: bool,
    approval: dict[str, Any],
) -> None:
    """Restore a verified backup into a target (critical: a person approves it)."""
    run_and_render(
        ctx,
        as_json,
        approval,
        commands.restore,
        state.config,
        backup_id,
        to,
        replace=replace,
        lock_wait=lock_wait,
        create=create,
    )


@click.group(cls=AishellGroup)
def backups() -> None:
    """The backup catalog in the state store."""


@backups.command("list")
@click.option("--target", shell_complete=complete_target, help="Only this target's backups.")
@json_option
@pass_state
def backups_list(state: State, target: str | None, as_json: bool) -> None:
    """List backups, newest first, and whether each was proven restorable."""
    catalog = commands.backup_catalog(state.config, target)
    rows, freshness = catalog["backups"], catalog["newest_restorable"]
    answer(as_json, catalog, lambda out: render.backups_table(out, rows, freshness))


@backups.command("show")
@click.argument("backup_id", type=WholeNumber(min=1))
@json_option
@pass_state
def backups_show(state: State, backup_id: int, as_json: bool) -> None:
    """Show one backup: its manifest and the result of its validation."""
    data = commands.show_backup(state.config, backup_id)
    answer(as_json, data, lambda out: render.backup_detail(out, data))
