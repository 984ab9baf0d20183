"""A SQLite database whose schema names functions or collations its application registers
on its own connections (an index on norm(name), a column COLLATE nocase2) is maintained:
each operation that would evaluate that code is left out for the table that needs it,
named with the index or column and the function or collation, everything else is done,
and the plan says so before anything runs. No stand-in is ever put in the code's place:
the application, with its own functions, still finds the database sound."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import use_target

NORM = "people_norm calls norm(), a function the application defines, not SQLite"
NOCASE2 = (
    "people_name sorts column name by collation nocase2, which the application defines, not SQLite"
)
SCHEMAS = {
    "function": (
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, created TEXT)",
        "CREATE INDEX people_norm ON people (norm(name))",
    ),
    "collation": (
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT COLLATE nocase2, created TEXT)",
        "CREATE INDEX people_name ON people (name)",
    ),
}
SAYS = {"function": f"its index {NORM}", "collation": f"its index {NOCASE2}"}


def application(path: Path) -> sqlite3.Connection:
    """A connection as the application opens one: its own norm() and nocase2."""
    conn = sqlite3.connect(path)
    conn.create_function("norm", 1, lambda s: (s or "").lower(), deterministic=True)
    conn.create_collation("nocase2", _nocase2)
    return conn


def _nocase2(left: str, right: str) -> int:
    a, b = left.lower(), right.lower()
    return (a > b) - (a < b)


def keep_recent(path: Path) -> None:
    """The application dates the people past id 100 now: only the first 100 are old
    enough for a purge to take."""
    conn = application(path)
    conn.execute("UPDATE people SET created = datetime('now') WHERE id > 100")
    conn.commit()
    conn.close()


def app_database(path: Path, *schema: str, rows: int = 300) -> Path:
    """The application's database: its schema, `people` and a `plain` table, rows in both."""
    conn = application(path)
    for sql in schema:
        conn.executescript(sql)
    conn.execute("CREATE TABLE plain (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany(
        "INSERT INTO people (name, created) VALUES (?, '2020-01-01')",
        [(f"Name{i}",) for i in range(rows)],
    )
    conn.executemany(
        "INSERT INTO plain (v) VALUES (?)", [(f"v{i}" + "x" * 200,) for i in range(rows)]
    )
    # Free pages: full maintenance would VACUUM the file.
    conn.execute("DELETE FROM plain WHERE id > 100")
    conn.commit()
    conn.close()
    return path


