"""A SQLite backup's integrity check of a database whose application registers code
(a function in an index) and that holds a table named like a number (`10`). The check
leaves out the tables whose check would run the application's code, and checks the
others one by one, `PRAGMA integrity_check("10")`; SQLite reads that argument as the
most problems to report and checks the whole database, the application's index with it:
the backup failed with an internal error. A table named so is left out of the check like
the others (its rows are still counted and checksummed), and the backup is proven."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aishell import commands
from tests.helpers import use_target


def test_a_backup_with_a_table_named_like_a_number_beside_application_code(home: Path) -> None:
    path = home / "app.db"
    conn = sqlite3.connect(path)
    conn.create_function("rev", 1, lambda s: s[::-1], deterministic=True)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
    conn.execute("CREATE INDEX t_rev ON t (rev(x))")
    conn.execute('CREATE TABLE "10" (id INTEGER PRIMARY KEY, v TEXT)')
    conn.executemany("INSERT INTO t (x) VALUES (?)", [(str(i),) for i in range(50)])
    conn.executemany('INSERT INTO "10" (v) VALUES (?)', [(str(i),) for i in range(50)])
    conn.commit()
    conn.close()
    config = use_target(home, f"sqlite:///{path}")
    result = commands.run_job(config, "backup", {"type": "full"})
    assert result.status == "completed", result.error
    backup = next(s for s in result.steps if s.tool == "backup_database_full")
    assert (backup.output["tables"], backup.output["rows"]) == (2, 100), backup.output
