"""`tools show` and `agents show` at a terminal give the whole description, wrapped to
the terminal's width: a panel's title is cut off at it, so the description is a row."""

from __future__ import annotations

import os
import re
import select
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from tests.cli.test_cli import in_terminal

# Box drawing: what is left of a panel is its rows' words.
FRAME = re.compile(r"[\u2500-\u257f]+")


def _read_to_end(leader: int) -> str:
    """All the command printed, until it ended and closed the terminal."""
    seen = b""
    while select.select([leader], [], [], 60)[0]:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: nothing has the terminal open any more
            break
        if not chunk:
            break
        seen += chunk
    return seen.decode(errors="replace")


@pytest.mark.parametrize(
    ("command", "name"), [("tools", "optimize_table"), ("agents", "maintenance")]
)
def test_the_whole_description_is_shown_at_a_narrow_terminal(
    home: Path, command: str, name: str
) -> None:
    config = load_config(home=home)
    show = commands.show_tool if command == "tools" else commands.show_agent
    described = " ".join(show(config, name)["description"].split())
    assert len(described) > 80  # more than a line of the terminal
    with in_terminal(command, "show", name, env={"COLUMNS": "80"}) as (proc, leader):
        shown = _read_to_end(leader)
        assert proc.wait(timeout=60) == 0, shown
    words = " ".join(FRAME.sub(" ", shown).split())
    assert described in words, shown
    assert max(len(line) for line in shown.splitlines()) <= 80, shown


@pytest.mark.parametrize(
    ("command", "name"), [("tools", "optimize_table"), ("agents", "maintenance")]
)
def test_in_a_pipe_the_facts_are_lines_as_long_as_their_text(
    home: Path, command: str, name: str
) -> None:
    """Not a panel padding every row to its longest (a description of over a thousand
    characters): the name, then each row, the description whole on its own line."""
    config = load_config(home=home)
    show = commands.show_tool if command == "tools" else commands.show_agent
    described = show(config, name)["description"]
    result = CliRunner().invoke(cli, [command, "show", name])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == name
    # The facts: up to the SQL (tools) or the table of the tools it may plan (agents).
    ends = ("SQL for example params", "Tools it may plan")
    facts = lines[: next(n for n, line in enumerate(lines) if line.strip().startswith(ends))]
    assert len(facts) > 8 and not FRAME.search("".join(facts)), lines
    assert [line for line in facts if line != line.rstrip()] == []
    row = next(line for line in facts if line.startswith("description "))
    assert row.split(None, 1)[1] == " ".join(described.split())
