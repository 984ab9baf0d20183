"""Every command's output survives a stream that cannot encode it: an ISO-8859-1 locale,
an ASCII one (a cron job's, with Python's UTF-8 mode off), PYTHONIOENCODING=latin-1, to
a terminal, a pipe or a file. What the encoding lacks is written as ASCII (the marks) or
escaped (a table's name), never a traceback, and --json stays valid JSON; a run is never
failed by the line that reports a step of it.

Each command runs as a real process in that environment (the encoding is chosen when
the interpreter starts), against a SQLite target whose table, index and description
hold characters ISO-8859-1 lacks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from aishell.errors import EXIT_DENIED
from tests.cli.test_cli import in_terminal, read_until, strict
from tests.helpers import read_yaml, write_yaml

HANG = 120  # seconds: a hang detector, never a timing assertion
TABLE = "tëst_ж"
# As written where ASCII lacks ë and ж, or where ISO-8859-1 lacks ж alone.
SHOWN_TABLE = ("t\\xebst_\\u0436", "tëst_\\u0436")


@pytest.fixture(scope="session")
def latin1_locale(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real ISO-8859-1 locale (LOCPATH: no system locale is installed for it), else
    the encoding it gives Python's streams."""
    folder = tmp_path_factory.mktemp("locales")
    if shutil.which("localedef"):
        made = subprocess.run(
            ["localedef", "-i", "en_US", "-f", "ISO-8859-1", str(folder / "en_US.ISO-8859-1")],
            capture_output=True,
            check=False,
        )
        if made.returncode in (0, 1) and (folder / "en_US.ISO-8859-1").exists():
            return {"LOCPATH": str(folder), "LC_ALL": "en_US.ISO-8859-1", "LANG": ""}
    return {"PYTHONIOENCODING": "latin-1"}


ENCODINGS = {
    "iso-8859-1 locale": None,  # latin1_locale's
    "PYTHONIOENCODING=latin-1": {"PYTHONIOENCODING": "latin-1"},
    "ascii locale": {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""},
}


@pytest.fixture(params=list(ENCODINGS))
def narrow(
    request: pytest.FixtureRequest, latin1_locale: dict[str, str], home: Path
) -> dict[str, str]:
    """The environment (under home) of a process whose stdout and stderr lack ✓ and ж."""
    changed = ENCODINGS[request.param] or latin1_locale
    env = {**os.environ, "PYTHONUTF8": "0", **changed}
    env = {k: v for k, v in env.items() if v}
    probe = "import sys; print(sys.stdout.encoding)"
    encoding = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert not encoding.lower().replace("-", "").startswith("utf"), encoding
    return env


@pytest.fixture
def odd_target(home: Path, demo_db: Path) -> str:
    """The default target: a SQLite file whose names and description ISO-8859-1 lacks."""
    path = home / "odd.db"
    with sqlite3.connect(path) as db:
        db.execute(f'CREATE TABLE "{TABLE}" (id INTEGER PRIMARY KEY, "cöl" TEXT)')
        db.execute(f'CREATE INDEX "ix_ж" ON "{TABLE}" ("cöl")')
        db.executemany(f'INSERT INTO "{TABLE}" ("cöl") VALUES (?)', [("é",)] * 50)
    db.close()
    config = home / "config" / "aishell.yaml"
    data = read_yaml(config)
    data["targets"]["odd"] = {
        "url": f"sqlite:///{path}",
        "environment": "development",
        "description": "Ümlaut ✓ target",
    }
    data["default_target"] = "odd"
    write_yaml(config, data)
    return "odd"


def aishell(env: dict[str, str], *args: str, stdout: object = subprocess.PIPE) -> tuple[int, str]:
    """`aishell ARGS` in env: its exit code and what it wrote (stdout, then stderr),
    decoded as the bytes they are (latin-1 never fails); never a traceback."""
    code, out, err = streams(env, *args, stdout=stdout)
    return code, out + err


