"""A batch in doubt judged by its archived rows is judged under the settings it read them
under. On PostgreSQL the server writes a value's text by the session's settings: a
batch reads its rows for the archive file only under settings its text is exact in
(exactread.sent_exactly), and a resume that looks for them again, where the server's
word on the batch's transaction is gone (an id too old, a checkpoint without one),
compares the text it reads with the text archived. Read under another IntervalStyle or
lc_monetary, an unchanged row looked changed (the resume stopped saying another session
had changed it); under fewer float digits, a changed row could look unchanged. Now the
resume holds the rows it reads again to the settings the batch archived them under
(kept in its checkpoint) and to the same exactness check, and stops naming the setting.

Each case: one batch deletes and archives rows (a float, an interval, money) into a real
archive file and checkpoints as it does, but without its transaction's id; its COMMIT
never lands (rolled back). The database's default for one setting is changed, and a new
session judges the batch. Time bound: one small table, seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from aishell.errors import StepFailed
from aishell.handlers.purge.archivefile import ArchiveFile
from aishell.handlers.purge.batchsql import BatchSql
from aishell.handlers.purge.batchwork import delete_batch
from aishell.handlers.purge.indoubt import KeyBatch
from aishell.handlers.purge.ownership import write_batch
from aishell.sqltext import quote_identifier
from aishell.targets.searchpath import pinned_engine
from aishell.tool.context import ToolContext
from tests.services import engine, scratch_postgresql

CUTOFF = date(2100, 1, 1)


def _context(conn: Connection) -> ToolContext:
    return ToolContext(
        conn, "postgresql", "db", quote_identifier=lambda n: quote_identifier(conn.dialect, n)
    )


def _batch(ctx: ToolContext, archive: Path) -> BatchSql:
    params = {"table": "logs", "date_column": "at", "archive_file": str(archive)}
    return BatchSql(ctx, params, "id")


@pytest.fixture
def lost_batch(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    """A database whose first batch of logs (ids 1 to 4) was archived and checkpointed,
    its COMMIT lost: (its URL, the archive file, the batch's pending checkpoint)."""
    with scratch_postgresql() as url:
        with engine(url).begin() as conn:
            conn.execute(
                text(
                    "CREATE TABLE logs (id int PRIMARY KEY, at date NOT NULL, f float8, "
                    "iv interval, mo money)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO logs SELECT g, '2000-01-01', 0.1 + g / 3.0, "
                    "'1 year 2 mons -3 days 04:05:06', 1234.5 + g FROM generate_series(1, 4) g"
                )
            )
        archive = tmp_path / "logs.jsonl"
        db = pinned_engine(url)
        try:
            with db.connect() as conn:
                ctx = _context(conn)
                file = ArchiveFile.create(archive)
                values = {"after": None, "upper": 4, "cutoff": CUTOFF, "n": 4}
                count, archived = delete_batch(conn, _batch(ctx, archive), values, True, file)
                assert count == 4 and archived is not None
                pending = {"upper": 4, "rows": count, **archived.pending()}
                write_batch(file, archived)
                conn.rollback()  # its COMMIT never landed
        finally:
            db.dispose()
        yield url, archive, pending


def _judged(url: str, archive: Path, pending: dict[str, Any]) -> bool:
    db = pinned_engine(url)
    try:
        with db.connect() as conn:
            ctx = _context(conn)
            return KeyBatch(
                ctx, _batch(ctx, archive), pending, None, CUTOFF, str(archive)
            ).committed()
    finally:
        db.dispose()


def _default(url: str, name: str, value: str) -> None:
    """The database's default for a setting: every new session of it starts so."""
    database = make_url(url).database
    with engine(url).connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{database}" SET "{name}" = \'{value}\''))


def test_under_the_batch_s_own_settings_it_is_judged_by_its_rows(lost_batch) -> None:
    url, archive, pending = lost_batch
    assert pending.get("archive_settings"), pending
    assert _judged(url, archive, pending) is False  # all there, as archived: not committed


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IntervalStyle", "iso_8601"),
        ("extra_float_digits", "0"),
        ("DateStyle", "SQL, DMY"),
        ("lc_monetary", "C"),
    ],
)
def test_under_other_settings_the_judgement_stops_naming_the_setting(
    lost_batch, name: str, value: str
) -> None:
    url, archive, pending = lost_batch
    _default(url, name, value)
    with pytest.raises(StepFailed) as stopped:
        _judged(url, archive, pending)
    said = str(stopped.value)
    assert f"{name} was {value}" in said, said
    assert "cannot be judged in this session" in said, said
    assert archive.stat().st_size == pending["archive_offset"]  # nothing cut
