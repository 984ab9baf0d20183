"""Manners at a terminal: the approval prompt takes y, yes, n, no, a, all, q and quit in
any case; the end of input and Ctrl-C leave the step unrun and stop the run, which
`aishell resume` then finishes. Each through a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text as sql

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.config.resources import bundled_catalog_dir
from aishell.errors import EXIT_DENIED
from aishell.registry import load_registry
from tests.cli.test_cli import in_terminal, read_until, strict
from tests.helpers import use_target
from tests.services import engine

PROMPT = "Run this step?"
# An SGR sequence that sets a foreground colour (30-38, 90-97), alone or with others.
COLOUR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-8]|9[0-7])(?:;\d+)*m")
RUN = ("run", "maintenance", "--type", "full", "--tables", "users")


def _answer_the_rest(proc: subprocess.Popen[bytes], leader: int, reply: bytes) -> str:
    """Every later prompt gets `reply`, until the process ends; what it printed."""
    seen, answered = "", 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
            if seen.count(PROMPT) > answered:
                answered = seen.count(PROMPT)
                os.write(leader, reply)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    return seen


def _the_run(home: Path) -> dict:
    config = load_config(home=home)
    [run] = commands.list_runs(config)
    return commands.show_run(config, run["run_id"])


@pytest.mark.parametrize(
    ("typed", "decision", "how"),
    [
        ("y", "approved", "prompt"),
        ("YES", "approved", "prompt"),
        ("N", "denied", "prompt"),
        ("no", "denied", "prompt"),
        ("a", "approved", "prompt:all"),
        ("All", "approved", "prompt:all"),
    ],
)
def test_an_answer_by_its_first_letter_or_in_full_in_any_case(
    home: Path, demo_db: Path, typed: str, decision: str, how: str
) -> None:
    strict(home)
    with in_terminal(*RUN) as (proc, leader):
        read_until(leader, PROMPT)
        os.write(leader, typed.encode() + b"\n")
        _answer_the_rest(proc, leader, b"n\n")
    first = _the_run(home)["approvals"][0]
    assert (first["decision"], first["how"]) == (decision, how)


@pytest.mark.parametrize("typed", ["q", "Quit"])
def test_quit_by_its_letter_stops_the_run(home: Path, demo_db: Path, typed: str) -> None:
    strict(home)
    with in_terminal(*RUN) as (proc, leader):
        read_until(leader, PROMPT)
        os.write(leader, typed.encode() + b"\n")
        rest = _answer_the_rest(proc, leader, b"n\n")
    assert proc.returncode == EXIT_DENIED, rest
    assert _the_run(home)["status"] == "aborted"


def test_a_word_that_is_no_answer_is_asked_again(home: Path, demo_db: Path) -> None:
    strict(home)
    with in_terminal(*RUN) as (proc, leader):
        read_until(leader, PROMPT)
        os.write(leader, b"yep\n")
        again = read_until(leader, PROMPT)
        os.write(leader, b"n\n")
        _answer_the_rest(proc, leader, b"n\n")
    assert "yep" in again and "is not" in again  # click names the bad answer
    assert _the_run(home)["approvals"][0]["decision"] == "denied"


def _stops_resumably(home: Path, code: int, status: str, shown: str) -> None:
    """The run stopped with the asked step unrun; resume, approving, finishes it."""
    assert code == EXIT_DENIED, shown
    run = _the_run(home)
    assert run["status"] == status, shown
    unrun = [s for s in run["steps"] if s["tool"] == "rebuild_fragmented_indexes"]
    assert unrun and unrun[0]["status"] in ("waiting_approval", "pending"), unrun
    assert all(s["status"] != "succeeded" or s["index"] < unrun[0]["index"] for s in run["steps"])
    env = {"AISHELL_HOME": str(home), "AISHELL_CONFIG": None}
    resumed = CliRunner().invoke(cli, ["resume", run["run_id"], "--yes"], env=env)
    assert resumed.exit_code == 0, resumed.output
    done = _the_run(home)
    assert done["status"] == "completed"
    assert all(s["status"] in ("succeeded", "skipped") for s in done["steps"]), done["steps"]


def test_end_of_input_at_the_prompt_leaves_the_step_unrun_and_stops(
    home: Path, demo_db: Path
) -> None:
    strict(home)
    with in_terminal(*RUN) as (proc, leader):
        read_until(leader, PROMPT)
        os.write(leader, b"\x04")  # Ctrl-D: the terminal's end of input
        rest = _answer_the_rest(proc, leader, b"n\n")
    assert PROMPT not in rest  # asked once: after the end of input nobody is left
    assert "Traceback" not in rest and "Aborted!" not in rest
    assert "resume" in rest
    approvals = _the_run(home)["approvals"]
    assert [(a["decision"], a["how"], a["reason"]) for a in approvals] == [
        ("stopped", "prompt", "end of input")
    ]
    _stops_resumably(home, proc.returncode, "aborted", rest)


def test_ctrl_c_at_the_prompt_leaves_the_step_unrun_and_stops(home: Path, demo_db: Path) -> None:
    strict(home)
    with in_terminal(*RUN) as (proc, leader):
        read_until(leader, PROMPT)
        proc.send_signal(signal.SIGINT)  # what the terminal sends for Ctrl-C
        rest = _answer_the_rest(proc, leader, b"n\n")
    assert PROMPT not in rest and "Traceback" not in rest
    _stops_resumably(home, proc.returncode, "interrupted", rest)


def _aishell(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A real `aishell` with stdout and stderr on pipes, as a script runs it."""
    environ = {**os.environ, "AISHELL_HOME": str(home), **env}
    environ.pop("AISHELL_CONFIG", None)
    environ.pop("COLUMNS", None)
    return subprocess.run(
        [sys.executable, "-m", "aishell", *args],
        env=environ,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_piped_output_is_never_wrapped(home: Path, demo_db: Path) -> None:
    shown = _aishell(home, "tools", "show", "rebuild_fragmented_indexes")
    assert shown.returncode == 0, shown.stderr
    definition = load_registry([bundled_catalog_dir()]).get("rebuild_fragmented_indexes")
    # The description and the notes, each far longer than 80 columns, on one line each.
    for text in (definition.description, definition.notes):
        assert len(text) > 80
        assert any(" ".join(text.split()) in line for line in shown.stdout.splitlines())
    planned = _aishell(home, "plan", "maintenance", "--type", "full", "--tables", "app_logs")
    assert planned.returncode == 0, planned.stderr
    assert any(
        'REINDEX main."idx_app_logs_created"' in line for line in planned.stdout.splitlines()
    )
    assert "\x1b[" not in shown.stdout + planned.stdout  # no colour on a pipe


@pytest.mark.parametrize(
    ("args", "code", "exit_code", "says"),
    [
        (("runs", "show", "nosuchrun", "--json"), "run_not_found", 2, "nosuchrun"),
        (("run", "maintenance", "--type", "bogus", "--json"), "usage_error", 2, "bogus"),
        (("run", "maintenance", "--json", "--target", "nowhere"), "config_error", 2, "nowhere"),
        (("tools", "show", "no_such_tool", "--json"), "tool_not_found", 2, "no_such_tool"),
        (("apply", "missing-plan.json", "--json"), "usage_error", 2, "does not exist"),
    ],
)
def test_with_json_an_error_is_one_json_object_on_stdout(
    home: Path, demo_db: Path, args: tuple[str, ...], code: str, exit_code: int, says: str
) -> None:
    done = _aishell(home, *args)
    assert done.returncode == exit_code, (done.stdout, done.stderr)
    error = json.loads(done.stdout)["error"]
    assert error["code"] == code and error["exit_code"] == exit_code
    assert says in error["message"]
    assert "Traceback" not in done.stderr


def test_without_json_an_error_is_one_line_on_stderr(home: Path, demo_db: Path) -> None:
    done = _aishell(home, "runs", "show", "nosuchrun")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1


def test_no_color_is_respected_at_a_terminal(home: Path, demo_db: Path) -> None:
    for no_color, coloured in ((None, True), ("1", False)):
        env = {"TERM": "xterm-256color", "NO_COLOR": no_color, "FORCE_COLOR": None}
        with in_terminal("tools", "list", env=env) as (proc, leader):
            shown = _answer_the_rest(proc, leader, b"")
        # NO_COLOR takes the colours away; bold and the like may stay.
        assert bool(COLOUR.search(shown)) is coloured, shown[:300]


def test_a_preview_names_where_a_reference_comes_from(home: Path, demo_db: Path) -> None:
    planned = _aishell(home, "plan", "maintenance", "--type", "emergency")
    assert planned.returncode == 0, planned.stderr
    [repair] = [line for line in planned.stdout.splitlines() if "repair_corrupted_tables" in line]
    assert "from step_1: corrupted_tables" in repair and "${" not in repair
    # A script reading the plan gets the reference itself.
    as_json = json.loads(
        _aishell(home, "plan", "maintenance", "--type", "emergency", "--json").stdout
    )
    [step] = [s for s in as_json["steps"] if s["tool"] == "repair_corrupted_tables"]
    assert step["params"]["tables"] == "${step_1.output.corrupted_tables}"


def _complete(home: Path, shell: str, words: str, cword: int, **env: str) -> list[str]:
    """What the shell's completion asks of aishell, as the script it sources asks it."""
    asked = {
        "_AISHELL_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": words,
        # fish passes the word being completed; bash and zsh its index.
        "COMP_CWORD": words.split(" ")[-1] if shell == "fish" else str(cword),
        **env,
    }
    done = _aishell(home, **asked)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_completion_offers_target_names_and_run_ids(home: Path, demo_db: Path) -> None:
    config = load_config(home=home)
    result = commands.run_job(config, "maintenance", {"type": "quick"})
    targets = sorted(config.main.targets)
    assert len(targets) >= 1
    bash = _complete(home, "bash", "aishell run maintenance --target ", 4)
    assert bash == [f"plain,{name}" for name in targets]
    zsh = _complete(home, "zsh", "aishell plan maintenance --target de", 4)
    assert zsh[:2] == ["plain", "demo"]
    run_id = result.run_id
    for shell, words, cword in (
        ("bash", "aishell runs show ", 3),
        ("zsh", f"aishell resume {run_id[:4]}", 2),
        ("fish", f"aishell approve {run_id[:4]}", 2),
    ):
        offered = _complete(home, shell, words, cword)
        assert any(run_id in line for line in offered), (shell, offered)
    # With --home given on the line, that home's runs; a home without a state store
    # offers none, and asking makes no state store.
    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    none = _complete(home, "bash", f"aishell --home {elsewhere} runs show ", 5)
    assert [line for line in none if line] == [] and not (elsewhere / "state.db").exists()


def test_dash_h_is_help_everywhere(home: Path) -> None:
    for args in (("-h",), ("run", "-h"), ("run", "maintenance", "-h"), ("runs", "show", "-h")):
        done = _aishell(home, *args)
        assert done.returncode == 0 and done.stdout.startswith("Usage: aishell"), args


# Any escape sequence: colours, cursor moves, line erasing.
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# A bar's figures for bytes: done/expected, the rate, the time left.
BYTES_BAR = re.compile(r"[\d.]+ [KMG]iB/[\d.]+ [KMG]iB +[\d.]+ [KMG]iB/s +\d+:\d\d:\d\d")
BACKUP = ("run", "backup", "--no-verify")


def _a_database_of_megabytes(home: Path, url: str) -> None:
    """The target `db`: some 20 MiB of rows, which pg_dump takes most of a second over."""
    with engine(url).connect() as conn:
        conn.execute(sql("CREATE TABLE logs (id bigint PRIMARY KEY, msg text)"))
        conn.execute(
            sql(
                "INSERT INTO logs SELECT i, md5(i::text) || ' a line of the log ' || i "
                "FROM generate_series(1, 250000) i"
            )
        )
        # The dump's estimate reads the page counts ANALYZE keeps.
        conn.execute(sql("ANALYZE logs"))
    use_target(home, url)


def test_a_backup_at_a_terminal_shows_a_bar_with_its_rate_and_time_left(
    home: Path, pg_url: str
) -> None:
    _a_database_of_megabytes(home, pg_url)
    with in_terminal(*BACKUP, env={"TERM": "xterm-256color"}) as (proc, leader):
        shown = _answer_the_rest(proc, leader, b"")
    assert proc.returncode == 0, shown[-2000:]
    frames = ESCAPE.sub("", shown).replace("\r", "\n").splitlines()
    bars = [line for line in frames if "backup_database_full" in line and "━" in line]
    assert any(BYTES_BAR.search(line) for line in bars), bars or shown[-2000:]
    # Each step still ends with its line, and the run with its summary.
    assert any(line.startswith("✓ step_1 backup_database_full") for line in frames)
    assert any(re.match(r"Run \w+ completed", line) for line in frames)


def test_quiet_or_piped_a_backup_shows_no_bar(home: Path, pg_url: str) -> None:
    _a_database_of_megabytes(home, pg_url)
    with in_terminal(*BACKUP, "--quiet", env={"TERM": "xterm-256color"}) as (proc, leader):
        quiet = _answer_the_rest(proc, leader, b"")
    assert proc.returncode == 0, quiet[-2000:]
    # No spinner, bar or step line: the result alone.
    lines = [line for line in ESCAPE.sub("", quiet).replace("\r", "\n").splitlines() if line]
    assert len(lines) == 1 and re.fullmatch(r"Run \w+ completed \(2 succeeded\)", lines[0]), lines
    assert "━" not in quiet and "MiB" not in quiet and "step_1" not in quiet
    # On a pipe, the lines of the steps and no bar.
    piped = _aishell(home, *BACKUP)
    assert piped.returncode == 0, piped.stderr
    said = piped.stdout + piped.stderr
    assert "━" not in said and "MiB/s" not in said and "\x1b[" not in said
    assert "✓ step_1 backup_database_full" in said and "completed" in said
