"""`aishell alerts`: the monitoring rules of aishell.yaml, checked once (for cron)."""

from __future__ import annotations

from typing import Any

import click

from aishell import commands
from aishell.cli.context import AishellGroup, State, pass_state
from aishell.cli.options import json_option, log_format_option
from aishell.cli.output import emit_json
from aishell.errors import EXIT_FAILED, EXIT_OK
from aishell.terminal import printable


@click.group(cls=AishellGroup)
def alerts() -> None:
    """Monitoring alerts: the `monitoring:` rules over the state store."""


@alerts.command("check")
@json_option
@log_format_option
@pass_state
@click.pass_context
def alerts_check(ctx: click.Context, state: State, as_json: bool, log_format: str | None) -> None:
    """Evaluate the alert rules once; send what fired or resolved.

    As `schedule serve` does every monitoring.interval_seconds: each new alert and each
    resolved one goes to the notifiers once.

    Exit 0: no alert is firing; 1: at least one is firing (each listed); 2: no rules
    configured. For cron: */5 * * * * aishell alerts check
    """
    from aishell.cli.logs import check_log  # late: logging is for this command alone

    with check_log(log_format):
        found = commands.check_alerts(state.config)
    if as_json:
        emit_json(found)
    else:
        _show(found)
    ctx.exit(EXIT_FAILED if found["firing"] else EXIT_OK)


def _show(found: dict[str, Any]) -> None:
    if not found["firing"]:
        click.echo("No alert is firing.")
    for alert in found["firing"]:
        click.echo(f"FIRING {alert['rule']} ({alert['action']}): {printable(alert['summary'])}")
    for failure in found["failures"]:
        click.echo(f"Not delivered: {printable(failure)}", err=True)
