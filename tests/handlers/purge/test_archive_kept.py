"""An archive table that the purge's own DELETE writes keeps no copy: a foreign key of
the archive's that references the purged table (ON DELETE CASCADE deleted every copy in
the batch's own transaction, and the purge said "21 rows deleted ... each archived"; SET
NULL changes them), or a trigger on the purged table whose code deletes or updates the
archive's rows. Such an archive table is refused when the job is planned, on PostgreSQL,
MariaDB and SQLite (where aishell's sessions act on no foreign key: triggers only). And
what the write reach cannot see (a trigger that builds its SQL as it runs) is found by
each batch before it commits: the batch is rolled back, nothing of it deleted.

Time bound: a few small purges and single batches on the shared servers, seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config
from aishell.errors import StepFailed, TargetError
from aishell.handlers.purge.batchsql import BatchSql
from aishell.handlers.purge.batchwork import delete_batch
from aishell.sqltext import quote_identifier
from aishell.tool.context import ToolContext
from tests.handlers.purge.test_log_cleanup import (
    SMALL,
    _database,
    _events,
    _execute,
    fill,
    job,
    rows_of,
)
from tests.helpers import use_target

ARCHIVE = "events_archive"
_TYPES = {
    "postgresql": ("integer", "timestamp"),
    "mysql": ("integer", "datetime"),
    "sqlite": ("INTEGER", "DATETIME"),
}


def _keyed_archive(dialect: str, action: str) -> str:
    """An archive table of events' columns whose id references events (id)."""
    integer, stamp = _TYPES[dialect]
    key = "PRIMARY KEY" if action == "CASCADE" else "NULL"
    return (
        f"CREATE TABLE {ARCHIVE} (id {integer} {key}, created_at {stamp} NOT NULL, "
        f"payload varchar(64) NOT NULL, CONSTRAINT arch_fk FOREIGN KEY (id) "
        f"REFERENCES events (id) ON DELETE {action})"
    )


def _archive_trigger(dialect: str, does: str) -> list[str]:
    """A trigger on events whose code deletes (or updates) the archive's copy."""
    body = {
        "delete": f"DELETE FROM {ARCHIVE} WHERE id = OLD.id",
        "update": f"UPDATE {ARCHIVE} SET payload = 'gone' WHERE id = OLD.id",
    }[does]
    if dialect == "postgresql":
        return [
            "CREATE FUNCTION drop_copy() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {body}; RETURN OLD; END $$",
            "CREATE TRIGGER drop_copy AFTER DELETE ON events FOR EACH ROW "
            "EXECUTE FUNCTION drop_copy()",
        ]
    if dialect == "mysql":
        return [f"CREATE TRIGGER drop_copy AFTER DELETE ON events FOR EACH ROW {body}"]
    return [f"CREATE TRIGGER drop_copy AFTER DELETE ON events BEGIN {body}; END"]


