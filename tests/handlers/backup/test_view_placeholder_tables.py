"""A MariaDB dump whose views' placeholders were made as tables, as older dump programs
write them (`/*!50001 CREATE TABLE v (...) ENGINE=MyISAM */`, then, before the view is
made, `/*!50001 DROP TABLE IF EXISTS v*/`), validates and restores as mariadb-dump's own
shape does: where a view whose SQL names the source database is left out of the
validation's scratch copy, its placeholder stands in its place as a view still, so a
view over it is made and no table the backup does not hold comes back; a restore into
another database refuses that view by name, and one naming no database is restored.
The dump program on PATH writes that shape. Every database is the test's own."""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect

from aishell import commands
from aishell.config.models import Config
from aishell.executor import RunResult
from aishell.policy.approvers import Prompting
from tests.handlers.backup.conftest import Source
from tests.helpers import run_sql, use_target
from tests.services import engine

# What the wrapper does to the dump mariadb-dump writes: each placeholder view of NULLs
# made a MyISAM table of NOT NULL columns, and dropped as a table too before its view.
_OLD_SHAPE = r"""
import re, subprocess, sys

def table(m):
    columns = re.findall(rb"NULL AS (`(?:[^`]|``)+`)", m.group(2))
    body = b",\n".join(b"  " + c + b" tinyint NOT NULL" for c in columns)
    return b"/*!50001 CREATE TABLE " + m.group(1) + b" (\n" + body + b"\n) ENGINE=MyISAM */;"

done = subprocess.run([REAL, *sys.argv[1:]], stdout=subprocess.PIPE)
dump = re.sub(
    rb"/\*!50001 CREATE VIEW (`(?:[^`]|``)+`) AS SELECT\n(.*?) \*/;", table, done.stdout,
    flags=re.S,
)
dump = re.sub(
    rb"(?m)^(/\*!50001 DROP VIEW IF EXISTS (`(?:[^`]|``)+`)\*/;)$(?=\n/\*!50001 SET)",
    rb"/*!50001 DROP TABLE IF EXISTS \2*/;\n\1",
    dump,
)
sys.stdout.buffer.write(dump)
sys.exit(done.returncode)
"""


@pytest.fixture
def old_dump_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mariadb-dump (and mysqldump) on PATH writing placeholders as tables."""
    real = shutil.which("mariadb-dump") or shutil.which("mysqldump")
    assert real is not None
    folder = tmp_path / "old-bin"
    folder.mkdir()
    for name in ("mariadb-dump", "mysqldump"):
        program = folder / name
        program.write_text(f"#!{sys.executable}\nREAL = {real!r}\n{_OLD_SHAPE}")
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def _objects(url: str) -> list[tuple[str, str]]:
    """The tables and views of the database at url."""
    eng = engine(url)
    try:
        with eng.connect() as conn:
            found = inspect(conn)
            return sorted(
                [(t, "table") for t in found.get_table_names()]
                + [(v, "view") for v in found.get_view_names()]
            )
    finally:
        eng.dispose()


def _statements(src: str) -> tuple[str, ...]:
    return (
        "CREATE TABLE t (id INT PRIMARY KEY)",
        "INSERT INTO t VALUES (1), (2)",
        "CREATE FUNCTION f() RETURNS INT RETURN (SELECT count(*) FROM t)",
        f"CREATE VIEW vf AS SELECT `{src}`.f() AS n, id FROM t",
        "CREATE VIEW w AS SELECT n FROM vf",
        "CREATE VIEW v AS SELECT id FROM t",
    )


@pytest.mark.usefixtures("old_dump_program")
def test_a_left_out_view_s_table_placeholder_stays_a_view(
    home: Path, mariadb_source: Source
) -> None:
    url, src = mariadb_source.url, mariadb_source.name
    run_sql(url, *_statements(src))
    config = use_target(home, url)
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    [backup] = commands.list_backups(config, "db")
    written = Path(backup["path"]).read_bytes()
    assert re.search(rb"/\*!50001 CREATE TABLE `vf` \(\n  `n` tinyint NOT NULL", written)
    assert b"/*!50001 DROP TABLE IF EXISTS `vf`*/;" in written
    out = next(s.output for s in done.steps if "not_restored" in (s.output or {}))
    assert out["ok"] is True and out["tables_compared"] == 1, out
    (line,) = [s for s in out["not_restored"] if s.startswith("view ")]
    assert line.startswith("view vf:") and f"'{src}'" in line, out


def _restore(config: Config, backup_id: int, asked: list[str]) -> RunResult:
    typed = Prompting(ask=lambda request: asked.append(str(request)) or "yes")
    return commands.restore(config, backup_id, "to", approver=typed)


@pytest.mark.usefixtures("old_dump_program")
def test_restored_into_another_database_or_refused_naming_the_view(
    home: Path, mariadb_source: Source, mysql_url: str
) -> None:
    url, src = mariadb_source.url, mariadb_source.name
    run_sql(url, *_statements(src))
    config = use_target(home, url, to=mysql_url)
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    [backup] = commands.list_backups(config, "db")
    asked: list[str] = []
    refused = _restore(config, int(backup["id"]), asked)
    assert refused.status == "failed" and asked == []
    assert "view vf" in str(refused.error), refused.error
    assert _objects(mysql_url) == []
    # Without the view naming its database, the dump restores whole: views, not tables.
    run_sql(url, "DROP VIEW w", "DROP VIEW vf", "CREATE VIEW vf AS SELECT f() AS n, id FROM t")
    run_sql(url, "CREATE VIEW w AS SELECT n FROM vf")
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    newest = max(commands.list_backups(config, "db"), key=lambda b: int(b["id"]))
    restored = _restore(config, int(newest["id"]), [])
    assert restored.status == "completed", restored.error
    assert _objects(mysql_url) == [("t", "table"), ("v", "view"), ("vf", "view"), ("w", "view")]
