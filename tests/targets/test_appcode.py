"""What of a SQLite schema needs the application's own code is found by SQLite itself,
on the schema made again in memory, then placed by each object's text: a name in a
string or a comment, or a function SQLite has, is never taken for one."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell.targets import appgroups
from aishell.targets.appcode import file_app_code
from tests.handlers.maintenance.test_sqlite_app_code import application


def _uses(path: Path, *schema: str) -> list[tuple[str, str, str, str]]:
    conn = application(path)
    for sql in schema:
        conn.executescript(sql)
    conn.commit()
    found = file_app_code(conn)
    conn.close()
    return sorted((u.table, u.kind, u.name, u.code) for u in found.uses)


def test_names_in_strings_comments_and_sqlites_own_functions_are_not_the_applications(
    tmp_path: Path,
) -> None:
    found = _uses(
        tmp_path / "app.db",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT DEFAULT ('norm(x)') "
        "CHECK (lower(a) <> 'nocase2') /* norm(a) COLLATE nocase2 */, b VARCHAR(10))",
        "CREATE INDEX t_lower ON t (lower(a)) -- norm(a)",
        'CREATE INDEX t_norm ON t ("NORM"(b))',
        "CREATE TABLE u (k TEXT COLLATE NoCase2, v INTEGER)",
    )
    assert found == [
        ("t", "index", "t_norm", "NORM"),
        ("u", "column", "k", "NoCase2"),
    ]


def test_a_schema_without_the_applications_code_has_none(tmp_path: Path) -> None:
    assert (
        _uses(
            tmp_path / "app.db",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT COLLATE NOCASE)",
            "CREATE INDEX t_a ON t (lower(a) COLLATE RTRIM) WHERE abs(id) > 1",
            "CREATE VIEW v AS SELECT upper(a) FROM t",
            "CREATE VIRTUAL TABLE f USING fts5(body)",
        )
        == []
    )


# Application code in tables spread over several groups, with a key collation, a
# CHECK, a generated column, an index expression, and tables that need none.
_SPREAD = [
    "CREATE TABLE a (id INTEGER PRIMARY KEY, k TEXT COLLATE nocase2)",
    "CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)",
    "CREATE INDEX b_norm ON b (norm(v))",
    "CREATE TABLE c (k TEXT PRIMARY KEY COLLATE nocase2, v TEXT) WITHOUT ROWID",
    "CREATE TABLE d (id INTEGER PRIMARY KEY, v TEXT CHECK (norm(v) <> 'x'))",
    "CREATE TABLE e (id INTEGER PRIMARY KEY, v TEXT, n TEXT AS (norm(v)))",
    "CREATE TABLE f (id INTEGER PRIMARY KEY, v TEXT)",
    "CREATE INDEX f_v ON f (v COLLATE nocase2)",
    "CREATE TABLE g (id INTEGER PRIMARY KEY)",
]


def test_tables_made_again_in_groups_find_what_one_database_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Groups of two tables (each with its indexes) in databases of their own; a schema
    with a view is made in one database whatever the groups."""
    monkeypatch.setattr(appgroups, "GROUP_TABLES", 10**6)
    whole = _uses(tmp_path / "whole.db", *_SPREAD)
    monkeypatch.setattr(appgroups, "GROUP_TABLES", 2)
    grouped = _uses(tmp_path / "grouped.db", *_SPREAD)
    assert grouped == whole
    assert {(t, kind) for t, kind, *_ in whole} == {
        ("a", "column"),
        ("b", "index"),
        ("c", "column"),
        ("c", "primary key"),
        ("d", "CHECK constraint"),
        ("e", "generated column"),
        ("f", "index"),
    }
    view = "CREATE VIEW v AS SELECT norm(v) AS n FROM b"
    objects = [("table", "b", "b", _SPREAD[1]), ("view", "v", "v", view)]
    assert appgroups.groups(objects) == [objects]
    with_view = _uses(tmp_path / "view.db", *_SPREAD, view)
    assert with_view == sorted([*whole, ("v", "view", "v", "norm")])
