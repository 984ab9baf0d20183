"""What a database holds that aishell cannot name, and statements that return nothing:
a SQLite table (or index) whose name is not UTF-8 is left out with a warning naming it,
never renamed into another table's name; a tool of fixed SQL whose statement returns no
rows gives a defined output in every result mode."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from tests.conftest import REPO
from tests.helpers import one_step_plan, use_target

BAD = b"bad\xff\xfename"  # not UTF-8
SHOWN = "bad\\xff\\xfename"  # as aishell shows it
# What a lossy decoding of BAD would give: the name of another, real table.
LOOKALIKE = "bad\ufffd\ufffdname"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def rename_raw(path: Path, marker: bytes, raw: bytes) -> None:
    """Give the objects named with `marker` the raw bytes instead: Python's sqlite3 only
    sends UTF-8 text, so the names are written into the schema as bytes (as a program in
    another language could have made them)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema = ON")
    for column in ("name", "tbl_name", "sql"):
        conn.execute(
            f"UPDATE sqlite_schema SET {column} = CAST(replace(CAST({column} AS BLOB), "
            "?, ?) AS TEXT)",
            (marker, raw),
        )
    conn.commit()
    conn.close()
    check = sqlite3.connect(path)
    check.text_factory = bytes
    assert check.execute("PRAGMA integrity_check").fetchall() == [(b"ok",)]
    names = [r[0] for r in check.execute("SELECT name FROM sqlite_schema")]
    assert all(marker not in n for n in names) and any(raw in n for n in names)
    check.close()


