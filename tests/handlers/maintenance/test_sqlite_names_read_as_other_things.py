"""SQLite reads some names as something else before a table: ANALYZE "temp" is the temp
schema, REINDEX "nocase" the collation, PRAGMA integrity_check("10") (or "1st", "-1z")
a limit on the problems it reports for the whole database. Each step names a table or
index so that it is that table or index."""

import sqlite3
from pathlib import Path

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.helpers import corrupt_index


def _sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def _analyzed(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT DISTINCT tbl FROM sqlite_stat1")}
    except sqlite3.OperationalError:  # no ANALYZE yet made the table
        return set()
    finally:
        conn.close()


def test_a_table_named_like_a_schema_is_analyzed_and_nothing_else(
    config: Config, demo_db: Path
) -> None:
    _sql(
        demo_db,
        'CREATE TABLE "temp" (id INTEGER PRIMARY KEY, v INTEGER)',
        'CREATE INDEX temp_v ON "temp" (v)',
        'INSERT INTO "temp" (v) VALUES (1), (2)',
        'CREATE TABLE "main" (id INTEGER PRIMARY KEY, v INTEGER)',
        'CREATE INDEX main_v ON "main" (v)',
        'INSERT INTO "main" (v) VALUES (1), (2)',
    )
    before = _analyzed(demo_db)
    for table in ("temp", "main"):
        job = {"type": "quick", "tables": [table]}
        result = commands.run_job(config, "maintenance", job, approver=PreApproved())
        assert result.status == "completed", result.error
    # Each table has its statistics; no other table gained any.
    assert _analyzed(demo_db) - before == {"temp", "main"}


def test_a_table_named_like_a_collation_is_repaired(config: Config, demo_db: Path) -> None:
    corrupt_index(demo_db, table="nocase")
    result = commands.run_job(config, "maintenance", {"type": "emergency"}, approver=PreApproved())
    assert result.status == "completed", result.error
    assert result.report is not None
    assert result.report["corruption_repaired"] == ["nocase"]
    conn = sqlite3.connect(demo_db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


def test_a_table_named_as_a_number_is_not_blamed_for_another_tables_damage(
    config: Config, demo_db: Path
) -> None:
    for name in ("10", "1st", "-1z"):
        _sql(demo_db, f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, v INTEGER)')
    corrupt_index(demo_db)  # ledger
    result = commands.run_job(config, "maintenance", {"type": "emergency"}, approver=PreApproved())
    assert result.status == "completed", result.error
    assert result.report is not None
    assert result.report["corrupted_tables"] == ["ledger"]
    assert result.report["corruption_repaired"] == ["ledger"]
