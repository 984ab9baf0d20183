"""An archive table's columns hold what the purged table's hold, unchanged. On a MariaDB
server whose sql_mode is not strict, an archive column of another character set or
collation, or NOT NULL where the purged column takes NULL, passed the shape check and
the copies were changed without a word ('漢字' became '??', NULL became ''): such a
column is refused when the job is planned, naming it and both definitions, and a batch
whose copy left a warning all the same is rolled back. On PostgreSQL, which converts no
value, an archive column that refuses NULL where the purged one takes it is refused too
(its batch would fail midway). And the hint for a missing archive table gives the
statement of the target's own engine, both names quoted as it needs them.

Time bound: small tables on the shared servers, and one private MariaDB (a few seconds
to start) for a server whose global sql_mode is not strict.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config
from aishell.errors import StepFailed, TargetError
from tests.handlers.purge.test_archive_kept import ARCHIVE, _one_batch
from tests.handlers.purge.test_log_cleanup import _database, _execute, fill, rows_of
from tests.helpers import use_target
from tests.private_servers import private_mariadb


def _all(url: str, table: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
    engine.dispose()
    return found


# The tables: messages of two scripts, every third one NULL.
_LOGS = (
    "CREATE TABLE logs (id int PRIMARY KEY, created_at datetime NOT NULL, "
    "msg varchar(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL, KEY (created_at))"
)
_FILL = (
    "INSERT INTO logs SELECT seq, NOW() - INTERVAL seq DAY, CASE WHEN seq % 3 = 0 "
    "THEN NULL ELSE CONCAT('漢字 row ', seq) END FROM seq_1_to_60"
)
_SOURCE = "varchar(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL"
# The archive's msg as created, and the refusal's "column msg is ..., not ...".
MISMATCHED = {
    "charset": (
        "varchar(50) CHARACTER SET latin1 NULL",
        "varchar(50) CHARACTER SET latin1 COLLATE latin1_swedish_ci, not "
        "varchar(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
    ),
    "collation": (
        "varchar(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL",
        "varchar(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, not "
        "varchar(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
    ),
    "not null": (
        "varchar(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL",
        "varchar(50) NOT NULL, not varchar(50) NULL",
    ),
    "all": (
        "varchar(50) CHARACTER SET latin1 NOT NULL",
        "varchar(50) CHARACTER SET latin1 COLLATE latin1_swedish_ci NOT NULL, not "
        "varchar(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL",
    ),
}


@pytest.fixture
def mysql_target(home: Path) -> Iterator[tuple[Config, str]]:
    with _database("mysql", home) as url:
        yield use_target(home, url), url


def _logs_and_archive(url: str, msg: str) -> None:
    _execute(
        url,
        _LOGS,
        _FILL,
        f"CREATE TABLE {ARCHIVE} (id int PRIMARY KEY, created_at datetime NOT NULL, msg {msg})",
    )


def _log_job() -> dict[str, object]:
    return {"table": "logs", "retention_days": 40, "archive_to": f"table:{ARCHIVE}"}


@pytest.mark.parametrize("what", list(MISMATCHED))
def test_mariadb_an_archive_column_defined_otherwise_is_refused(mysql_target, what):
    config, url = mysql_target
    created, shown = MISMATCHED[what]
    _logs_and_archive(url, created)
    before = _all(url, "logs")

    with pytest.raises(TargetError) as refused:
        commands.run_job(config, "log_cleanup", _log_job())

    line = str(refused.value)
    assert f"column msg is {shown} as in the purged table" in line, line
    assert line.startswith(f"archive table {ARCHIVE} runs code or changes values") and (
        "\n" not in line
    )
    assert _all(url, "logs") == before and _all(url, ARCHIVE) == []


def test_mariadb_an_archive_column_that_takes_null_where_the_source_does_not_is_taken(
    mysql_target,
):
    """It changes no value: the purge archives every old row as it was."""
    config, url = mysql_target
    _execute(
        url,
        _LOGS.replace("utf8mb4_general_ci NULL", "utf8mb4_general_ci NOT NULL"),
        _FILL.replace("THEN NULL", "THEN 'none'"),
        f"CREATE TABLE {ARCHIVE} (id int PRIMARY KEY, created_at datetime NULL, msg {_SOURCE})",
    )
    before = {row[0]: row for row in _all(url, "logs")}

    result = commands.run_job(config, "log_cleanup", _log_job())

    assert result.status == "completed", result.error
    archived = _all(url, ARCHIVE)
    assert archived and all(before[row[0]] == row for row in archived)


def test_mariadb_not_strict_a_latin1_not_null_archive_is_refused_and_nothing_changes(home):
    """On a server whose global sql_mode is '' (the legacy default), a purge into a latin1
    NOT NULL archive column said 21 rows archived, of which '漢字' came back '??' and
    NULL ''."""
    with private_mariadb("--sql-mode=") as (url, _stop, _start):
        config = use_target(home, url)
        _logs_and_archive(url, "varchar(50) CHARACTER SET latin1 NOT NULL")
        before = _all(url, "logs")

        with pytest.raises(TargetError) as refused:
            commands.run_job(config, "log_cleanup", _log_job())

        assert "column msg is varchar(50) CHARACTER SET latin1 COLLATE " in str(refused.value)
        assert _all(url, "logs") == before and _all(url, ARCHIVE) == []


@pytest.mark.parametrize("column", ["CHARACTER SET latin1 NOT NULL", "CHARACTER SET latin1"])
def test_mariadb_a_copy_that_changed_values_rolls_its_batch_back(home, column):
    """A batch's session whose sql_mode is not strict, copying into a column the shape
    check did not see (it is altered while a purge runs): the copy's warning rolls the
    batch back before its DELETE, every row still in the table, nothing archived."""
    with _database("mysql", home) as url:
        fill(url)
        _execute(
            url,
            "ALTER TABLE events MODIFY payload varchar(64) CHARACTER SET utf8mb4 NULL",
            "UPDATE events SET payload = CASE WHEN id % 2 = 0 THEN NULL ELSE '漢字' END "
            "WHERE id <= 40",
            f"CREATE TABLE {ARCHIVE} LIKE events",
            f"ALTER TABLE {ARCHIVE} MODIFY payload varchar(64) {column}",
        )
        before = rows_of(url)

        with pytest.raises(StepFailed) as failed:
            _one_batch(url, session=["SET SESSION sql_mode = ''"])

        line = str(failed.value)
        assert line.startswith(f"copying a batch into archive table `{ARCHIVE}` changed what")
        assert "the batch was rolled back, none of its rows deleted" in line and "\n" not in line
        assert rows_of(url) == before and rows_of(url, ARCHIVE) == {}


def test_postgresql_an_archive_column_that_refuses_null_the_source_holds_is_refused(home, pg_url):
    config = use_target(home, pg_url)
    _execute(
        pg_url,
        "CREATE TABLE logs (id int PRIMARY KEY, created_at timestamp NOT NULL, msg text)",
        "INSERT INTO logs SELECT g, now() - g * interval '1 day', "
        "CASE WHEN g % 3 = 0 THEN NULL ELSE 'row ' || g END FROM generate_series(1, 60) g",
        f"CREATE TABLE {ARCHIVE} (id int, created_at timestamp NOT NULL, msg text NOT NULL)",
    )

    with pytest.raises(TargetError) as refused:
        commands.run_job(config, "log_cleanup", _log_job())

    assert str(refused.value).startswith(
        f"archive table {ARCHIVE} refuses NULL in column msg, where logs takes it"
    ), refused.value
    assert _all(pg_url, ARCHIVE) == []


@pytest.mark.parametrize(
    ("dialect", "made", "other"),
    [
        ("postgresql", 'CREATE TABLE "My Logs Archive" (LIKE "My Logs")', "`"),
        ("mysql", "CREATE TABLE `My Logs Archive` LIKE `My Logs`", '"'),
    ],
)
def test_the_hint_for_a_missing_archive_is_the_targets_own_statement(home, dialect, made, other):
    """Both names quoted as the target needs them, and no other engine's statement: the
    example runs as it is shown."""
    stamp = "timestamp" if dialect == "postgresql" else "datetime"
    with _database(dialect, home) as url:
        q = '"' if dialect == "postgresql" else "`"
        _execute(url, f"CREATE TABLE {q}My Logs{q} (id int PRIMARY KEY, {q}Created At{q} {stamp})")
        config = use_target(home, url)
        given = {"table": "My Logs", "date_column": "Created At", "retention_days": 30}

        with pytest.raises(TargetError) as missing:
            commands.run_job(
                config, "log_cleanup", {**given, "archive_to": "table:My Logs Archive"}
            )

        line = str(missing.value)
        assert line.endswith(f"in the same order (e.g. {made})"), line
        assert other not in line and "PostgreSQL" not in line and "MySQL" not in line
        _execute(url, made)  # it runs
        result = commands.run_job(
            config, "log_cleanup", {**given, "archive_to": "table:My Logs Archive"}, dry_run=True
        )
        assert result.status == "completed", result.error
