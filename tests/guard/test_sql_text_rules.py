"""A `:param` inside a string literal or a comment is no bound value: SQLAlchemy's text()
turns it into the driver's placeholder there all the same, and PyMySQL writes the value
into the text as a quoted literal of its own, which ends the string around it, so the
server runs the value as SQL (a value `x' , LOAD_FILE(...) , '` reads a server file from
a step that only reads). The guard judged the template, with the value bound, and saw a
constant. A tool whose SQL holds one is refused at load, and the guard refuses such a
statement whatever the step may do, on every engine that writes values into the text."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from aishell.errors import CatalogError, StatementRefused
from aishell.guard.connection import Guard, guarded
from aishell.registry import load_registry
from aishell.risk import RiskLevel
from tests.guard.test_guard import raw_engine
from tests.helpers import run_sql
from tests.registry.test_registry import catalog, tool

PLACED = [
    "SELECT ':label' AS label, count(*) AS n FROM {table}",
    "UPDATE {table} SET note = 'stamped by :who' WHERE id = :id",
    "SELECT /* request :tag */ count(*) AS n FROM {table}",
    "SELECT count(*) AS n FROM {table} -- for :who",
    'SELECT count(*) AS n FROM {table} WHERE note = "by :who"',
]
BOUND = [
    "SELECT CONCAT('stamped by ', :who) AS label FROM {table}",
    "SELECT count(*) AS n FROM {table} WHERE created_at > '12:30' AND id = :id",
    "SELECT ':' AS colon, count(*) AS n FROM {table} WHERE id = :id",
]


def _tool(sql: str, engine: str) -> dict[str, object]:
    writes = not sql.startswith("SELECT")
    return tool(
        risk_level="medium" if writes else "safe",
        required_capabilities=["database_read", "database_write"] if writes else [],
        implementations={engine: {"sql": sql}},
    )


# "..." is a string on MySQL alone (a name elsewhere, where no parameter is read).
@pytest.mark.parametrize(
    ("sql", "engine"),
    [
        (sql, engine)
        for sql in PLACED
        for engine in ("mysql", "postgresql", "sqlite")
        if '"' not in sql or engine == "mysql"
    ],
)
def test_a_tool_with_a_parameter_in_a_string_or_comment_is_refused_at_load(
    tmp_path: Path, sql: str, engine: str
) -> None:
    with pytest.raises(CatalogError) as refused:
        load_registry([catalog(tmp_path, _tool(sql, engine))])
    assert "stands inside a string or a comment" in str(refused.value), refused.value


@pytest.mark.parametrize("sql", BOUND)
def test_a_parameter_where_a_value_goes_loads(tmp_path: Path, sql: str) -> None:
    assert load_registry([catalog(tmp_path, _tool(sql, "mysql"))]).get("count_rows_here")


def test_the_guard_refuses_the_statement_and_the_server_runs_none_of_the_value(
    mysql_url: str,
) -> None:
    """A value that would stand outside the string and take a named lock: refused
    before it is sent, for a step that reads and for one approved to write at the
    highest risk."""
    run_sql(
        mysql_url, "CREATE TABLE t (id int PRIMARY KEY, note text)", "INSERT INTO t VALUES (1, 'a')"
    )
    lock = "aishell_placed_bind_test"
    # No quote in it, so the driver's escaping leaves it whole: ''<value>'' on the wire.
    value = f", GET_LOCK(CHAR({', '.join(str(ord(c)) for c in lock)}), 0) AS taken, "
    engine = raw_engine(mysql_url)
    try:
        for guard in (
            Guard(label="a read"),
            Guard(label="a write", writes=True, risk=RiskLevel.CRITICAL),
        ):
            with engine.connect() as conn:
                with pytest.raises(StatementRefused) as refused, guarded(conn, guard):
                    conn.execute(text("SELECT ':label' AS label FROM t"), {"label": value})
                assert "its parameter %(label)s stands inside a string" in str(refused.value)
            with engine.connect() as other:
                free = other.execute(text("SELECT IS_FREE_LOCK(:l)"), {"l": lock}).scalar()
            assert free == 1
        # Bound where a value goes, the same value is only a value.
        with engine.connect() as conn, guarded(conn, Guard(label="a read")):
            found = conn.execute(text("SELECT CONCAT(:label, note) FROM t"), {"label": value})
            assert found.scalar() == value + "a"
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "sql",
    ["VACUUM INTO :path", "VACUUM main INTO '/tmp/copy.db'", "/* copy */ vacuum INTO :path"],
)
def test_a_sql_tool_that_copies_the_database_to_a_file_is_refused_at_load(
    tmp_path: Path, sql: str
) -> None:
    """VACUUM INTO writes the whole database where the SQL says: no SQL tool may, at any
    risk it declares (the backup tools' handlers write theirs)."""
    low = tool(
        risk_level="low",
        required_capabilities=["database_read", "index_manage"],
        implementations={"sqlite": {"sql": sql}},
    )
    with pytest.raises(CatalogError) as refused:
        load_registry([catalog(tmp_path, low)])
    assert "VACUUM INTO writes a file" in str(refused.value), refused.value
