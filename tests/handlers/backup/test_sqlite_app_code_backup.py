"""A SQLite database whose schema names the application's own functions or collations
is backed up faithfully without evaluating them: VACUUM INTO would make every index
again, so the copy is taken page by page with SQLite's online backup API, as the plan
says; the copy is validated (rows counted, contents checksummed, tables checked where
their check needs none of that code) and restored, and the application finds its
database whole and sound."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.handlers.backup.test_restore_prechecks import Recorder
from tests.handlers.maintenance.test_sqlite_app_code import (
    SCHEMAS,
    app_database,
    application,
    sound_to_the_application,
)
from tests.helpers import use_target

# Beside the named two: a WITHOUT ROWID table keyed by the application's collation, and
# a virtual column computed by its function (never stored: not read, not checksummed).
OTHERS = (
    "CREATE TABLE people (name TEXT COLLATE nocase2 PRIMARY KEY, id INTEGER, created TEXT) "
    "WITHOUT ROWID",
    "CREATE TABLE tags (id INTEGER PRIMARY KEY, tag TEXT, shown TEXT AS (norm(tag)))",
    "INSERT INTO tags (tag) VALUES ('A'), ('B'), ('C')",
)
CASES = {**SCHEMAS, "others": OTHERS}


def _contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows as the application reads them."""
    conn = application(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"
            )
        ]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}
    finally:
        conn.close()


def _backup(config: Config, kind: str = "full") -> Any:
    result = commands.run_job(config, "backup", {"type": kind}, approver=PreApproved())
    assert result.status == "completed", result.error
    return result


@pytest.mark.parametrize("case", list(CASES))
def test_backed_up_page_by_page_validated_and_restored(home: Path, case: str) -> None:
    db = app_database(home / "app.db", *CASES[case])
    before = _contents(db)
    config = use_target(home, f"sqlite:///{db}", copy=f"sqlite:///{home / 'copy.db'}")
    preview = commands.plan_job(config, "backup", {"type": "full"})
    [shown] = [s.sql for s in preview.steps if s.tool == "backup_database_full"]
    assert len(shown) == 1
    assert shown[0].startswith("-- SQLite online backup API")
    assert "not VACUUM INTO, which makes every table again, and people: its " in shown[0]
    result = _backup(config)
    [taken] = [s for s in result.steps if s.tool == "backup_database_full"]
    manifest = taken.output["backup_record"]["manifest"]
    assert manifest["tool"].endswith("online backup API")
    assert manifest["tables"]["people"] == 300
    assert manifest["checksums"]["people"]
    [validated] = [s for s in result.steps if s.tool == "validate_backup"]
    assert validated.status == "succeeded", validated.error
    assert _contents(Path(taken.output["backup_path"])) == before
    # Restored over a changed database, and into a new file.
    conn = application(db)
    conn.execute("DELETE FROM people")
    conn.commit()
    conn.close()
    backup = commands.list_backups(config, "db")[0]
    for into in ("db", "copy"):
        approve = Recorder(answer="yes")
        done = commands.restore(
            config, backup["id"], into, replace=True, create=True, approver=approve.approver
        )
        assert done.status == "completed", done.error
    for path in (db, home / "copy.db"):
        assert _contents(path) == before
        sound_to_the_application(path)


def test_an_increment_is_taken_whole_and_says_why(home: Path) -> None:
    """An increment is cut from its copy with VACUUM and restored by reloading tables,
    both of which would evaluate the application's code."""
    db = app_database(home / "app.db", *SCHEMAS["function"])
    config = use_target(home, f"sqlite:///{db}")
    _backup(config)
    conn = application(db)
    conn.execute("INSERT INTO people (name, created) VALUES ('New', '2024-01-01')")
    conn.commit()
    conn.close()
    result = _backup(config, "incremental")
    [taken] = [s for s in result.steps if s.tool == "backup_database_incremental"]
    whole = taken.output["taken_whole"]
    assert "its copy was taken page by page" in whole
    assert "people: its index people_norm calls norm()" in whole
    assert taken.output["backup_record"]["manifest"]["kind"] == "full"
    assert taken.output["backup_record"]["manifest"]["tables"]["people"] == 301


def test_a_database_without_the_applications_code_is_still_vacuumed_into(home: Path) -> None:
    db = home / "plain.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("CREATE INDEX t_lower ON t (lower(name))")
    conn.execute("INSERT INTO t (name) VALUES ('a')")
    conn.commit()
    conn.close()
    config = use_target(home, f"sqlite:///{db}")
    preview = commands.plan_job(config, "backup", {"type": "full"})
    [shown] = [s.sql for s in preview.steps if s.tool == "backup_database_full"]
    folder = config.backup_dir / "db"
    assert shown == [f"VACUUM INTO '{folder}/db-full-<time>-<random>.sqlite.partial'"]
    result = _backup(config)
    [taken] = [s for s in result.steps if s.tool == "backup_database_full"]
    assert taken.output["backup_record"]["manifest"]["tool"].endswith("VACUUM INTO")
