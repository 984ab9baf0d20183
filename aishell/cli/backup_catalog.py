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
from aishell.cli.output import answer, can_ask, run_and_render
from aishell.errors import EXIT_FAILED, EXIT_OK, UsageError


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


@backups.command("adopt")
@click.argument("backup_ids", nargs=-1, type=WholeNumber(min=1))
@click.option(
    "--all-unsigned", is_flag=True, help="Every kept backup whose row this home did not sign."
)
@click.option("--yes", "-y", is_flag=True, help="Sign without asking (for scripts).")
@json_option
@pass_state
@click.pass_context
def backups_adopt(
    ctx: click.Context,
    state: State,
    backup_ids: tuple[int, ...],
    all_unsigned: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Sign backups' rows recorded unsigned (by an older aishell) once each file matches.

    Each backup's file is read again and checked against the sha256, size and manifest
    its row records; a row whose file is missing or differs is refused, one line each.
    What matches is shown and, once you confirm (--yes for scripts), signed with this
    home's key: restore, validation and retention then trust it again. An incremental
    backup is signed only when each backup it builds on is signed and unchanged, or is
    adopted in the same command."""
    checked = commands.check_adoption(state.config, backup_ids, all_unsigned)
    ready = checked["ready"]
    if ready and not yes:
        # What would be signed, on stderr beside the question (or the refusal to ask).
        render.adoption_preview(render.prompt_console(), checked)
        if not can_ask():
            raise UsageError(
                f"{len(ready)} backup row(s) match their files, and nobody is at a terminal "
                "to confirm signing them; pass --yes to sign them"
            )
        question = f"Sign these {len(ready)} backup row(s) with this home's key?"
        if not click.confirm(question, default=False, err=True):
            raise UsageError("Nothing signed: the adoption was declined")
    done = commands.adopt_backups(state.config, ready)
    result = {
        "adopted": done["adopted"],
        "already_signed": checked["signed"],
        "refused": checked["refused"] + done["refused"],
        "checked": [{k: v for k, v in row.items() if k != "stored"} for row in ready],
    }
    answer(as_json, result, lambda out: render.adoption_result(out, result))
    ctx.exit(EXIT_FAILED if result["refused"] else EXIT_OK)
