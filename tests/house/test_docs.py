"""The docs match the code: the CLI reference, the README's commands and CI."""

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from aishell.cli import cli
from aishell.cli.doc import render

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_cli_reference_is_current():
    assert (REPO / "docs" / "cli.md").read_text() == render(), (
        "docs/cli.md is stale: python -m aishell.cli.doc > docs/cli.md"
    )


def quick_start_commands():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_quick_start_has_exactly_the_two_commands():
    first, second = quick_start_commands()
    assert first.startswith("python3 -m venv .venv")
    assert first.endswith("aishell run maintenance --type full")
    assert second.endswith(".venv/bin/pytest")


def test_ci_runs_the_readme_test_command():
    _, second = quick_start_commands()
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert second in lines
    assert "export AISHELL_REQUIRE_SERVICES=1" in lines


def test_usage_examples_run(demo_db, home, monkeypatch):
    monkeypatch.chdir(home)
    section = README.split("## Usage", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.+?)\n```", section, re.S).group(1)
    runner = CliRunner()
    for line in block.splitlines():
        args = shlex.split(line.split("#", 1)[0])
        assert args[0] == "aishell"
        if args[1] == "demo":  # a small one: the command is what is tried, not its size
            for option, rows in (("--log-rows", "1000"), ("--users", "100"), ("--orders", "500")):
                if option not in args:
                    args += [option, rows]
        result = runner.invoke(cli, args[1:], catch_exceptions=False)
        assert result.exit_code == 0, f"{line}: {result.output}"


def test_every_tool_is_documented_with_risk_and_example():
    from aishell.config.resources import bundled_catalog_dir
    from aishell.registry import load_registry

    for tool in load_registry([bundled_catalog_dir()]).tools.values():
        assert tool.description.endswith(".") and tool.examples and tool.risk_level


def test_purge_examples_parse_and_the_first_runs(demo_db, home, monkeypatch):
    monkeypatch.chdir(home)
    section = README.split("### Purging old rows", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.+?)\n```", section, re.S).group(1).replace("\\\n", " ")
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    runner = CliRunner()
    first = shlex.split(lines[0])
    result = runner.invoke(cli, first[1:], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "would delete" in result.output
    for line in lines[1:]:
        args = shlex.split(line)
        command = cli
        for word in args[1:]:
            if not hasattr(command, "commands") or word not in command.commands:
                break
            command = command.commands[word]
        assert command is not cli, line
        options = {o for p in command.params for o in p.opts}
        flags = {a for a in args if a.startswith("--")}
        assert flags <= options, f"{line}: unknown {flags - options}"
