"""The size read that bounds a PostgreSQL table's rows for max_table_size (and for a
plan's drift check) opens the table alone: its heap's size bounds its rows, and on a
new session each relation opened costs the server a cache entry (10,000 tables: 0.12 s
for their heaps, 0.77 s with their indexes and TOAST). An approval's subject keeps the
whole size, indexes and TOAST with the heap, so a table grown there since it was
approved is still not the table approved (test_approval_outlives.py).

What a read opens waits for a lock another session holds on it: an index rebuilt in
another session's open transaction (REINDEX holds it exclusively) stops the whole read
at the lock wait, and not the row limit's where the heap settles it (a count, where it
does not, is planned with the table's indexes opened)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from aishell.guard.memory import GuardMemory
from aishell.policy.measured import TableMeasure, TableSize, connection_reads, measurer, read_sizes
from aishell.targets.tables import TableCatalog
from tests.helpers import run_sql

TABLE = "sized"
# A primary key, a second index and TOAST: the relations a whole size opens.
SETUP = (
    f"CREATE TABLE {TABLE} (id int PRIMARY KEY, body text NOT NULL)",
    f"CREATE INDEX {TABLE}_body ON {TABLE} (left(body, 20))",
    f"INSERT INTO {TABLE} SELECT g, (SELECT string_agg(md5(random()::text || g || h), '') "
    "FROM generate_series(1, 200) h) FROM generate_series(1, 300) g",
    f"ANALYZE {TABLE}",
)
SIZES = f"SELECT pg_relation_size('{TABLE}'), pg_total_relation_size('{TABLE}')"


def _limit_read(url: str, limit: int) -> tuple[TableMeasure, dict[str, DBAPIError | None]]:
    """The table measured against `limit` as max_table_size measures it (the policy's
    measurer: its size read and, where the size does not settle it, a count), on a new
    session with a short lock wait; and the tables it found held."""
    engine = create_engine(url, connect_args={"options": "-c lock_timeout=300"})
    try:
        with engine.connect() as conn:
            catalog = TableCatalog.read(conn)
            held: dict[str, DBAPIError | None] = {}
            read = connection_reads(conn, "a test's measure", GuardMemory())
            measure = measurer("postgresql", read, catalog, held=held)
            return measure([TABLE], limit)[TABLE], held
    finally:
        engine.dispose()


def _whole_read(url: str) -> TableSize:
    """The table's size as an approval's subject reads it (read_sizes as it is called
    by default), on a new session with a short lock wait."""
    engine = create_engine(url, connect_args={"options": "-c lock_timeout=300"})
    try:
        with engine.connect() as conn:
            return read_sizes(conn, [TABLE], TableCatalog.read(conn))[TABLE]
    finally:
        engine.dispose()


def _truth(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            heap, total = conn.execute(text(SIZES)).one()
        return int(heap), int(total)
    finally:
        engine.dispose()


@pytest.fixture
def sized(pg_url: str) -> str:
    run_sql(pg_url, *SETUP)
    return pg_url


@pytest.fixture
def index_rebuilt(sized: str) -> Iterator[str]:
    """The second index rebuilt in another session's transaction, held open."""
    engine = create_engine(sized)
    conn = engine.connect()
    conn.execute(text(f"REINDEX INDEX {TABLE}_body"))
    try:
        yield sized
    finally:
        conn.rollback()
        conn.close()
        engine.dispose()


def test_the_row_limit_reads_the_heap_alone(sized: str) -> None:
    heap, total = _truth(sized)
    assert total > 2 * heap  # its TOAST and indexes hold most of it
    measured, held = _limit_read(sized, 1_000_000)
    assert not held and measured.bytes == heap and measured.rows is None  # not counted
    assert measured.most_rows is not None and 300 <= measured.most_rows <= 1_000_000
    counted, _ = _limit_read(sized, 10)
    assert counted.rows == 11 and counted.at_least  # one past the limit of 10
    whole = _whole_read(sized)
    assert whole.bytes == total and whole.most_rows is not None and whole.most_rows >= 300


def test_an_index_held_elsewhere_stops_only_the_whole_read(index_rebuilt: str) -> None:
    # A limit its heap settles: no count, whose planning would open the index too.
    measured, held = _limit_read(index_rebuilt, 1_000_000)
    assert not held and measured.most_rows is not None, (measured, held)
    with pytest.raises(OperationalError, match="lock timeout"):
        _whole_read(index_rebuilt)
