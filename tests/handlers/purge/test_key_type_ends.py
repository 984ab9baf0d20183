"""Keys at the very ends of their type. An integer key's walk starts just below the
table's least key: at -2^63, the least of SQLite's INTEGER (and rowid), that bound is
-2^63 - 1, which SQLite's driver binds as no integer (OverflowError: every such purge
failed, an internal error) and PostgreSQL read as a numeric, against which no index of
the key serves. No key lies below -2^63: such a walk's first batch has no lower bound.

Each case purges a real table whose old and kept rows sit at both ends of the type, in
batches of two: every old row deleted once, every kept row left, the archive (a file or
a table) holding exactly the rows deleted. On SQLite: an INTEGER PRIMARY KEY (the rowid
itself), a table WITHOUT ROWID, a table walked by its rowid (no key of its own, the
rowid given by hand), and one with a UNIQUE NOT NULL column (walked by its rowid too).
Time bound: small tables, seconds each."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.handlers.purge.batchsql import BatchSql
from aishell.handlers.purge.indoubt import KeyBatch
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from aishell.sqltext import quote_identifier
from aishell.tool.context import ToolContext
from tests.handlers.purge.test_purge_shows_what_it_reads import _shape as _shown_shape
from tests.helpers import scratch_target
from tests.services import engine

LOW, HIGH = -(2**63), 2**63 - 1
OLD = [LOW, LOW + 1, -5, 7, HIGH - 1, HIGH]
# Kept rows between and beside them (and enough that max_share allows the purge).
YOUNG = [LOW + 2, 0, 8, HIGH - 2, *range(100, 110)]

COLUMNS = "at TEXT NOT NULL, note TEXT"
SQLITE_TABLES = {
    "integer_primary_key": f"CREATE TABLE logs (id INTEGER PRIMARY KEY, {COLUMNS})",
    "without_rowid": f"CREATE TABLE logs (id INTEGER PRIMARY KEY, {COLUMNS}) WITHOUT ROWID",
    "rowid": f"CREATE TABLE logs ({COLUMNS})",
    "unique": f"CREATE TABLE logs (id INTEGER NOT NULL UNIQUE, {COLUMNS})",
}


# A statement that reads or writes the purged table itself.
_OF_LOGS = re.compile(r"""\b(FROM|INTO)\s+[`"]?logs[`"]?(\s|$|\))""", re.IGNORECASE)


def _shape(sql: str) -> str:
    # MariaDB's statements hold their values inline: a negative one is a value too.
    return _shown_shape(sql).replace("-?", "?")


def _rows() -> list[dict[str, Any]]:
    return [{"k": k, "at": "2000-01-01", "note": f"old {k}"} for k in OLD] + [
        {"k": k, "at": "2999-01-01", "note": f"young {k}"} for k in YOUNG
    ]


def _purged(config: Any, archive: str | None, home: Path) -> dict[str, Any]:
    job = {"table": "logs", "date_column": "at", "retention_days": 30, "walk": "keys"}
    # Two rows a batch: the ends are reached by several batches, and a bound on a hang.
    job.update(batch_size=2, max_batch_size=2, run_time_seconds=30)
    if archive == "file":
        job["archive_to"] = f"file:{home / 'archive' / 'logs.jsonl'}"
    elif archive == "table":
        job["archive_to"] = "table:logs_old"
    result = commands.run_job(
        config, "log_cleanup", job, approver=PreApproved(up_to=RiskLevel.HIGH)
    )
    purge = next(s for s in result.steps if s.tool == "delete_old_records")
    assert purge.status == "succeeded", purge.error
    assert purge.output["complete"], purge.output["stopped_by"]
    assert purge.output["rows_deleted"] == len(OLD)
    # Its first batch's statements, without a lower bound, were shown as every other's.
    steps = commands.show_run(config, result.run_id)["steps"]
    (step,) = [s for s in steps if s["tool"] == purge.tool]
    shown = {_shape(sql) for sql in step["sql"]}
    sent = [
        s["sql"]
        for s in commands.run_statements(config, result.run_id)
        if s["step_index"] == step["index"] and s["attempt"] >= 1 and _OF_LOGS.search(s["sql"])
    ]
    assert [sql for sql in sent if _shape(sql) not in shown] == [], sorted(shown)
    return purge.output


