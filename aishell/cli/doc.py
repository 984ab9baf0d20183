"""Render the CLI reference (docs/cli.md) from the commands' own help.

    python -m aishell.cli.doc > docs/cli.md

A test fails when docs/cli.md and this output differ.
"""

from __future__ import annotations

import click

from aishell.cli import cli
from aishell.config.plugins import built_ins_only


def render() -> str:
    """The reference of aishell's own commands and agents: no installed package's agent
    is listed, so that it reads the same wherever it is made."""
    with built_ins_only():
        return _render()


def _render() -> str:
    parts = [
        "# Command reference\n",
        "Generated from `aishell --help` by `python -m aishell.cli.doc > docs/cli.md`.\n",
    ]

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        # The command's own context settings (-h beside --help), as a run makes them.
        settings = {"terminal_width": 88, **command.context_settings}
        ctx = click.Context(command, info_name=path[-1], parent=parent, **settings)
        parts.append(f"\n## {' '.join(path)}\n\n```\n{command.get_help(ctx)}\n```\n")
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name], ctx)

    walk(cli, ["aishell"], None)
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
