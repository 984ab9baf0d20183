"""A state.url that names another application's SQLite database is refused, not made a
store: aishell's tables were created in it beside the application's (a state.url
pointed at a target's file by mistake got them in the target), unless a `.has-history`
marker happened to be beside it. One line naming the file and some of its tables; the
file is left as it was, and a new or empty file still becomes a store."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.helpers import digest
from tests.state.test_state_faults import invoke, one_error_line, state_at


def tables(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
        return [name for (name,) in rows]
    finally:
        conn.close()


def test_a_targets_database_named_as_the_store_is_refused_and_left_alone(
    home: Path, demo_db: Path
) -> None:
    before, names = digest(demo_db), tables(demo_db)
    state_at(home, demo_db)
    for args in (["runs", "list"], ["run", "maintenance", "--type", "quick", "-y"]):
        line = one_error_line(invoke(*args), f"The state store {demo_db} holds another")
        assert "app_logs" in line and "state.url" in line, line
    assert digest(demo_db) == before and tables(demo_db) == names
    assert not demo_db.with_name("demo.db.has-history").exists()


def test_an_applications_file_is_refused_and_an_empty_one_becomes_a_store(
    home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "app.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.commit()
    conn.close()
    state_at(home, path)
    one_error_line(invoke("runs", "list"), f"{path} holds another", "invoices")
    assert tables(path) == ["invoices"]
    # A file with no tables (made empty by a tool, or by SQLite's open) is a new store.
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    state_at(home, empty)
    done = invoke("runs", "list")
    assert done.exit_code == 0, done.output
    assert "runs" in tables(empty)


def test_an_applications_file_with_a_transaction_to_roll_back_is_refused_once_open(
    home: Path, tmp_path: Path
) -> None:
    # A writer killed mid-transaction left a hot journal: no read-only look can read the
    # file before SQLite rolls it back, so it is looked at again once open.
    path = tmp_path / "app.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, note TEXT)")
    conn.executemany("INSERT INTO invoices (note) VALUES (?)", [("x" * 200,)] * 2000)
    conn.commit()
    conn.close()
    killed = (
        "import os, signal, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('PRAGMA cache_size = 10')\n"
        "conn.execute('BEGIN')\n"
        "conn.execute(\"UPDATE invoices SET note = note || 'y'\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", killed, str(path)], check=False)
    assert path.with_name("app.sqlite-journal").stat().st_size > 0
    state_at(home, path)
    one_error_line(invoke("runs", "list"), f"The state store {path} holds another")
    assert tables(path) == ["invoices"]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM invoices WHERE note LIKE '%y'").fetchone() == (0,)
    conn.close()
