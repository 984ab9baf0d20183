"""For many tables of a SQLite file, the plan and the catalog read the whole file's
pages once instead of finding each b-tree by name (each lookup reads sqlite_schema
through); either way of reading gives the same preview, down to the scattered index it
rebuilds, and the same catalog of the tables named."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from aishell import commands
from aishell.handlers.sqlite import catalog
from aishell.targets import catalog as target_catalog
from aishell.targets import tables
from aishell.targets.tables import TableCatalog
from tests.helpers import use_target

WHOLE, BY_NAME = 0, 10**12


def _watched(monkeypatch: pytest.MonkeyPatch, lookups_per_page: int) -> list[bool]:
    """The choices made meanwhile, with the turn set to `lookups_per_page`."""
    monkeypatch.setattr(target_catalog, "_LOOKUPS_PER_PAGE", lookups_per_page)
    monkeypatch.setattr(target_catalog, "_FEW_TABLES", 0)  # the demo's four tables decide too
    found: list[bool] = []
    chose = target_catalog.sqlite_reads_whole_file

    def watched(conn: Any, count: int) -> bool:
        found.append(chose(conn, count))
        return found[-1]

    monkeypatch.setattr(catalog, "sqlite_reads_whole_file", watched)
    monkeypatch.setattr(tables, "sqlite_reads_whole_file", watched)
    return found


def _preview(config: Any, monkeypatch: pytest.MonkeyPatch, lookups_per_page: int) -> Any:
    found = _watched(monkeypatch, lookups_per_page)
    preview = commands.plan_job(config, "maintenance", {"type": "full"}).to_dict()
    preview.pop("plan_hash")
    return preview, found


def test_the_whole_file_read_and_the_lookups_by_name_preview_alike(
    config: Any, demo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, chosen_whole = _preview(config, monkeypatch, WHOLE)
    by_name, chosen_by_name = _preview(config, monkeypatch, BY_NAME)
    assert True in chosen_whole and True not in chosen_by_name
    assert whole == by_name
    rebuild = next(s for s in whole["steps"] if s["tool"] == "rebuild_fragmented_indexes")
    assert 'REINDEX main."idx_app_logs_level"' in rebuild["sql"]


def test_the_catalog_of_tables_named_is_the_same_either_way(
    demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = ["app_logs", "orders"]
    engine = create_engine(f"sqlite:///{demo_db}")
    try:
        read: dict[int, Any] = {}
        for turn in (WHOLE, BY_NAME):
            chosen = _watched(monkeypatch, turn)
            with engine.connect() as conn:
                # As after a step on these tables: they are read again, by name.
                read_again = TableCatalog.read(conn)
                read_again.changed(named)
                read_again.current(conn, named)
                whole = read_again.snapshot()
            assert chosen == [turn == WHOLE]
            read[turn] = {t: whole[t] for t in named}
    finally:
        engine.dispose()
    assert read[WHOLE] == read[BY_NAME]
    assert all(t["bytes"] and t["rows"] for t in read[WHOLE].values()), read


@pytest.mark.parametrize("lookups_per_page", [WHOLE, BY_NAME])
def test_the_tables_read_by_name_and_with_every_table_preview_alike(
    config: Any, demo_db: Any, monkeypatch: pytest.MonkeyPatch, lookups_per_page: int
) -> None:
    monkeypatch.setattr(target_catalog, "NAMED_AT_MOST", 10**6)
    named, _ = _preview(config, monkeypatch, lookups_per_page)
    monkeypatch.setattr(target_catalog, "NAMED_AT_MOST", 0)
    every, _ = _preview(config, monkeypatch, lookups_per_page)
    assert named == every


def test_a_plan_of_many_tables_sends_no_list_of_them_all(home: Path) -> None:
    """The guard parses each statement it lets through: 600 tables are not 600 names of
    one statement (the schema table is read for every table, and theirs kept)."""
    path = home / "many.db"
    made = sqlite3.connect(path)
    for i in range(600):
        made.execute(f"CREATE TABLE t{i:03d} (id INTEGER PRIMARY KEY, v TEXT)")
        made.execute(f"CREATE INDEX t{i:03d}_v ON t{i:03d} (v)")
        made.execute(f"INSERT INTO t{i:03d} VALUES (1, 'a'), (2, 'b')")
    made.commit()
    made.close()
    config = use_target(home, f"sqlite:///{path}")
    sent: list[Any] = []

    def before(_c: Any, _cur: Any, _statement: str, parameters: Any, *_: Any) -> None:
        sent.append(parameters)

    event.listen(Engine, "before_cursor_execute", before)
    try:
        preview = commands.plan_job(config, "maintenance", {"type": "full"})
    finally:
        event.remove(Engine, "before_cursor_execute", before)
    rebuild = next(s for s in preview.steps if s.tool == "rebuild_fragmented_indexes")
    assert rebuild.sql
    assert max(len(p or ()) for p in sent) <= target_catalog.NAMED_AT_MOST