def _archived_notes(home: Path, archive: str | None, table_notes: list[str]) -> list[str]:
    if archive == "file":
        path = home / "archive" / "logs.jsonl"
        return sorted(json.loads(line)["note"] for line in path.read_text().splitlines())
    return sorted(table_notes)


@pytest.mark.parametrize("archive", ["file", "table", None])
@pytest.mark.parametrize("shape", list(SQLITE_TABLES))
def test_sqlite_keys_at_both_ends_are_purged_once(
    home: Path, shape: str, archive: str | None
) -> None:
    with scratch_target("sqlite", home) as (config, _url):
        db = home / "target.db"
        with sqlite3.connect(db) as conn:
            conn.execute(SQLITE_TABLES[shape])
            key = "rowid" if shape == "rowid" else "id"
            sql = f"INSERT INTO logs ({key}, at, note) VALUES (:k, :at, :note)"
            conn.executemany(sql, _rows())
            if archive == "table":
                conn.execute("CREATE TABLE logs_old AS SELECT * FROM logs WHERE 0")
        _purged(config, archive, home)
        with sqlite3.connect(db) as conn:
            left = sorted(r[0] for r in conn.execute("SELECT note FROM logs"))
            copies = (
                [r[0] for r in conn.execute("SELECT note FROM logs_old")]
                if archive == "table"
                else []
            )
    assert left == sorted(f"young {k}" for k in YOUNG)
    if archive:
        assert _archived_notes(home, archive, copies) == sorted(f"old {k}" for k in OLD)


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_signed_64_bit_key_from_its_least_value_is_purged_once(home: Path, dialect: str) -> None:
    with scratch_target(dialect, home) as (config, url):
        db = engine(url)
        try:
            with db.begin() as conn:
                conn.execute(
                    text("CREATE TABLE logs (id bigint PRIMARY KEY, at date NOT NULL, note text)")
                )
                conn.execute(text("INSERT INTO logs VALUES (:k, :at, :note)"), _rows())
            _purged(config, "file", home)
            with db.connect() as conn:
                left = sorted(conn.execute(text("SELECT note FROM logs")).scalars())
        finally:
            db.dispose()
    assert left == sorted(f"young {k}" for k in YOUNG)
    assert _archived_notes(home, "file", []) == sorted(f"old {k}" for k in OLD)


@pytest.mark.parametrize("committed", [True, False])
def test_a_first_batch_in_doubt_from_the_least_key_is_judged(home: Path, committed: bool) -> None:
    """A crash with the walk's first batch in doubt, its range starting below -2^63: the
    resume judges it by the old rows of that range (no archive), bound without a lower
    end as the batch was; before, binding -2^63 - 1 failed there too."""
    db = home / "target.db"
    with sqlite3.connect(db) as conn:
        conn.execute(SQLITE_TABLES["integer_primary_key"])
        conn.executemany("INSERT INTO logs (id, at, note) VALUES (:k, :at, :note)", _rows())
        if committed:
            conn.execute("DELETE FROM logs WHERE id <= :u AND at < '2100-01-01'", {"u": LOW + 1})
    sqlite = create_engine(f"sqlite:///{db}")
    try:
        with sqlite.connect() as conn:
            ctx = ToolContext(
                conn, "sqlite", "db", quote_identifier=lambda n: quote_identifier(conn.dialect, n)
            )
            batch = BatchSql(ctx, {"table": "logs", "date_column": "at"}, "id")
            pending = {"upper": LOW + 1, "rows": 2}
            judged = KeyBatch(ctx, batch, pending, LOW - 1, "2100-01-01", None)
            assert judged.committed() is committed
    finally:
        sqlite.dispose()
