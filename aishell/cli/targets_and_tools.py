"""`aishell targets` (the databases aishell maintains) and `aishell tools` (the catalog
of what the agents may run on them)."""

from __future__ import annotations

import click

from aishell import commands, render
from aishell.cli.context import AishellGroup, State, pass_state
from aishell.cli.options import json_option, targets_selector
from aishell.cli.output import answer
from aishell.errors import EXIT_FAILED, UsageError
from aishell.risk import RiskLevel


@click.group(cls=AishellGroup)
def targets() -> None:
    """The databases aishell is configured to maintain."""


@targets.command("list")
@targets_selector()
@json_option
@pass_state
def targets_list(state: State, targets: str | None, as_json: bool) -> None:
    """List the configured targets, or those --targets selects, with their tags
    (passwords are never shown)."""
    rows = commands.list_targets(state.view, targets=targets)
    answer(as_json, {"targets": rows}, lambda out: render.targets_table(out, rows))


@targets.command("add")
@click.argument("name")
@click.argument("location", required=False)
@click.option("--service", help="A pg_service.conf service instead of a URL or DSN.")
@click.option(
    "--environment",
    type=click.Choice(["development", "test", "staging", "production"]),
    default="development",
    show_default=True,
    help="production: risky steps need a person's yes, as the policy says.",
)
@click.option("--password-env", help="The environment variable that holds the password.")
@click.option("--description", default="", help="A line saying what the database is.")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    help="A tag that selects it with others (--targets tag:TAG); repeat for more.",
)
@click.option("--no-check", is_flag=True, help="Write it without logging in first.")
@json_option
@pass_state
def targets_add(
    state: State,
    name: str,
    location: str | None,
    service: str | None,
    environment: str,
    password_env: str | None,
    description: str,
    tags: tuple[str, ...],
    no_check: bool,
    as_json: bool,
) -> None:
    """Add a target to the config file, once aishell has logged in to it.

    LOCATION is a URL (postgresql://app@db1/shop, mysql://app@db2/orders,
    sqlite:///path.db) or a libpq DSN ('host=db1 dbname=shop user=app sslmode=require');
    or give --service NAME. The password is never written: it comes from
    --password-env, ~/.pgpass, the service file or ~/.my.cnf, as for the clients.
    """
    from aishell.commands.targetfile import NewTarget

    new = NewTarget(name, location, service, environment, password_env, description, tags)
    added = commands.add_target(state.config, new, check=not no_check)
    answer(as_json, added, lambda out: render.target_added(out, added))


@targets.command("check")
@click.argument("name", required=False)
@targets_selector()
@json_option
@pass_state
@click.pass_context
def targets_check(
    ctx: click.Context, state: State, name: str | None, targets: str | None, as_json: bool
) -> None:
    """Connect to a target (NAME, the default one, or each --targets selects): server
    version, privileges that matter, extensions, warnings. With --targets, exits 1 when
    a target could not be checked."""
    if targets is None:
        info = commands.check_target(state.config, name)
        answer(as_json, info, lambda out: render.target_check(out, info))
        return
    if name is not None:
        raise UsageError("Give a target's NAME or --targets, not both")
    checked = commands.check_targets(state.config, targets)
    answer(as_json, {"targets": checked}, lambda out: render.targets_checked(out, checked))
    if any("error" in info for info in checked):
        ctx.exit(EXIT_FAILED)


@click.group(cls=AishellGroup)
def tools() -> None:
    """Browse the tool catalog: what the agents may run, and how risky it is."""


@tools.command("list")
@click.option(
    "--category", type=click.Choice(["analysis", "maintenance", "backup", "cleanup", "ddl"])
)
@click.option("--risk", type=click.Choice([r.value for r in RiskLevel]))
@json_option
@pass_state
def tools_list(state: State, category: str | None, risk: str | None, as_json: bool) -> None:
    """List tools, optionally of one category or risk level."""
    found = commands.list_tools(state.view, category=category, risk=risk)
    answer(as_json, {"tools": found}, lambda out: render.tools_table(out, found))


@tools.command("show")
@click.argument("name")
@click.option(
    "--dialect",
    type=click.Choice(["sqlite", "postgresql", "mysql"]),
    help="Only this engine's SQL, risks and mitigations.",
)
@json_option
@pass_state
def tools_show(state: State, name: str, dialect: str | None, as_json: bool) -> None:
    """Show a tool's metadata, its risks on each engine and the SQL it runs for its
    example."""
    data = commands.show_tool(state.config, name, dialect)
    answer(as_json, data, lambda out: render.tool_detail(out, data))
