"""`aishell agents`: the agents this aishell runs, aishell's own and installed packages'."""

from __future__ import annotations

from typing import Any

import click

from aishell import commands, render
from aishell.cli.context import AishellGroup, State, pass_state
from aishell.cli.options import json_option
from aishell.cli.output import answer, emit_json
from aishell.terminal import printable


@click.group(cls=AishellGroup)
def agents() -> None:
    """The agents aishell runs: its own and installed packages'.

    A package adds agents through the entry point group `aishell.agents`; any agent
    runs as `aishell run NAME` and plans as `aishell plan NAME`."""


@agents.command("list")
@json_option
@pass_state
def agents_list(state: State, as_json: bool) -> None:
    """Every agent, its package, job keys and tools; and plugins that failed.

    aishell's own agents come from the package aishell. A plugin that failed to load
    is listed with why, on stderr (with --json, under "failed")."""
    listed = commands.list_agents(state.config)
    if as_json:
        emit_json(listed)
        return
    for agent in listed["agents"]:
        _show(agent)
    for failed in listed["failed"]:
        click.echo(printable(_failure(failed)), err=True)


def _failure(failed: dict[str, Any]) -> str:
    """A plugin skipped, or one tool file of its folder refused while the others loaded."""
    named = f"{failed['name']} ({failed['package']})"
    if failed["file"] is not None:
        return f"refused: a tool file of {named}, its other tools loaded: {failed['error']}"
    return f"failed: {named}: {failed['error']}"


@agents.command("show")
@click.argument("name")
@json_option
@pass_state
def agents_show(state: State, name: str, as_json: bool) -> None:
    """One agent whole: its job keys, what this home's config sets for it, the tools it
    may plan with their risk, and the schedules that run it."""
    data = commands.show_agent(state.config, name)
    answer(as_json, data, lambda out: render.agent_detail(out, data))


def _show(agent: dict[str, Any]) -> None:
    # A plugin's words are anyone's: printed as text, never as terminal controls.
    keys = ", ".join(k["flag"] or k["key"] for k in agent["job_keys"]) or "(none)"
    click.echo(printable(f"{agent['name']} ({agent['package']}): {agent['description']}"))
    click.echo(printable(f"  job keys: {keys}"))
    missing = agent.get("missing_tools", [])
    tools = [f"{t} (not in the catalog)" if t in missing else t for t in agent["tools"]]
    click.echo(printable(f"  tools: {', '.join(tools) or '(none)'}"))
