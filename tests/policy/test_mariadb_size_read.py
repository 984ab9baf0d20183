"""The size that bounds a MariaDB table's rows for max_table_size: its tablespace file's,
read with the server's list of tables and matched to it by name (one query of the
files for all the tables, not one per table), or, for an account without PROCESS
(which the files' view needs), the catalog's estimate, whose rows are then counted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from aishell.policy.measured import TableSize, read_sizes
from aishell.targets.tables import TableCatalog

TABLES = ("sized", "Mixed_Case", "empty")


@pytest.fixture
def filled(mysql_url: str) -> str:
    engine = create_engine(mysql_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for table in TABLES:
            conn.execute(text(f"CREATE TABLE `{table}` (id int PRIMARY KEY, pad char(200))"))
        conn.execute(text("INSERT INTO sized SELECT seq, repeat('x', 200) FROM seq_1_to_3000"))
    engine.dispose()
    return mysql_url


@pytest.fixture
def without_process(filled: str) -> Iterator[str]:
    """A login that may read the test's database, and not the server's files' view."""
    user = f"sized_{uuid.uuid4().hex[:10]}"
    database = make_url(filled).database
    admin = create_engine(filled, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'%'"))
        conn.execute(text(f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'"))
    try:
        yield make_url(filled).set(username=user, password="").render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


def _sizes(url: str) -> dict[str, TableSize]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return read_sizes(conn, list(TABLES), TableCatalog.read(conn))
    finally:
        engine.dispose()


def _files(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT NAME, GREATEST(FILE_SIZE, ALLOCATED_SIZE) "
                    "FROM information_schema.INNODB_SYS_TABLESPACES "
                    "WHERE NAME LIKE CONCAT(DATABASE(), '/%')"
                )
            ).all()
    finally:
        engine.dispose()
    return {str(name).split("/", 1)[1]: int(size) for name, size in rows}


def test_each_table_has_its_files_size(filled: str) -> None:
    sizes = _sizes(filled)
    files = _files(filled)
    assert set(sizes) == set(TABLES)
    for table in TABLES:
        assert not sizes[table].estimated, table
        assert sizes[table].bytes == files[table], (table, sizes[table], files)
        assert sizes[table].most_rows is not None
    assert sizes["sized"].bytes > sizes["empty"].bytes


def test_without_process_each_size_is_the_catalogs_estimate(
    filled: str, without_process: str
) -> None:
    sizes = _sizes(without_process)
    assert set(sizes) == set(TABLES)
    assert all(s.estimated and s.most_rows is None for s in sizes.values()), sizes


def _sizes_sent(url: str, names: list[str]) -> tuple[dict[str, TableSize], list[tuple[str, Any]]]:
    """read_sizes of `names`, and the statements it sent with their parameters."""
    engine = create_engine(url)
    sent: list[tuple[str, Any]] = []
    try:
        with engine.connect() as conn:
            catalog = TableCatalog.read(conn)

            def before(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
                sent.append((statement, parameters))

            event.listen(engine, "before_cursor_execute", before)
            return read_sizes(conn, names, catalog), sent
    finally:
        engine.dispose()


def test_only_a_table_without_a_file_of_its_own_is_opened_for_its_estimate(filled: str) -> None:
    engine = create_engine(filled, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE aria_kept (id int PRIMARY KEY, pad char(200)) ENGINE=Aria"))
        conn.execute(text("INSERT INTO aria_kept SELECT seq, 'x' FROM seq_1_to_500"))
    engine.dispose()
    sizes, sent = _sizes_sent(filled, [*TABLES, "aria_kept"])
    assert sizes["aria_kept"].estimated and sizes["aria_kept"].bytes
    assert all(not sizes[t].estimated for t in TABLES), sizes
    # The server opens a table to give its DATA_LENGTH: only the Aria table's is asked.
    opened = [params for sql, params in sent if "DATA_LENGTH" in sql]
    assert len(opened) == 1
    assert set(opened[0].values() if isinstance(opened[0], dict) else opened[0]) == {"aria_kept"}


def test_many_tables_are_read_with_every_table_not_named_one_by_one(filled: str) -> None:
    absent = [f"absent_{i:04d}" for i in range(600)]
    few, _ = _sizes_sent(filled, list(TABLES))
    many, sent = _sizes_sent(filled, [*TABLES, *absent])
    assert many == few and set(many) == set(TABLES)
    # No statement lists the 603 names, which the guard would parse one by one.
    assert all(len(params or ()) <= 500 for _sql, params in sent), [len(p or ()) for _, p in sent]
