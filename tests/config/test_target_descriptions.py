"""A target's description is one line of plain text: `targets list` and the shell's
completion show it to a person, and a line break, an escape sequence or a bidi override
in it redrew or reordered what was shown around it. `targets add --description` wrote
any of them into the config; now it is refused as the option, and a config holding one
when the file is read, each in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from tests.helpers import read_yaml, write_yaml

CONFIG = Path("config") / "aishell.yaml"
SAID = "one line of text without control characters (got '{shown}')"


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("two\nlines", "two\\x0alines"),
        ("red\x1b[31m", "red\\x1b[31m"),
        ("ab\u202ecd", "ab\\u202ecd"),
    ],
)
def test_targets_add_refuses_a_description_with_control_characters(
    home: Path, demo_db: Path, typed: str, shown: str
) -> None:
    before = (home / CONFIG).read_bytes()
    done = CliRunner().invoke(
        cli, ["targets", "add", "shop", f"sqlite:///{demo_db}", "--description", typed]
    )
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert line.startswith("Error: --description: " + SAID.format(shown=shown)), line
    assert (home / CONFIG).read_bytes() == before


def test_a_config_holding_such_a_description_is_refused_when_read(
    home: Path, demo_db: Path
) -> None:
    path = home / CONFIG
    data = read_yaml(path)
    data["targets"]["demo"]["description"] = "shop\x1b[2J"
    write_yaml(path, data)
    done = CliRunner().invoke(cli, ["targets", "list"])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert f"{path}: targets.demo.description: " + SAID.format(shown="shop\\x1b[2J") in line, line


def test_a_plain_description_of_any_script_is_added(home: Path, demo_db: Path) -> None:
    said = "Boutique — base de données ünïcode, 商店"
    done = CliRunner().invoke(
        cli, ["targets", "add", "shop", f"sqlite:///{demo_db}", "--description", said]
    )
    assert done.exit_code == 0, done.output
    listed = json.loads(CliRunner().invoke(cli, ["targets", "list", "--json"]).output)
    assert [t["description"] for t in listed["targets"] if t["name"] == "shop"] == [said]