def _plain_archive(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        _events(MetaData(), ARCHIVE).create(conn)
    engine.dispose()


@pytest.fixture
def target(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[Config, str]]:
    with _database(request.param, home) as url:
        fill(url)
        yield use_target(home, url), url


REACHED = [
    ("postgresql", "CASCADE", "deletes rows of it through a foreign key's action"),
    ("postgresql", "SET NULL", "updates rows of it through a foreign key's action"),
    ("postgresql", "delete", "deletes rows of it through the code of a trigger"),
    ("postgresql", "update", "updates rows of it through the code of a trigger"),
    ("mysql", "CASCADE", "deletes rows of it through a foreign key's action"),
    ("mysql", "SET NULL", "updates rows of it through a foreign key's action"),
    ("mysql", "delete", "deletes rows of it through the code of a trigger"),
    ("mysql", "update", "updates rows of it through the code of a trigger"),
    ("sqlite", "delete", "deletes rows of it through the code of a trigger"),
    ("sqlite", "update", "updates rows of it through the code of a trigger"),
]


def _reaching_archive(url: str, how: str) -> None:
    """The archive table, and what makes the purge's DELETE write it: its foreign key's
    action (CASCADE, SET NULL) or a trigger of the purged table's (delete, update)."""
    dialect = make_url(url).get_backend_name()
    if how in ("CASCADE", "SET NULL"):
        _execute(url, _keyed_archive(dialect, how))
    else:
        _plain_archive(url)
        _execute(url, *_archive_trigger(dialect, how))


@pytest.mark.parametrize(
    ("target", "how", "said"), REACHED, indirect=["target"], ids=[f"{d}-{h}" for d, h, _ in REACHED]
)
def test_an_archive_table_the_delete_writes_is_refused_when_planned(target, how, said):
    config, url = target
    _reaching_archive(url, how)
    before = rows_of(url)

    with pytest.raises(TargetError) as refused:
        commands.run_job(config, "log_cleanup", job(archive_to=f"table:{ARCHIVE}", **SMALL))

    line = str(refused.value)
    assert line.startswith(
        f"archive table {ARCHIVE} cannot keep a purge's copies: the DELETE from events {said}"
    ), line
    assert "archive into another table or to a file" in line and "\n" not in line
    if how == "CASCADE":  # the key is named, as the estimate names it
        assert f"{ARCHIVE}.id (ON DELETE CASCADE, arch_fk)" in line, line
    assert rows_of(url) == before and rows_of(url, ARCHIVE) == {}
    assert commands.list_runs(config) == []  # refused before a run began


@pytest.mark.parametrize("target", ["postgresql"], indirect=True)
def test_a_trigger_whose_sql_is_made_as_it_runs_is_caught_by_the_batch(target, home):
    """The write reach cannot read what a function builds at run time: the purge waits
    for a person's yes to that unknown code; given, its first batch finds its copies gone
    and is rolled back. Before, the purge said every row archived; the archive was empty."""
    config, url = target
    _plain_archive(url)
    _execute(
        url,
        "CREATE FUNCTION drop_copy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"EXECUTE 'DELETE FROM ' || '{ARCHIVE} WHERE id = $1' USING OLD.id; RETURN OLD; "
        "END $$",
        "CREATE TRIGGER drop_copy AFTER DELETE ON events FOR EACH ROW EXECUTE FUNCTION drop_copy()",
    )
    before = rows_of(url)
    purge = job(archive_to=f"table:{ARCHIVE}", **SMALL)
    waiting = commands.run_job(config, "log_cleanup", purge)
    assert waiting.status == "waiting_approval", waiting.error
    commands.decide_steps(config, waiting.run_id, "approved", step=1)

    result = commands.resume_run(config, waiting.run_id)

    step = next(s for s in result.steps if s.tool == "delete_old_records")
    assert result.status == "failed" and step.status == "failed", step.output
    assert step.error.startswith('a batch\'s DELETE from "events" deleted or updated '), step.error
    assert f'rows of archive table "{ARCHIVE}", in the batch\'s own transaction' in step.error
    assert "the batch was rolled back, none of its rows deleted" in step.error
    assert rows_of(url) == before and rows_of(url, ARCHIVE) == {}


def _one_batch(url: str, **extra: Any) -> None:
    """The first batch of a purge of events (ids 1 to 40, every date) into the archive
    table, as the walk sends it, bypassing the checks made when the job is planned: what
    the batch itself finds, with the write reach blind."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = ToolContext(
                conn,
                engine.dialect.name,
                "db",
                quote_identifier=lambda n: quote_identifier(conn.dialect, n),
            )
            params = {"table": "events", "date_column": "created_at", "archive_table": ARCHIVE}
            batch = BatchSql(ctx, params, "id", copied=["id", "created_at", "payload"])
            for sql in extra.get("session", []):
                conn.execute(text(sql))
            conn.commit()
            values = {"after": None, "upper": 40, "cutoff": datetime(2999, 1, 1), "n": 40}
            delete_batch(conn, batch, values, True, None)
            conn.commit()
    finally:
        engine.dispose()


SECOND_LINE = [
    ("postgresql", "CASCADE"),
    ("postgresql", "SET NULL"),
    ("mysql", "CASCADE"),
    ("mysql", "SET NULL"),
    ("sqlite", "delete"),
]


@pytest.mark.parametrize(
    ("target", "how"), SECOND_LINE, indirect=["target"], ids=[f"{d}-{h}" for d, h in SECOND_LINE]
)
def test_a_batch_whose_copies_its_delete_removed_or_changed_is_rolled_back(target, how):
    _config, url = target
    _reaching_archive(url, how)
    before = rows_of(url)

    with pytest.raises(StepFailed) as failed:
        _one_batch(url)

    line = str(failed.value)
    assert "a batch's DELETE from " in line and "the batch was rolled back" in line, line
    assert "\n" not in line
    assert rows_of(url) == before and rows_of(url, ARCHIVE) == {}


@pytest.mark.parametrize("target", ["postgresql", "mysql", "sqlite"], indirect=True)
def test_a_batch_into_an_archive_nothing_else_writes_commits(target):
    """The checks of a batch pass where its copies are kept: all 40 rows are archived."""
    _config, url = target
    _plain_archive(url)
    before = rows_of(url)

    _one_batch(url)

    assert rows_of(url, ARCHIVE) == {i: at for i, at in before.items() if i <= 40}
    assert set(rows_of(url)) == {i for i in before if i > 40}


@pytest.mark.parametrize("target", ["postgresql"], indirect=True)
def test_a_server_that_counts_no_row_changes_fails_the_batch_closed(target):
    """With track_counts off the server cannot say what a batch's DELETE did to the
    archive table: the batch is rolled back rather than taken on trust."""
    _config, url = target
    _plain_archive(url)
    _execute(url, f'ALTER DATABASE "{make_url(url).database}" SET track_counts = off')
    before = rows_of(url)

    with pytest.raises(StepFailed) as failed:
        _one_batch(url)

    assert str(failed.value).startswith("the server counts no row changes (track_counts is off)")
    assert rows_of(url) == before and rows_of(url, ARCHIVE) == {}


def _earlier_purge(url: str) -> dict[int, Any]:
    """The archive table holding an earlier purge's 40 rows, below every key the table
    holds now: in a first batch's key range, which has no lower end."""
    _plain_archive(url)
    _execute(
        url,
        f"INSERT INTO {ARCHIVE} (id, created_at, payload) "
        "SELECT id - 1000, created_at, payload FROM events WHERE id <= 40",
    )
    return rows_of(url, ARCHIVE)


@pytest.mark.parametrize("target", ["mysql", "sqlite"], indirect=True)
def test_copies_removed_are_seen_past_an_earlier_purges_rows_in_the_range(target):
    """The batch counts what the range held before its copy: an earlier purge's rows
    there stand in for no copy its DELETE removed. Before, the range held 40 rows after
    the batch (the earlier purge's), as many as it copied, and the batch committed with
    none of its own copies kept."""
    _config, url = target
    earlier = _earlier_purge(url)
    _execute(url, *_archive_trigger(make_url(url).get_backend_name(), "delete"))
    before = rows_of(url)

    with pytest.raises(StepFailed) as failed:
        _one_batch(url)

    line = str(failed.value)
    assert "left 0 rows, of the 40 it copied, in the key range of" in line, line
    assert "the batch was rolled back" in line and "\n" not in line
    assert rows_of(url) == before and rows_of(url, ARCHIVE) == earlier


@pytest.mark.parametrize("target", ["mysql", "sqlite"], indirect=True)
def test_a_batch_into_an_archive_with_an_earlier_purges_rows_commits(target):
    _config, url = target
    earlier = _earlier_purge(url)
    before = rows_of(url)

    _one_batch(url)

    kept = {i: at for i, at in before.items() if i <= 40}
    assert rows_of(url, ARCHIVE) == {**earlier, **kept}
    assert set(rows_of(url)) == {i for i in before if i > 40}
