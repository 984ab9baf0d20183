"""A preview shows every statement that touches a table and sums up the catalog reads:
a maintenance command is known for one by its first word, as the parser would find it,
and the catalog reads are found as before."""

from __future__ import annotations

import pytest

from aishell.render.catalogreads import _shape, _shape_is_catalog_read, is_catalog_read

MAINTENANCE = [
    ("postgresql", 'VACUUM (ANALYZE) "t"'),
    ("postgresql", 'VACUUM (FULL, ANALYZE) "public"."pg_like"'),
    ("postgresql", "ANALYZE"),
    ("postgresql", 'REINDEX INDEX CONCURRENTLY "i"'),
    ("postgresql", 'CLUSTER "t" USING "i"'),
    ("postgresql", '  analyze "pg_class"'),
    ("mysql", "OPTIMIZE TABLE `t`"),
    ("mysql", "ANALYZE NO_WRITE_TO_BINLOG TABLE `a`, `b`"),
    ("mysql", "CHECK TABLE `t` EXTENDED"),
    ("mysql", "REPAIR TABLE `t`"),
    ("mysql", "ALTER TABLE `t` FORCE"),
    ("sqlite", 'REINDEX "i"'),
    ("sqlite", "VACUUM"),
    ("sqlite", 'ANALYZE "t"'),
]
CATALOG = [
    ("postgresql", "SELECT relname FROM pg_class WHERE relname = :t"),
    ("mysql", "/* aishell catalog */ SELECT TABLE_NAME FROM information_schema.TABLES"),
    ("mysql", "SHOW GRANTS"),
    ("sqlite", "PRAGMA page_count"),
    ("sqlite", "SELECT name FROM sqlite_schema WHERE type = 'table'"),
]


@pytest.mark.parametrize(("dialect", "sql"), MAINTENANCE)
def test_a_maintenance_command_is_shown_as_the_parser_finds_it(dialect: str, sql: str) -> None:
    assert not is_catalog_read(sql, dialect)
    assert not _shape_is_catalog_read(_shape(sql), dialect)


@pytest.mark.parametrize(("dialect", "sql"), CATALOG)
def test_a_catalog_read_is_summed_up(dialect: str, sql: str) -> None:
    assert is_catalog_read(sql, dialect)


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgresql", 'SELECT count(*) FROM "orders"'),
        ("postgresql", "SELECT * FROM pgstattuple('t')"),
        ("sqlite", "PRAGMA integrity_check"),
        ("mysql", "-- nothing to rebuild"),
        ("postgresql", "VACUUMING_IS_NOT_A_COMMAND"),
    ],
)
def test_what_reads_a_table_or_cannot_be_read_is_shown(dialect: str, sql: str) -> None:
    assert not is_catalog_read(sql, dialect)