def make_database(path: Path) -> None:
    """A table named BAD with an index, a table named LOOKALIKE, and a readable table
    `logs` (with dates) whose index has a name that is not UTF-8."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE badXYname (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE INDEX ix_badXY ON badXYname (v)")
    conn.execute(f'CREATE TABLE "{LOOKALIKE}" (id INTEGER PRIMARY KEY, v TEXT)')
    conn.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT, msg TEXT)")
    conn.execute("CREATE INDEX ix_logsXY ON logs (created_at)")
    for table in ("badXYname", LOOKALIKE):
        conn.executemany(f'INSERT INTO "{table}" (v) VALUES (?)', [(str(i),) for i in range(40)])
    conn.executemany(
        "INSERT INTO logs (created_at, msg) VALUES (?, 'x')",
        [(f"2020-01-{d:02d} 00:00:00",) for d in range(1, 29)],
    )
    conn.commit()
    conn.close()
    rename_raw(path, b"XY", b"\xff\xfe")


@pytest.fixture
def odd_db(home: Path) -> Path:
    path = home / "odd.db"
    make_database(path)
    use_target(home, f"sqlite:///{path}")
    return path


def test_a_table_whose_name_is_not_utf8_is_left_out_of_a_plan_with_a_warning(odd_db):
    done = invoke("plan", "maintenance", "--type", "full", "--json")
    assert done.exit_code == 0, done.output
    plan = json.loads(done.stdout)
    planned = {
        t for s in plan["steps"] for t in s["params"].get("tables") or [s["params"].get("table")]
    }
    assert planned - {None} == {LOOKALIKE, "logs"}
    shown = invoke("plan", "maintenance", "--type", "full")
    warnings = [line for line in shown.output.splitlines() if line.startswith("Warning:")]
    assert warnings == [
        f"Warning: Left out, their names are not valid UTF-8: {SHOWN}; rename them "
        "(ALTER TABLE ... RENAME TO) to have them maintained"
    ]


def test_maintenance_runs_on_the_others_and_never_names_the_unreadable_table(odd_db, home):
    before = sqlite3.connect(odd_db)
    lookalike_rows = before.execute(f'SELECT count(*) FROM "{LOOKALIKE}"').fetchone()
    before.close()
    done = invoke("run", "maintenance", "--type", "full", "--yes", "--json")
    assert done.exit_code == 0, done.output
    run = json.loads(done.stdout)
    assert run["status"] == "completed"
    statements = commands.run_statements(load_config(home=home), run["run_id"])
    texts = [s["sql"] for s in statements]
    # The look-alike is a real table: analyzed once under its own name, as `logs` is.
    assert sum(f'ANALYZE main."{LOOKALIKE}"' == t for t in texts) == 1
    assert 'ANALYZE main."logs"' in texts
    health = run["steps"][0]["output"]
    assert {t["table"] for t in health["tables"]} == {LOOKALIKE, "logs"}
    assert any(SHOWN in r for r in health["recommendations"])
    # Its statistics came from ANALYZE of the look-alike and of logs only.
    check = sqlite3.connect(odd_db)
    check.text_factory = bytes
    analyzed = {r[0] for r in check.execute("SELECT DISTINCT tbl FROM sqlite_stat1")}
    assert BAD not in analyzed and LOOKALIKE.encode() in analyzed
    assert check.execute(f'SELECT count(*) FROM "{LOOKALIKE}"').fetchone() == (lookalike_rows[0],)
    # The unreadable table is still there with its rows.
    assert check.execute(
        "SELECT count(*) FROM sqlite_schema WHERE CAST(name AS BLOB) = ?", (BAD,)
    ).fetchone() == (1,)
    check.close()


def test_a_purge_plan_on_a_table_with_an_unreadable_index_is_made(odd_db):
    done = invoke(
        "plan",
        "log-cleanup",
        "--table",
        "logs",
        "--date-column",
        "created_at",
        "--retention-days",
        "30",
    )
    assert done.exit_code == 0, done.output
    assert "internal error" not in done.output


def test_a_backup_of_the_database_completes_and_keeps_the_unreadable_table(odd_db, home):
    done = invoke("run", "backup", "--json")
    assert done.exit_code == 0, done.output
    [backup] = commands.list_backups(load_config(home=home))
    copy = sqlite3.connect(backup["path"])
    copy.text_factory = bytes
    assert copy.execute(
        "SELECT count(*) FROM sqlite_schema WHERE CAST(name AS BLOB) = ?", (BAD,)
    ).fetchone() == (1,)
    copy.close()


@pytest.mark.parametrize("option", ["--tables", "--table"])
def test_a_table_name_on_the_command_line_that_is_not_utf8_is_one_line(odd_db, home, option):
    words = (
        ["plan", "maintenance", "--type", "full", option]
        if option == "--tables"
        else ["plan", "log-cleanup", option]
    )
    done = subprocess.run(
        [sys.executable, "-m", "aishell", *words, BAD],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    # Refused as it is read, as every text value that holds such bytes (cli/context.py).
    assert err == (
        f"Error: Invalid value for '{option}': the value holds bytes that are not text in "
        "the locale's encoding\n"
    )


# --- statements that return no rows ------------------------------------------------------------


def site_tool(home: Path, mode: str, sql: str, **extra: Any) -> Path:
    folder = home / "site_tools"
    folder.mkdir(exist_ok=True)
    tool = {
        "name": "site_refresh",
        "description": "Refresh a table's statistics.",
        "category": "maintenance",
        "risk_level": "medium",
        "required_capabilities": ["database_read", "database_write"],
        "max_execution_time": 30,
        "idempotent": True,
        "params": {
            "type": "object",
            "required": ["table"],
            "properties": {"table": {"type": "string", "x-identifier": "table"}},
        },
        "returns": {"type": "object"},
        "examples": [{"params": {"table": "t"}}],
        "implementations": {"sqlite": {"sql": sql, "result": mode}},
        "locks": {"sqlite": []},
        **extra,
    }
    path = folder / "site_refresh.yaml"
    path.write_text(yaml.safe_dump(tool))
    config = home / "config" / "aishell.yaml"
    data = yaml.safe_load(config.read_text())
    data["catalog_paths"] = ["site_tools"]
    config.write_text(yaml.safe_dump(data))
    return path


NO_ROWS = [
    ("all", "ANALYZE {table}", {"rows": []}),
    ("one", "ANALYZE {table}", {}),
    ("none", "ANALYZE {table}", {"rowcount": 0}),
    ("all", "SELECT id FROM {table} WHERE id < 0", {"rows": []}),
    ("one", "SELECT id FROM {table} WHERE id < 0", {}),
    ("all", "UPDATE {table} SET message = message WHERE id < 0", {"rows": []}),
]


@pytest.mark.parametrize(("mode", "sql", "output"), NO_ROWS)
def test_a_statement_that_returns_no_rows_gives_a_defined_output(
    home, demo_db, tmp_path, mode, sql, output
):
    site_tool(home, mode, sql)
    config = use_target(home, f"sqlite:///{demo_db}")
    plan = one_step_plan("maintenance", "db", "sqlite", "site_refresh", {"table": "app_logs"})
    saved = commands.save_plan(config, plan, tmp_path / "plan.json")
    done = invoke("apply", str(saved), "--yes", "--json")
    assert done.exit_code == 0, done.output
    [step] = json.loads(done.stdout)["steps"]
    assert step["status"] == "succeeded" and step["error"] is None
    assert step["output"] == output


def test_a_report_rule_adding_the_list_of_rows_is_refused_at_load(home):
    path = site_tool(
        home, "all", "SELECT id FROM {table}", report={"add": "indexes_rebuilt", "from": "rows"}
    )
    done = invoke("tools", "list")
    assert done.exit_code == 2
    assert done.output == (
        f"Error: {path}: report: implementations.sqlite.result is all, so rows is a list "
        "of rows, not a number to add; count them in the SQL (result: one) instead\n"
    )


def test_a_saved_plan_that_left_a_table_out_applies(odd_db, tmp_path):
    out = tmp_path / "plan.json"
    made = invoke("plan", "maintenance", "--type", "quick", "--out", str(out))
    assert made.exit_code == 0, made.output
    assert json.loads(out.read_text())["assumptions"]["unreadable_tables"] == [SHOWN]
    done = invoke("apply", str(out), "--yes", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["status"] == "completed"
