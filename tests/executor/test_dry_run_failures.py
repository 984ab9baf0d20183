"""A dry run goes on past a read that failed, to preview the rest, and still ends failed:
its report and exit code say the preview met an error, not that all was well."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from aishell.cli import cli


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _damaged(path: Path) -> Path:
    """A SQLite database whose table pages past the first were overwritten: reading the
    table fails with 'database disk image is malformed'."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT, msg TEXT)")
    rows = [(i, "2020-01-01", "x" * 200) for i in range(5000)]
    conn.executemany("INSERT INTO logs VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()
    with path.open("r+b") as raw:
        raw.seek(4096 * 20)
        raw.write(os.urandom(4096 * 3))
    return path


def test_a_dry_run_whose_read_failed_ends_failed(home: Path) -> None:
    db = _damaged(home / "damaged.db")
    added = invoke("targets", "add", "damaged", f"sqlite:///{db}", "--no-check")
    assert added.exit_code == 0, added.output
    done = invoke("run", "maintenance", "--type", "quick", "--target", "damaged", "--dry-run")
    assert done.exit_code == 1, done.output
    assert "malformed" in done.output
    as_json = invoke(
        "run", "maintenance", "--type", "quick", "--target", "damaged", "--dry-run", "--json"
    )
    assert as_json.exit_code == 1, as_json.output
    run = json.loads(as_json.stdout)
    assert run["status"] == "failed"
    steps = {s["tool"]: s["status"] for s in run["steps"]}
    # The rest was previewed all the same.
    assert steps["analyze_database_health"] == "failed"
    assert steps["update_table_statistics"] == "previewed"
