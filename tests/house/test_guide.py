"""docs/guide.md tells the truth: its commands run in order, as a new user would run them,
against a new PostgreSQL database, and print what the guide shows.

The guide's fenced blocks say what runs:
- ```sql: run through psql as the superuser (the role and the database get unique names
  here, shown in the output as the guide's `aishell` and `shop`);
- ```yaml aishell.yaml: its top-level keys replace those of the home's config;
- ```console: each `$ aishell ...` line runs and is followed by its output; `$ export
  NAME=VALUE` sets the environment; `# exit N` is the expected exit code (else 0); a line
  `...` stands for any number of lines; `<run-id>` in a command is the run printed last;
- ```sh and ```text: not run.

What varies from run to run is normalized into the guide's placeholders (see RULES).
When the output changes on purpose, `AISHELL_GUIDE_RECORD=1` writes the new output into
the guide for each command that no longer matches (review the diff, trim with `...`); the
test still fails that time.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell.cli import cli
from aishell.config.home import find_home
from tests.services import PG_ADMIN, admin_engine

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")
EXIT = re.compile(r"\s+# exit (\d+)$")
GAP = "..."
_names = itertools.count(1)

# What varies between runs, and what the guide shows instead; applied in this order.
RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b\d{8}T\d{6}Z-[0-9a-f]{6}\b"), "<stamp>"),
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?(?: [A-Z]{3,5}\b)?"
        ),
        "<time>",
    ),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<hash>"),
    (re.compile(r"\bsha256 [0-9a-f]{12}\b"), "sha256 <hash>"),
    (re.compile(r"\b[0-9a-f]{12}\b"), "<run-id>"),
    (
        re.compile(
            r"(\b(?:aishell|version|Python|SQLAlchemy|psycopg|libpq|PyMySQL|SQLite|APScheduler)"
            r"|\(PostgreSQL\)|\(postgresql\):) \d+(?:\.\d+)+(?:[-+~][\w.+~-]*)?"
            r"(?: \([A-Z][^()]*\))?"
        ),
        r"\1 <version>",
    ),
    (re.compile(r"\b\d+(?:\.\d+)? (?:B|KiB|MiB|GiB|TiB)\b"), "<size>"),
    (re.compile(r"\b\d[\d,]* bytes\b"), "<n> bytes"),
    (re.compile(r"\b(\w*_bytes=)\d+"), r"\1<n>"),
    (re.compile(r"\bin \d+ batch(?:es)?\b"), "in <n> batches"),
    (re.compile(r"\b\d[\d,]*(?:\.\d+)? rows/s\b"), "<n> rows/s"),
    (re.compile(r"\b\d+(?:\.\d+)? (?:s|min|h|d) old\b"), "<age> old"),
    (re.compile(r"\b\d+(?:\.\d+)? ?(?:ms|s)\b"), "<duration>"),
]
RUN_ID = re.compile(r"\b[Rr]un ([0-9a-f]{12})\b")


@dataclass
class Command:
    """One `$ ...` line of a console block and the output lines the guide shows."""

    line: int  # index of the `$` line in the guide
    words: str
    exit_code: int
    expected: list[str]
    end: int  # index after the last output line


@dataclass
class Block:
    kind: str
    info: str
    body: list[str]
    start: int  # index of the first line after the opening fence
    commands: list[Command] = field(default_factory=list)


def parse(lines: list[str]) -> list[Block]:
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j] == "```")
        block = Block(fence.group(1), fence.group(2), lines[i + 1 : end], i + 1)
        if block.kind == "console":
            block.commands = _commands(block)
        blocks.append(block)
        i = end + 1
    return blocks


def _commands(block: Block) -> list[Command]:
    commands: list[Command] = []
    for offset, line in enumerate(block.body):
        index = block.start + offset
        if line.startswith("$ "):
            if commands:
                commands[-1].end = index
            exit_code = EXIT.search(line)
            words = EXIT.sub("", line[2:])
            code = int(exit_code.group(1)) if exit_code else 0
            commands.append(Command(index, words, code, [], index + 1))
        else:
            assert commands, f"guide.md:{index + 1}: output before any command"
            commands[-1].expected.append(line)
    if commands:
        commands[-1].end = block.start + len(block.body)
    return commands


def realign(text: str) -> str:
    """Tables padded to their (normalized) content, as rich pads them."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("┏"):
            out.append(lines[i])
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j][:1] and lines[j][0] in "┏┃┡│└":
            j += 1
        out += _realign_table(lines[i:j])
        i = j
    return "\n".join(out)


