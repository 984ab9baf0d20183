"""MariaDB views that name their own database. mariadb-dump writes a view's tables of its
own database without the name (`CREATE VIEW v AS SELECT * FROM src.t` comes out as
`... from t`), so such a view reads the copy's own table wherever it is restored. A
function or sequence named with the database keeps the name (`src`.`f`(),
nextval(`src`.`s`)): such a view is refused by a restore into a database of another
name, and left out of a validation's scratch copy (its placeholder, reading nothing,
stands in its place, so a view over it is still made) and named in `not_restored`.
Every database is the test's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import text

from aishell import commands
from aishell.handlers.backup.qualified import naming_database
from tests.handlers.backup.conftest import Source
from tests.handlers.backup.recorded import record_as_on_disk
from tests.helpers import run_sql, use_target
from tests.services import engine


def _views(url: str, database: str) -> list[tuple[str, str]]:
    """The views of a database with their definitions, as the catalog holds them."""
    eng = engine(url)
    try:
        with eng.connect() as conn:
            sql = (
                "SELECT table_name, view_definition FROM information_schema.views "
                "WHERE table_schema = :db ORDER BY 1"
            )
            return [(r[0], r[1]) for r in conn.execute(text(sql), {"db": database})]
    finally:
        eng.dispose()


def _backed_up(home: Path, source: Source, *statements: str) -> tuple[dict[str, Any], Path]:
    """A verified full backup of the source taken after the statements: its validation's
    output, and its file."""
    url = source.url
    run_sql(url, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1), (2)")
    run_sql(url, *statements)
    config = use_target(home, url)
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    [backup] = commands.list_backups(config, "db")
    out = next(s.output for s in done.steps if "not_restored" in (s.output or {}))
    return out, Path(backup["path"])


def test_a_view_over_its_own_database_s_table_is_written_without_the_name(
    home: Path, mariadb_source: Source
) -> None:
    src = mariadb_source.name
    out, dump = _backed_up(home, mariadb_source, f"CREATE VIEW v AS SELECT * FROM `{src}`.t")
    assert out["ok"] is True and not any("view" in s for s in out["not_restored"]), out
    written = dump.read_bytes()
    assert b"VIEW `v` AS select `t`.`id` AS `id` from `t`" in written
    assert naming_database(dump, src) == []


def test_a_view_calling_its_database_s_function_is_left_out_of_the_copy(
    home: Path, mariadb_source: Source
) -> None:
    """vf calls `src`.f; w reads vf, and is made over vf's placeholder in the copy."""
    url, src = mariadb_source.url, mariadb_source.name
    out, dump = _backed_up(
        home,
        mariadb_source,
        "CREATE FUNCTION f() RETURNS INT RETURN (SELECT count(*) FROM t)",
        f"CREATE VIEW vf AS SELECT `{src}`.f() AS n, id FROM t",
        "CREATE VIEW w AS SELECT n FROM vf",
        "CREATE VIEW plain AS SELECT f() AS n",
    )
    before = _views(url, src)
    assert out["ok"] is True and out["tables_compared"] == 1, out
    (line,) = [s for s in out["not_restored"] if s.startswith("view ")]
    assert line.startswith("view vf:") and f"'{src}'" in line, out
    assert _views(url, src) == before  # the source's views as they were
    assert naming_database(dump, src) == ["view vf"]


def test_a_manifest_without_its_database_leaves_out_only_events(
    home: Path, mariadb_source: Source
) -> None:
    """Taken before manifests named their database: nothing else is known to name it."""
    _out, dump = _backed_up(
        home,
        mariadb_source,
        "CREATE FUNCTION f() RETURNS INT RETURN 7",
        f"CREATE VIEW vf AS SELECT `{mariadb_source.name}`.f() AS n",
    )
    manifest_file = dump.with_name(dump.name + ".manifest.json")
    manifest = json.loads(manifest_file.read_text())
    del manifest["database"]
    manifest_file.write_text(json.dumps(manifest))
    record_as_on_disk(home, dump)
    config = use_target(home, mariadb_source.url)
    done = commands.run_job(config, "backup", {"type": "drill"})
    assert done.status == "completed", done.error
    out = next(s.output for s in done.steps if "not_restored" in (s.output or {}))
    assert out["ok"] is True and out["not_restored"] == [], out
