"""Every `aishell ...` command line the docs show names commands and options that exist.

The README, docs/*.md (but the generated docs/cli.md, checked against `--help` on its
own) and the shipped units in packaging/ are read as a newcomer reads them: each command
line of a fenced block (in a ```console block only the `$ ` lines, the rest being
output) and each inline code span that begins `aishell `. Its words are walked down the
command tree as click would parse them: a word that is no command of its group, or an
option its command does not take, fails the test with the file and line. The job words
after a `schedule add`'s `--` are checked as the `aishell run` words they are.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from aishell.cli import cli
from aishell.config.plugins import built_ins_only
from aishell.errors import AishellError

REPO = Path(__file__).resolve().parents[2]
DOCS = [
    REPO / "README.md",
    *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "cli.md"),
    *sorted((REPO / "packaging").iterdir()),
]
# The agents the docs show as other packages' (architecture.md's recipe, the example
# package): not installed here, so their command lines are checked up to the agent.
PACKAGE_AGENTS = {
    "tidy": REPO / "docs" / "architecture.md",
    "partition_archive": REPO / "examples" / "partition_archive" / "src" / "aishell_partitions",
}
# Where a command line starts inside a line of a block: at its start, after a `$ `
# prompt, a path to the program, or a shell operator.
START = re.compile(r"(?:^|^\$ |/bin/|&& |; |\| |\$\()aishell(?=\s+-*[a-z])")
INLINE = re.compile(r"`(aishell\s[^`]+)`")
FENCE = re.compile(r"^```", re.M)
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "&"}
# Spans that begin with the word but are no command line: the application name
# aishell's client programs show in the server's sessions.
NOT_COMMANDS = {"aishell pg_dump ..."}


def command_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, command line) for each aishell command line the file shows."""
    text = path.read_text()
    fenced = path.suffix == ".md"
    in_block, language = not fenced, ""
    for number, line in enumerate(text.splitlines(), 1):
        if fenced and line.startswith("```"):
            in_block, language = not in_block, line[3:].strip()
            continue
        if not in_block:
            continue
        stripped = line.strip()
        if language == "console" and not stripped.startswith("$ "):
            continue
        for found in START.finditer(stripped):
            yield number, stripped[found.end() - len("aishell") :]
    if fenced:
        # Fenced blocks blanked out, line numbers kept; a span may wrap across lines.
        prose = re.sub(
            r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M
        )
        for found in INLINE.finditer(prose):
            if found.group(1) in NOT_COMMANDS:
                continue
            yield prose.count("\n", 0, found.start()) + 1, found.group(1).replace("\n", " ")


def words_of(line: str) -> list[str]:
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unclosed quote in prose
        words = line.split()
    for at, word in enumerate(words):
        if word in SHELL_OPERATORS or word.startswith((">", "2>")):
            return words[:at]
    return words


def is_placeholder(word: str) -> bool:
    """A word that stands for one the reader gives (NAME, RUN_ID, <run-id>, ...)."""
    return word == "..." or word.startswith(("<", "$", "{")) or word.upper() == word


def problems(words: list[str]) -> list[str]:
    """What in the words click would refuse: a command no group has, an unknown option."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="aishell")
    path, found, at = ["aishell"], [], 1
    while at < len(words):
        word = words[at]
        if word == "--":
            if path[1:] == ["schedule", "add"]:
                return found + problems(["aishell", "run", *words[at + 1 :]])
            break
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            options = {o: p for p in command.params for o in (*p.opts, *p.secondary_opts)}
            option = options.get(name)
            if option is None and name not in ("-h", "--help"):
                found.append(f"`{' '.join(path)}` takes no option {name}")
            takes_value = isinstance(option, click.Option) and not (option.is_flag or option.count)
            at += 2 if takes_value and "=" not in word else 1
            continue
        if not isinstance(command, click.Group):
            at += 1  # an argument of the command
            continue
        if is_placeholder(word):
            break  # `aishell plan ... --out plan.json`: any command of the group
        if path[-1] in ("run", "plan") and word in PACKAGE_AGENTS:
            break
        try:
            sub = command.get_command(ctx, word)
        except AishellError as exc:  # an agent that `run` or `plan` cannot load
            found.append(f"`{' '.join(path)} {word}`: {exc}")
            break
        if sub is None:
            found.append(f"`{' '.join(path)}` has no command {word!r}")
            break
        ctx = click.Context(sub, info_name=word, parent=ctx)
        command, path, at = sub, [*path, word], at + 1
    return found


def test_every_command_line_in_the_docs_names_commands_and_options_that_exist():
    checked, wrong = 0, []
    with built_ins_only():
        for path in DOCS:
            for number, line in command_lines(path):
                checked += 1
                wrong += [
                    f"{path.relative_to(REPO)}:{number}: {line}: {p}"
                    for p in problems(words_of(line))
                ]
    assert checked > 300, checked  # the docs' command lines were found
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(PACKAGE_AGENTS))
def test_the_package_agents_the_docs_show_are_declared_where_they_say(name: str):
    where = PACKAGE_AGENTS[name]
    sources = [where] if where.is_file() else sorted(where.rglob("*.py"))
    assert any(f'name="{name}"' in source.read_text() for source in sources), where


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("aishell runs lsit", "`aishell runs` has no command 'lsit'"),
        ("aishell run maintenance --typo full", "takes no option --typo"),
        ("aishell run maintanance", "Unknown agent 'maintanance'"),
        ("aishell schedule add n --cron '0 2 * * *' -- maintenance --bogus", "--bogus"),
        ("aishell --home /h runs show RUN_ID --json | jq .status", ""),
    ],
)
def test_a_wrong_command_line_is_found(line: str, problem: str):
    with built_ins_only():
        found = problems(words_of(line))
    assert (problem in "\n".join(found)) if problem else not found, found