def _realign_table(lines: list[str]) -> list[str]:
    rows = [[c.strip() for c in re.split("[┃│]", line)[1:-1]] for line in lines if line[0] in "┃│"]
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    out = []
    for line in lines:
        if line[0] in "┃│":
            cells = [c.strip() for c in re.split("[┃│]", line)[1:-1]]
            out.append(
                line[0]
                + line[0].join(f" {c.ljust(w)} " for c, w in zip(cells, widths, strict=True))
                + line[0]
            )
        else:
            fill = line[1]
            joint = next((c for c in line[1:-1] if c != fill), line[-1])
            out.append(line[0] + joint.join(fill * (w + 2) for w in widths) + line[-1])
    return out


def matches(expected: list[str], actual: list[str]) -> bool:
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if line == GAP else re.escape(line) + r"\n" for line in expected
    )
    return re.fullmatch(pattern, "".join(line + "\n" for line in actual)) is not None


class Guide:
    """Runs the guide's blocks in one home against one database."""

    def __init__(self, user_home: Path, system: Path, role: str, database: str) -> None:
        self.literal = [
            (str(user_home), "/home/dba"),
            (str(system), "/etc/aishell"),
            (role, "aishell"),
            (database, "shop"),
        ]
        # The client programs, wherever this machine keeps them, as Debian does.
        for program in ("pg_dump", "pg_restore"):
            found = shutil.which(program)
            if found and found != f"/usr/bin/{program}":
                self.literal.append((f"({found})", f"(/usr/bin/{program})"))
        self.role, self.database = role, database
        self.run_id: str | None = None
        self.runner = CliRunner()

    def normalize(self, output: str) -> list[str]:
        for real, shown in self.literal:
            output = output.replace(real, shown)
        for pattern, shown in RULES:
            output = pattern.sub(shown, output)
        # This machine's name, where a table names the host (`backups list`).
        output = re.sub(rf"(?<=│ ){re.escape(socket.gethostname())}(?= *│)", "<host>", output)
        lines = [line.rstrip() for line in realign(output).split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def sql(self, body: str) -> None:
        for word, real in (("aishell", self.role), ("shop", self.database)):
            body = re.sub(rf"\b{word}\b", real, body)
        assert shutil.which("psql"), "psql is not on PATH: install postgresql-client"
        url = make_url(PG_ADMIN)
        dsn = f"host={url.host} port={url.port} user={url.username} dbname={url.database}"
        done = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-", dsn],
            input=body,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"the guide's SQL failed: {done.stderr}"

    def configure(self, body: str) -> None:
        path = find_home().config_file
        config = yaml.safe_load(path.read_text())
        for key, value in yaml.safe_load(body).items():
            if key == "targets":
                for target in value.values():
                    url = make_url(target["url"])
                    target["url"] = url.set(
                        username=self.role, database=self.database
                    ).render_as_string(hide_password=False)
            config[key] = value
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    def command(self, command: Command, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
        words = shlex.split(command.words)
        if words[0] == "export":
            name, value = words[1].split("=", 1)
            monkeypatch.setenv(name, value)
            return 0, ""
        assert words[0] == "aishell", f"guide.md:{command.line + 1}: not an aishell command"
        if "<run-id>" in words:
            assert self.run_id, f"guide.md:{command.line + 1}: no run printed before"
            words = [self.run_id if w == "<run-id>" else w for w in words]
        done = self.runner.invoke(cli, words[1:], prog_name="aishell", catch_exceptions=False)
        found = RUN_ID.findall(done.output)
        self.run_id = found[-1] if found else self.run_id
        return done.exit_code, done.output


@contextmanager
def guide_database() -> Iterator[tuple[str, str]]:
    """Unique names for the guide's role and database; whatever they made is dropped."""
    name = f"guide_{os.getpid()}_{next(_names)}"
    role = f"{name}_aishell"
    admin = admin_engine(PG_ADMIN, "PostgreSQL")
    try:
        yield role, name
    finally:
        with admin.connect() as conn:
            owned = conn.execute(
                text(
                    "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                    "WHERE r.rolname = :role OR d.datname = :name"
                ),
                {"role": role, "name": name},
            ).scalars()
            for database in list(owned):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def test_the_guide_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = GUIDE.read_text().split("\n")
    blocks = parse(lines)
    assert sum(b.kind == "yaml" and b.info == "aishell.yaml" for b in blocks) == 1
    assert sum(b.kind == "sql" for b in blocks) == 1
    # From install to the nightly schedule: each part of the walk is there.
    run = [c.words.split()[:2] for b in blocks for c in b.commands]
    for part in ("init", "doctor", "plan", "run", "runs", "backups", "schedule", "resume"):
        assert ["aishell", part] in run, f"the guide runs no `aishell {part}`"
    user_home, system, work = tmp_path / "dba", tmp_path / "etc-aishell", tmp_path / "work"
    user_home.mkdir()
    work.mkdir()
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AISHELL_HOME", "AISHELL_CONFIG", "AISHELL_SHOP_PW", "OLLAMA_HOST", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("AISHELL_SYSTEM_DIR", str(system))
    monkeypatch.setenv("USER", "dba")
    monkeypatch.setenv("LOGNAME", "dba")
    monkeypatch.chdir(work)
    failures: list[str] = []
    recorded: list[tuple[Command, int, list[str]]] = []
    with guide_database() as (role, database):
        guide = Guide(user_home, system, role, database)
        for block in blocks:
            if block.kind == "sql":
                guide.sql("\n".join(block.body))
            elif block.kind == "yaml" and block.info == "aishell.yaml":
                guide.configure("\n".join(block.body))
            for command in block.commands:
                code, output = guide.command(command, monkeypatch)
                actual = guide.normalize(output)
                if code == command.exit_code and matches(command.expected, actual):
                    continue
                recorded.append((command, code, actual))
                failures.append(
                    f"guide.md:{command.line + 1}: $ {command.words}\n"
                    f"exit {code} (the guide says {command.exit_code}); the output, "
                    "normalized:\n" + "\n".join(actual)
                )
    if recorded and os.environ.get("AISHELL_GUIDE_RECORD") == "1":
        record(lines, recorded)
    assert not failures, "\n\n".join(failures)


def record(lines: list[str], recorded: list[tuple[Command, int, list[str]]]) -> None:
    """Write each mismatching command's exit code and output into the guide."""
    for command, code, actual in sorted(recorded, key=lambda r: -r[0].line):
        lines[command.line + 1 : command.end] = actual
        lines[command.line] = f"$ {command.words}" + (f"  # exit {code}" if code else "")
    GUIDE.write_text("\n".join(lines))


# --- the parser and the normalization themselves ----------------------------------------------


def test_console_blocks_parse_into_commands_outputs_and_exit_codes() -> None:
    lines = ["```console", "$ aishell a  # exit 3", "one", "...", "$ aishell b", "```"]
    (block,) = parse(lines)
    first, second = block.commands
    assert (first.words, first.exit_code, first.expected) == ("aishell a", 3, ["one", GAP])
    assert (first.line, first.end, second.line, second.end) == (1, 4, 4, 5)
    assert (second.exit_code, second.expected) == (0, [])


def test_a_gap_stands_for_any_lines_and_nothing_else_is_loose() -> None:
    assert matches(["a", GAP, "d"], ["a", "b", "c", "d"])
    assert matches(["a", GAP, "d"], ["a", "d"])
    assert not matches(["a", GAP, "d"], ["a", "b", "e"])
    assert not matches(["a", "d"], ["a", "b", "d"])
    assert not matches(["a"], ["a", "b"])


def test_what_varies_is_normalized_and_tables_are_padded_again(tmp_path: Path) -> None:
    guide = Guide(tmp_path / "dba", tmp_path / "etc", "guide_1_1_aishell", "guide_1_1")
    table = (
        "┏━━━━━━━━━━━━━━┳━━━━━━━┓\n"
        "┃ run id       ┃ took  ┃\n"
        "┡━━━━━━━━━━━━━━╇━━━━━━━┩\n"
        "│ cf922b7a8111 │ 12.1s │\n"
        "└──────────────┴───────┘\n"
        f"Run cf922b7a8111 on guide_1_1 by guide_1_1_aishell in {tmp_path}/dba/x, 3.2 MiB, "
        "2026-11-23T19:24:31.850+00:00, 540672 bytes, 9,991 rows in 5 batches\n"
        "aishell 0.1.0: Python 3.11.7, libpq 18.6\n"
        "target shop (postgresql): 15.20 (Debian 15.20-0+deb12u1)\n"
    )
    assert guide.normalize(table) == [
        "┏━━━━━━━━━━┳━━━━━━━━━━━━┓",
        "┃ run id   ┃ took       ┃",
        "┡━━━━━━━━━━╇━━━━━━━━━━━━┩",
        "│ <run-id> │ <duration> │",
        "└──────────┴────────────┘",
        "Run <run-id> on shop by aishell in /home/dba/x, <size>, <time>, <n> bytes, "
        "9,991 rows in <n> batches",
        "aishell <version>: Python <version>, libpq <version>",
        "target shop (postgresql): <version>",
    ]