def streams(
    env: dict[str, str], *args: str, stdout: object = subprocess.PIPE
) -> tuple[int, str, str]:
    """`aishell ARGS` in env: its exit code, stdout and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "aishell", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=HANG,
        check=False,
    )
    for said in (done.stdout or b"", done.stderr):
        text = said.decode("latin-1")
        for failure in ("Traceback", "UnicodeEncodeError", "internal error"):
            assert failure not in text, (args, text)
    return done.returncode, (done.stdout or b"").decode("latin-1"), done.stderr.decode("latin-1")


def test_every_command_s_usual_output_survives_the_encoding(
    narrow: dict[str, str], odd_target: str
) -> None:
    code, said = aishell(narrow, "run", "maintenance", "--type", "full", "--non-interactive")
    assert code == 0, said
    # The mark in ASCII, the table's name escaped: never the run failed by its report.
    shown = (f"+ step_0 analyze_database_health {name} succeeded" for name in SHOWN_TABLE)
    assert any(line in said for line in shown), said
    code, out, _ = streams(narrow, "runs", "list", "--json")
    assert code == 0 and json.loads(out)["runs"][0]["status"] == "completed", out
    code, said = aishell(narrow, "targets", "list")
    assert "\\xdcmlaut + target" in said or "Ümlaut + target" in said, said


@pytest.mark.parametrize("narrow", ["ascii locale"], indirect=True)
def test_every_listing_and_report_survives_the_narrowest_encoding(
    narrow: dict[str, str], odd_target: str
) -> None:
    """ASCII lacks every mark and name the other encodings lack: each command once."""
    code, said = aishell(narrow, "run", "maintenance", "--type", "quick", "--non-interactive")
    assert code == 0, said
    code, out, _ = streams(narrow, "runs", "list", "--json")
    run_id = json.loads(out)["runs"][0]["run_id"]
    for args in (
        ("plan", "maintenance", "--type", "full"),
        ("runs", "list"),
        ("runs", "show", run_id),
        ("doctor",),
        ("backups", "list"),
        ("schedule", "list"),
        ("tools", "list"),
        ("--help",),
    ):
        code, said = aishell(narrow, *args)
        assert code == 0, (args, said)


@pytest.mark.parametrize("narrow", ["ascii locale"], indirect=True)
def test_json_stays_valid_json_holding_every_name(narrow: dict[str, str], odd_target: str) -> None:
    for args in (
        ("plan", "maintenance", "--type", "full", "--json"),
        ("run", "maintenance", "--type", "quick", "--non-interactive", "--json"),
        ("targets", "list", "--json"),
        ("doctor", "--json"),
        ("backups", "list", "--json"),
        ("schedule", "list", "--json"),
    ):
        code, out, err = streams(narrow, *args)
        assert code == 0, (args, err)
        json.loads(out)
    _, out, _ = streams(narrow, "plan", "maintenance", "--type", "full", "--json")
    assert out.isascii() and json.loads(out)["plan"]["assumptions"]["all_tables"] == [TABLE]


def test_an_error_and_a_file_survive_the_encoding(
    narrow: dict[str, str], odd_target: str, tmp_path: Path
) -> None:
    code, said = aishell(narrow, "runs", "show", "nosuchrun")
    assert code == 2 and "Error: " in said, said
    code, out, _ = streams(narrow, "runs", "show", "nosuchrun", "--json")
    assert code == 2 and json.loads(out)["error"]["exit_code"] == 2, out
    code, said = aishell(narrow, "plan", "maintenance", "--tables", TABLE + "x")
    assert code == 2 and "Error: " in said, said
    with (tmp_path / "run.log").open("wb") as log:
        code, said = aishell(narrow, "run", "maintenance", "--type", "quick", stdout=log)
    written = (tmp_path / "run.log").read_bytes().decode("latin-1")
    shown = (f"+ step_1 update_table_statistics {name}" for name in SHOWN_TABLE)
    assert code == 0 and any(line in written for line in shown), written


@pytest.mark.parametrize("narrow", ["iso-8859-1 locale", "ascii locale"], indirect=True)
def test_a_prompt_at_a_terminal_of_another_encoding(
    narrow: dict[str, str], home: Path, demo_db: Path
) -> None:
    strict(home)
    run = ("run", "maintenance", "--type", "full", "--tables", "app_logs", "--target", "demo")
    changed: dict[str, str | None] = {k: narrow.get(k) for k in (*os.environ, *narrow)}
    with in_terminal(*run, env=changed) as (proc, leader):
        shown = read_until(leader, "Run this step?")
        os.write(leader, b"q\n")
        shown += read_until(leader, "aborted")
        assert proc.wait(timeout=60) == EXIT_DENIED
    assert "Traceback" not in shown and "internal error" not in shown, shown
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert "+ step_1 analyze_table_fragmentation app_logs succeeded" in plain, shown
