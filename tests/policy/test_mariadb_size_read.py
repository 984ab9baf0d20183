"""The size that bounds a MariaDB table's rows for max_table_size: its tablespace file's,
read with the server's list of tables and matched to it by name (one query of the
files for all the tables, not one per table), or, for an account without PROCESS
(which the files' view needs), the catalog's estimate, whose rows are then counted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
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
