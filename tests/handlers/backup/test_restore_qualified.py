"""A MariaDB backup of a database whose triggers, views, routines or events name that
database in their SQL (`CREATE TRIGGER src.tr ... ON src.t`, a view over `src.t`) is
refused when restored into a database of another name, in one line naming the objects,
before anyone is asked and with nothing restored: those statements would make the objects
in the source database, or fail part way. The name inside rows counts for nothing, and a
restore into a database of the same name goes ahead. Every database is the test's own."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

from sqlalchemy import inspect

from aishell import commands
from aishell.config.models import Config
from aishell.executor import RunResult
from aishell.handlers.backup.qualified import naming_database
from aishell.policy.approvers import Prompting
from tests.handlers.backup.conftest import Source
from tests.handlers.backup.test_backup_lock_wait import verified_full_backup
from tests.helpers import run_sql, use_target
from tests.services import engine, scratch_mysql


def _backup(home: Path, source: Source, *statements: str, **others: str) -> tuple[Config, int]:
    """A full backup of the source (target `db`) after the statements, recorded as
    verified."""
    url = source.url
    run_sql(url, "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(200))", *statements)
    config = use_target(home, url, **others)
    taken = verified_full_backup(config)
    return config, int(taken["id"])


def _restore(config: Config, backup_id: int, asked: list[str], to: str = "to") -> RunResult:
    def ask(request: object) -> str:
        asked.append(str(request))
        return "yes"

    typed = Prompting(ask=ask)
    return commands.restore(config, backup_id, to, approver=typed)


def _tables(url: str) -> list[str]:
    """The tables and views of the database at url."""
    eng = engine(url)
    try:
        with eng.connect() as conn:
            found = inspect(conn)
            return sorted(found.get_table_names() + found.get_view_names())
    finally:
        eng.dispose()


def test_a_trigger_naming_its_database_is_refused_into_another(
    home: Path, mariadb_source: Source, mysql_url: str
) -> None:
    src, to = mariadb_source.name, mysql_url
    config, backup_id = _backup(
        home,
        mariadb_source,
        f"CREATE TRIGGER `{src}`.tr BEFORE INSERT ON `{src}`.t FOR EACH ROW SET NEW.note = 'x'",
        f"INSERT INTO t VALUES (1, '{src}.t is named in a row')",
        to=to,
    )
    asked: list[str] = []
    refused = _restore(config, backup_id, asked)
    assert refused.status == "failed"
    assert asked == []
    error = str(refused.error)
    assert "trigger tr" in error and f"'{src}'" in error, error
    assert "\n" not in error
    assert _tables(to) == []  # nothing restored
    # The same dump gzip'd reads the same; the row naming the database is not read.
    dump = Path(commands.list_backups(config, "db")[0]["path"])
    zipped = home / "dump.sql.gz"
    zipped.write_bytes(gzip.compress(dump.read_bytes()))
    assert naming_database(zipped, src) == naming_database(dump, src) == ["trigger tr"]


def test_routines_and_events_naming_it_are_named_with_their_kind(
    home: Path, mariadb_source: Source, mysql_url: str
) -> None:
    """A view over `src`.`t` is dumped without the name (the server prints a view's
    tables unqualified in their own database), so it is not among them."""
    src, to = mariadb_source.name, mysql_url
    config, backup_id = _backup(
        home,
        mariadb_source,
        f"CREATE VIEW v AS SELECT id FROM `{src}`.`t`",
        f"CREATE PROCEDURE p() BEGIN SELECT count(*) FROM {src}.t; END",
        f"CREATE FUNCTION `{src}`.f() RETURNS INT RETURN (SELECT count(*) FROM `{src}` . t)",
        f"CREATE EVENT e ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM `{src}`.t",
        "CREATE PROCEDURE clean() BEGIN SELECT count(*), 'a.b' FROM t; END",
        to=to,
    )
    asked: list[str] = []
    refused = _restore(config, backup_id, asked)
    assert refused.status == "failed" and asked == []
    error = str(refused.error)
    for named in ("procedure p", "function f", "event e"):
        assert named in error, error
    assert "clean" not in error and "view v" not in error
    assert _tables(to) == []


def test_the_name_in_rows_or_in_another_database_of_the_same_name_restores(
    home: Path, mariadb_source: Source, mysql_url: str
) -> None:
    """Rows that hold the name are data; and a restore into a database of the source's
    name (here the source itself, emptied) runs the statements as they were meant."""
    name = f"aishell_{uuid.uuid4().hex[:10]}"
    src, to = mariadb_source.name, mysql_url
    config, backup_id = _backup(
        home,
        mariadb_source,
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.note = NEW.note",
        f"INSERT INTO t VALUES (1, 'CREATE TRIGGER `{src}`.x ON {src}.t')",
        "CREATE VIEW v AS SELECT id FROM t",
        to=to,
    )
    done = _restore(config, backup_id, [])
    assert done.status == "completed", done.error
    assert _tables(to) == ["t", "v"]
    with scratch_mysql(name=name) as url:
        config, backup_id = _backup(
            home,
            Source(url, name),
            f"CREATE TRIGGER `{name}`.tr BEFORE INSERT ON `{name}`.t "
            "FOR EACH ROW SET NEW.note = 'x'",
        )
        run_sql(url, "DROP TRIGGER tr", "DROP TABLE t")
        done = _restore(config, backup_id, [], to="db")
        assert done.status == "completed", done.error
        assert _tables(url) == ["t"]
