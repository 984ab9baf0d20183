"""What of a SQLite schema needs the application's own code is found by SQLite itself,
on the schema made again in memory, then placed by each object's text: a name in a
string or a comment, or a function SQLite has, is never taken for one."""

from __future__ import annotations

from pathlib import Path

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
