"""A MariaDB backup of a database whose triggers or routines name that database in their
SQL (`CREATE TRIGGER src.tr ... ON src.t`) validates: the validation's scratch copy is
built without them, each named in `not_restored` with why, and the restore into the
scratch database never reaches the source, whose objects and rows stay as they were.
Every database is the test's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from aishell import commands
from tests.handlers.backup.conftest import Source
from tests.helpers import run_sql, use_target
from tests.services import engine

# Every trigger, routine, event and table of a database with what a change would move.
_OBJECTS = (
    "SELECT 'trigger', trigger_name, CONCAT(action_statement, '|', created) "
    "FROM information_schema.triggers WHERE trigger_schema = :db "
    "UNION ALL SELECT routine_type, routine_name, CONCAT(routine_definition, '|', created, "
    "'|', last_altered) FROM information_schema.routines WHERE routine_schema = :db "
    "UNION ALL SELECT 'event', event_name, CONCAT(event_definition, '|', created, '|', "
    "last_altered) FROM information_schema.events WHERE event_schema = :db "
    "UNION ALL SELECT table_type, table_name, CONCAT(COALESCE(create_time, ''), '|', "
    "table_rows) FROM information_schema.tables WHERE table_schema = :db "
    "ORDER BY 1, 2"
)


def _state(url: str, database: str) -> tuple[list[Any], list[Any]]:
    """The database's objects as the catalog shows them, and the rows of its table t."""
    eng = engine(url)
    try:
        with eng.connect() as conn:
            objects = [tuple(r) for r in conn.execute(text(_OBJECTS), {"db": database})]
            rows = [tuple(r) for r in conn.execute(text("SELECT * FROM t ORDER BY id"))]
            return objects, rows
    finally:
        eng.dispose()


def _validated(home: Path, source: Source, *statements: str) -> dict[str, Any]:
    """The validation's output of a verified full backup of the source taken after the
    statements; the source's objects and rows the same after it as before."""
    url, src = source.url, source.name
    run_sql(url, "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(200))", *statements)
    before = _state(url, src)
    done = commands.run_job(use_target(home, url), "backup", {"type": "full"})
    assert done.status == "completed", done.error
    assert _state(url, src) == before  # the scratch restore never touched the source
    return next(s.output for s in done.steps if "not_restored" in (s.output or {}))


def test_a_trigger_naming_its_database_is_left_out_of_the_copy(
    home: Path, mariadb_source: Source
) -> None:
    src = mariadb_source.name
    out = _validated(
        home,
        mariadb_source,
        f"CREATE TRIGGER `{src}`.tr BEFORE INSERT ON `{src}`.t "
        "FOR EACH ROW SET NEW.note = 'from tr'",
        "INSERT INTO t VALUES (1, 'one'), (2, 'two')",
    )
    assert _state(mariadb_source.url, src)[1] == [(1, "from tr"), (2, "from tr")]
    assert out["ok"] is True and out["tables_compared"] == 1, out
    (line,) = [s for s in out["not_restored"] if "trigger tr" in s]
    assert f"'{src}'" in line, out


def test_routines_naming_it_are_left_out_and_the_rest_restored(
    home: Path, mariadb_source: Source
) -> None:
    """A function made as `src`.f and a procedure whose body reads src.t are left out; a
    trigger and a procedure that name no database are restored and named nowhere."""
    src = mariadb_source.name
    out = _validated(
        home,
        mariadb_source,
        f"CREATE FUNCTION `{src}`.f() RETURNS INT RETURN (SELECT count(*) FROM `{src}` . t)",
        f"CREATE PROCEDURE p() BEGIN DELETE FROM {src}.t; END",
        "CREATE PROCEDURE clean() BEGIN SELECT count(*), 'a.b' FROM t; END",
        "CREATE TRIGGER plain BEFORE INSERT ON t FOR EACH ROW SET NEW.note = NEW.note",
        "INSERT INTO t VALUES (1, 'one')",
    )
    assert out["ok"] is True and out["tables_compared"] == 1, out
    left = " ".join(out["not_restored"])
    assert "function f" in left and "procedure p" in left, out
    assert "clean" not in left and "plain" not in left, out