def sound_to_the_application(path: Path) -> None:
    conn = application(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def _step(result: Any, tool: str) -> Any:
    [step] = [s for s in result.steps if s.tool == tool]
    return step


def _run(home: Path, db: Path, kind: str) -> Any:
    config = use_target(home, f"sqlite:///{db}")
    result = commands.run_job(config, "maintenance", {"type": kind}, approver=PreApproved())
    assert result.status == "completed", result.error
    assert not [s for s in result.steps if s.status == "failed"]
    return result


@pytest.mark.parametrize("code", ["function", "collation"])
@pytest.mark.parametrize("kind", ["quick", "standard", "full"])
def test_statistics_leave_out_only_a_key_sorted_by_the_applications_collation(
    home: Path, code: str, kind: str
) -> None:
    db = app_database(home / "app.db", *SCHEMAS[code])
    result = _run(home, db, kind)
    health = _step(result, "analyze_database_health")
    assert health.status == "succeeded"
    assert {t["table"]: t["rows"] for t in health.output["tables"]} == {"people": 300, "plain": 100}
    stats = _step(result, "update_table_statistics")
    assert stats.status == "succeeded"
    if code == "function":
        # ANALYZE reads an expression index's stored keys: nothing to leave out.
        assert sorted(stats.output["tables_done"]) == ["people", "plain"]
        assert stats.output["skipped_tables"] == []
    else:
        assert stats.output["tables_done"] == ["plain"]
        assert stats.output["skipped_tables"] == [
            {"table": "people", "reason": f"people: not analyzed: its index {NOCASE2}"}
        ]
    sound_to_the_application(db)


@pytest.mark.parametrize("code", ["function", "collation"])
def test_full_maintenance_leaves_the_file_unvacuumed_and_says_why(home: Path, code: str) -> None:
    db = app_database(home / "app.db", *SCHEMAS[code])
    config = use_target(home, f"sqlite:///{db}")
    preview = commands.plan_job(config, "maintenance", {"type": "full"})
    [shown] = [s.sql for s in preview.steps if s.tool == "optimize_table"]
    said = "VACUUM not run: it makes every table of the file again, and people: its "
    assert shown[0].startswith(f"-- {said}") and SAYS[code] in shown[0]
    assert "VACUUM" not in [line.strip() for line in shown]
    result = _run(home, db, "full")
    vacuum = _step(result, "optimize_table")
    assert vacuum.status == "skipped"
    assert vacuum.output["vacuumed"] is False
    assert vacuum.output["reason"] == shown[0].removeprefix("-- ")
    assert {t["table"] for t in vacuum.output["skipped_tables"]} == {"people", "plain"}
    sound_to_the_application(db)


@pytest.mark.parametrize("code", ["function", "collation"])
def test_the_corruption_check_leaves_out_the_table_and_checks_the_others(
    home: Path, code: str
) -> None:
    db = app_database(home / "app.db", *SCHEMAS[code])
    config = use_target(home, f"sqlite:///{db}")
    reason = f"people: not checked: {SAYS[code]}"
    preview = commands.plan_job(config, "maintenance", {"type": "emergency"})
    shown = _step(preview, "check_table_corruption").sql
    assert f"-- {reason}" in shown
    assert 'PRAGMA integrity_check("plain")' in shown
    assert not [s for s in shown if s.startswith('PRAGMA integrity_check("people")')]
    for kind in ("emergency", "full"):
        result = _run(home, db, kind)
        health = _step(result, "analyze_database_health").output
        check = (
            _step(result, "check_table_corruption").output
            if kind == "emergency"
            else health["corruption_check"]
        )
        assert check["checked_tables"] == ["plain"]
        assert check["unchecked_tables"] == [{"table": "people", "reason": reason}]
        assert check["corruption_found"] is None  # never reported sound
    sound_to_the_application(db)


def _uses(*schema: str) -> Callable[[Path], Path]:
    return lambda path: app_database(path, *schema)


PLAIN_PEOPLE = "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, created TEXT)"
# Each other place a schema names the application's code, with what maintenance must say
# of it: the reason of the corruption check and of VACUUM (None: it needs no such code).
OTHERS = {
    "check": (
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT CHECK (norm(name) <> ''), "
        "created TEXT)",
        "its CHECK constraint on column name calls norm()",
        "its CHECK constraint on column name calls norm()",
    ),
    "generated": (
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, created TEXT, "
        "n TEXT AS (norm(name)))",
        "its generated column n calls norm()",
        "its generated column n calls norm()",
    ),
    "partial": (
        f"{PLAIN_PEOPLE}; CREATE INDEX people_some ON people (name) WHERE norm(name) <> 'x'",
        "its index people_some calls norm()",
        "its index people_some calls norm()",
    ),
    "without rowid": (
        "CREATE TABLE people (name TEXT COLLATE nocase2 PRIMARY KEY, id INTEGER, created TEXT) "
        "WITHOUT ROWID",
        "its primary key sorts column name by collation nocase2",
        "its column name uses collation nocase2",
    ),
    "trigger": (
        f"{PLAIN_PEOPLE}; CREATE TABLE log (n TEXT); CREATE TRIGGER people_log AFTER DELETE "
        "ON people BEGIN INSERT INTO log VALUES (norm(old.name)); END",
        None,
        None,
    ),
    "view": (
        f"{PLAIN_PEOPLE}; CREATE VIEW people_norms AS SELECT norm(name) AS n FROM people",
        None,
        None,
    ),
}


@pytest.mark.parametrize("case", list(OTHERS))
def test_every_place_a_schema_names_the_applications_code(home: Path, case: str) -> None:
    schema, unchecked, unvacuumed = OTHERS[case]
    db = app_database(home / "app.db", schema)
    for kind in ("emergency", "full", "quick"):
        result = _run(home, db, kind)
        if kind == "emergency":
            check = _step(result, "check_table_corruption").output
            reasons = [u["reason"] for u in check["unchecked_tables"]]
            if unchecked is None:
                # A trigger or a view runs on a write or a read of its own: the table
                # is checked as any other.
                assert sorted(check["checked_tables"]) == sorted(
                    t for t in ("people", "plain", "log") if t in check["status_by_table"]
                )
                assert reasons == []
            else:
                assert check["checked_tables"] == ["plain"]
                [reason] = reasons
                assert reason.startswith(f"people: not checked: {unchecked}")
        if kind == "full":
            vacuum = _step(result, "optimize_table")
            if unvacuumed is None:
                assert vacuum.status == "succeeded" and vacuum.output["vacuumed"] is True
            else:
                assert vacuum.status == "skipped"
                assert f"people: {unvacuumed}" in vacuum.output["reason"]
    sound_to_the_application(db)


@pytest.mark.parametrize("code", ["function", "collation"])
def test_a_fragmented_index_that_needs_the_applications_code_is_not_rebuilt(
    home: Path, code: str
) -> None:
    db = home / "app.db"
    conn = application(db)
    for sql in SCHEMAS[code]:
        conn.execute(sql)
    conn.execute("CREATE INDEX people_created ON people (created)")
    # Keys in no order: both indexes' leaves end up scattered over the file.
    conn.executemany(
        "INSERT INTO people (name, created) VALUES (?, ?)",
        [(f"N{(i * 7919) % 20000:05}", f"2020-{(i * 104729) % 20000:05}") for i in range(20000)],
    )
    conn.commit()
    conn.close()
    config = use_target(home, f"sqlite:///{db}")
    job = {"type": "full", "tables": ["people"]}
    preview = commands.plan_job(config, "maintenance", job)
    shown = _step(preview, "rebuild_fragmented_indexes").sql
    index = "people_norm" if code == "function" else "people_name"
    assert shown[0].startswith(f"-- people: index {index} not rebuilt: its index {index} ")
    assert 'REINDEX main."people_created"' in shown
    result = _run(home, db, "full")
    rebuilt = _step(result, "rebuild_fragmented_indexes")
    assert [r["index"] for r in rebuilt.output["rebuilt"]] == ["people_created"]
    [left] = [s for s in rebuilt.output["skipped"] if s.get("cause")]
    assert left["reason"] == shown[0].removeprefix("-- ")
    assert left["reason"].endswith(SAYS[code])
    sound_to_the_application(db)
