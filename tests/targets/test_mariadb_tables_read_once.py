"""A MariaDB server opens each table to give its sizes in information_schema.TABLES (all
of them again on each read, where it keeps fewer definitions open than the database has
tables): planning and previewing a maintenance job read them once, in the catalog's read,
and the urgency and the steps' first readings take them from there while they are fresh;
the limits' measure reads them only for tables without a file of their own."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.targets.tables import TableCatalog
from aishell.tool.readings import MAX_AGE_SECONDS
from tests.helpers import use_target
from tests.targets.test_catalog_round_trips import sent_to

TABLES = [f"t{i}" for i in range(5)]


@pytest.fixture
def tables(mysql_url: str) -> str:
    engine = create_engine(mysql_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for table in TABLES:
            conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, v int, pad char(100))"))
            conn.execute(text(f"INSERT INTO {table} SELECT seq, seq, 'x' FROM seq_1_to_300"))
            conn.execute(text(f"DELETE FROM {table} WHERE id % 3 = 0"))
            # Settled now: else InnoDB's background recount of a table so changed may land
            # between two reads of a test and change its figures.
            conn.execute(text(f"ANALYZE TABLE {table}")).all()
    engine.dispose()
    return mysql_url


def _sized(sent: list[tuple[str, Any]]) -> list[str]:
    """The statements that ask information_schema.TABLES for tables' sizes."""
    return [sql for sql, _ in sent if "information_schema.TABLES" in sql and "DATA_LENGTH" in sql]


@pytest.mark.parametrize("kind", ["full", "standard", "quick", "emergency"])
def test_a_maintenance_plan_and_its_preview_read_the_tables_sizes_once(
    tables: str, home: Path, kind: str
) -> None:
    config = use_target(home, tables)
    with sent_to(tables) as sent:
        preview = commands.plan_job(config, "maintenance", {"type": kind})
    assert preview.steps
    assert len(_sized(sent)) == 1, _sized(sent)


def test_the_plans_urgency_is_the_one_its_own_read_finds(tables: str, home: Path) -> None:
    from aishell.commands.planner import _every_figure
    from aishell.targets.catalog import urgency

    engine = create_engine(tables)
    try:
        with engine.connect() as conn:
            catalog = TableCatalog.read(conn)
            figures = _every_figure(catalog)
            assert figures is not None and set(figures) == set(TABLES)
            assert urgency(conn, figures) == urgency(conn)
    finally:
        engine.dispose()


def test_the_catalogs_figures_are_given_only_while_fresh(tables: str) -> None:
    engine = create_engine(tables)
    try:
        with engine.connect() as conn:
            catalog = TableCatalog.read(conn)
            read_at, figures = catalog.fresh_figures(MAX_AGE_SECONDS)
            assert read_at <= time.monotonic() and set(figures) == set(TABLES)
            row = figures["t1"]
            assert row["name"] == "t1" and str(row["engine"]).lower() == "innodb"
            assert row["row_count"] >= 0 and row["data_bytes"] > 0
            # A table a step may have changed is not given until it is read again ...
            catalog.changed(["t1"])
            assert set(catalog.fresh_figures(MAX_AGE_SECONDS)[1]) == set(TABLES) - {"t1"}
            catalog.current(conn, ["t1"])
            assert "t1" in catalog.fresh_figures(MAX_AGE_SECONDS)[1]
            # ... nor any after a step that may have changed any, nor once too old.
            catalog.changed([])
            assert catalog.fresh_figures(MAX_AGE_SECONDS)[1] == {}
            catalog.current(conn, TABLES)
            assert set(catalog.fresh_figures(MAX_AGE_SECONDS)[1]) == set(TABLES)
            time.sleep(0.01)
            assert catalog.fresh_figures(0.001)[1] == {}
    finally:
        engine.dispose()
