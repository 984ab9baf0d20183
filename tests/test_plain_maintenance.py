"""The maintenance statements the guard reads without the SQL parser (ANALYZE of a list
of tables, VACUUM (ANALYZE), OPTIMIZE TABLE, REINDEX of one index) mean exactly what
the parser finds in them, whatever the names; anything else still goes to the parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aishell.statements import _plain_maintenance, classify, parsed

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
    sql = f"{command} " + comma.join(quoted(n, dialect) for n in names)
    fast = _plain_maintenance(sql, dialect)
    assert fast is not None, sql
    assert fast == parsed(sql, dialect), sql
    assert classify(sql, dialect) == fast


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
        ("sqlite", 'ANALYZE "a", "b"'),
        ("sqlite", 'VACUUM "main"'),
        ("postgresql", 'REINDEX INDEX "a", "b"'),
        ("postgresql", 'REINDEX TABLE "a"'),
        ("postgresql", 'REINDEX DATABASE "a"'),
    ]:
        assert _plain_maintenance(sql, dialect) is None, sql
    # Which the parser then classifies as before: two statements are a high-risk write.
    assert classify('ANALYZE "a"; DROP TABLE "b"', "postgresql").risk.value == "high"
