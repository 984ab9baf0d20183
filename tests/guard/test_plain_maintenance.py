"""The maintenance statements the guard reads without the SQL parser (ANALYZE of a list
of tables, VACUUM (ANALYZE), OPTIMIZE TABLE, ALTER TABLE ... FORCE, REINDEX of one
index) mean exactly what the parser finds in them, whatever the names; anything else
still goes to the parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aishell.guard.calls import called_functions
from aishell.guard.statements import (
    _PLAIN_COUNTS,
    READS,
    _plain_maintenance,
    classify,
    parsed,
)

QUOTE = {"postgresql": '"', "sqlite": '"', "mysql": "`"}
# Commands that take a list of names.
COMMANDS = {
    "postgresql": ("ANALYZE", "analyze", "VACUUM (ANALYZE)", "VACUUM(ANALYZE)"),
    "sqlite": (),
    "mysql": ("ANALYZE TABLE", "OPTIMIZE TABLE", "optimize  table"),
}
# Commands that take one name.
SINGLE = {
    "postgresql": ("REINDEX INDEX", "REINDEX INDEX CONCURRENTLY", "reindex index  concurrently"),
    "sqlite": ("ANALYZE", "Analyze", "REINDEX"),
    "mysql": (),
}
# Names with what could end a statement or start another inside them.
NAMES = st.text(alphabet=st.sampled_from("ab_1 ;,\"`'-/*().\n"), min_size=1, max_size=12)


def quoted(name: str, dialect: str) -> str:
    q = QUOTE[dialect]
    return q + name.replace(q, q + q) + q


@settings(max_examples=300, deadline=None)
@given(
    dialect=st.sampled_from(sorted(QUOTE)),
    data=st.data(),
    names=st.lists(NAMES, min_size=1, max_size=4),
    comma=st.sampled_from((", ", ",", " , ")),
)
def test_a_plain_maintenance_statement_means_what_the_parser_finds(
    dialect: str, data: st.DataObject, names: list[str], comma: str
) -> None:
    command = data.draw(st.sampled_from(COMMANDS[dialect] + SINGLE[dialect]))
    if command in SINGLE[dialect]:
        names = names[:1]
    # Each name alone or in a schema (a database on MySQL): `"s"."t"`; SQLite's alone.
    schemas = [None if dialect == "sqlite" else data.draw(st.none() | NAMES) for _ in names]
    sql = f"{command} " + comma.join(
        quoted(n, dialect) if s is None else f"{quoted(s, dialect)}.{quoted(n, dialect)}"
        for n, s in zip(names, schemas, strict=True)
    )
    fast = _plain_maintenance(sql, dialect)
    assert fast is not None, sql
    assert fast == parsed(sql, dialect), sql
    assert classify(sql, dialect) == fast
    # Names only: not even a qualified one is a call in attribute notation.
    assert called_functions(sql, dialect) == (), sql


@settings(max_examples=200, deadline=None)
@given(
    name=NAMES,
    schema=st.none() | NAMES,
    algorithm=st.sampled_from(
        ("", ", ALGORITHM=INPLACE", ",algorithm = copy", ", ALGORITHM=DEFAULT")
    ),
    lock=st.sampled_from(("", ", LOCK=NONE", " ,lock=shared", ", LOCK = EXCLUSIVE")),
    command=st.sampled_from(("ALTER TABLE", "alter  table")),
)
def test_a_rebuild_by_alter_table_force_means_what_the_parser_finds(
    name: str, schema: str | None, algorithm: str, lock: str, command: str
) -> None:
    table = quoted(name, "mysql")
    if schema is not None:
        table = f"{quoted(schema, 'mysql')}.{table}"
    sql = f"{command} {table} FORCE{algorithm}{lock}"
    fast = _plain_maintenance(sql, "mysql")
    assert fast is not None, sql
    assert fast == parsed(sql, "mysql"), sql
    assert called_functions(sql, "mysql") == (), sql
    # A rebuild changes no row and no definition: sending it again is its recovery.
    assert fast.repeatable


def test_an_alter_table_that_changes_more_than_storage_is_not_repeatable() -> None:
    for sql in [
        "ALTER TABLE `a` FORCE, ADD COLUMN x int",
        "ALTER TABLE `a` ENGINE=MyISAM",
        "ALTER TABLE `a` DROP COLUMN x",
        "ALTER TABLE `a` FORCE; DROP TABLE `b`",
        "ALTER TABLE `a` RENAME TO `b`",
    ]:
        assert _plain_maintenance(sql, "mysql") is None, sql
        assert not classify(sql, "mysql").repeatable, sql


def test_anything_more_than_names_goes_to_the_parser() -> None:
    for dialect, sql in [
        ("postgresql", 'ANALYZE "a"; DROP TABLE "b"'),
        ("postgresql", 'ANALYZE "a" /* x */'),
        ("postgresql", 'ANALYZE "a", b'),
        ("postgresql", 'VACUUM (FULL, ANALYZE) "a"'),
        ("postgresql", 'VACUUM "a"'),
        ("postgresql", "ANALYZE `a`"),
        ("mysql", 'ANALYZE TABLE "a"'),
        ("mysql", "ANALYZE TABLE `a`; DELETE FROM `b`"),
        ("mysql", "OPTIMIZE NO_WRITE_TO_BINLOG TABLE `a`"),
        ("mysql", 'ALTER TABLE "a" FORCE'),
        ("mysql", "ALTER TABLE `a`, `b` FORCE"),
        ("mysql", "ALTER TABLE `a` FORCE, ALGORITHM=INSTANT"),
        ("mysql", "ALTER ONLINE TABLE `a` FORCE"),
        ("postgresql", 'ALTER TABLE "a" FORCE'),
        ("sqlite", 'ANALYZE "a", "b"'),
        ("sqlite", 'VACUUM "main"'),
        ("postgresql", 'REINDEX INDEX "a", "b"'),
        ("postgresql", 'REINDEX TABLE "a"'),
        ("postgresql", 'REINDEX DATABASE "a"'),
        ("sqlite", 'REINDEX "main"."a"'),
        ("sqlite", 'ANALYZE "main"."a"'),
    ]:
        assert _plain_maintenance(sql, dialect) is None, sql
    # Which the parser then classifies as before: two statements are a high-risk write.
    assert classify('ANALYZE "a"; DROP TABLE "b"', "postgresql").risk.value == "high"


@settings(max_examples=200, deadline=None)
@given(dialect=st.sampled_from(("postgresql", "sqlite")), name=NAMES)
def test_a_count_of_one_quoted_table_is_a_read_as_the_parser_finds(dialect: str, name: str) -> None:
    count = "pg_catalog.count(*)" if dialect == "postgresql" else "count(*)"
    sql = f"SELECT {count} FROM {quoted(name, dialect)}"
    assert parsed(sql, dialect) == READS, sql
    assert classify(sql, dialect) == READS


def test_a_count_with_anything_more_goes_to_the_parser() -> None:
    for sql in [
        'SELECT pg_catalog.count(*) FROM "a"; DELETE FROM "b"',
        'SELECT pg_catalog.count(*) FROM "a" WHERE pg_catalog.pg_terminate_backend(1)',
        'SELECT pg_catalog.count(*) FROM "a", "b"',
        "SELECT pg_catalog.count(*) FROM a",
    ]:
        assert _PLAIN_COUNTS["postgresql"].fullmatch(sql) is None, sql
    terminating = 'SELECT pg_catalog.count(*) FROM "a" WHERE pg_catalog.pg_terminate_backend(1)'
    assert classify(terminating, "postgresql").writes
