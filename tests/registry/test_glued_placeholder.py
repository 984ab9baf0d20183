"""A `{param}` placeholder is filled with a whole quoted name ("app_logs"), so one that
touches other name characters ("{table}_advised", "x{table}", "{a}{b}") makes SQL no
server takes: such a tool is refused at load, naming the file and the fragment, instead
of failing at its first run on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, exc, text

from aishell.errors import CatalogError
from aishell.registry import load_registry
from tests.registry.test_registry import catalog, tool

GLUED = "CREATE INDEX IF NOT EXISTS {table}_advised ON {table} (id)"


def _ddl(sql: str, check_sql: str | None = None) -> dict[str, object]:
    form = {"sql": sql, **({"check_sql": check_sql} if check_sql else {})}
    return tool(
        risk_level="high",
        category="ddl",
        required_capabilities=["database_ddl"],
        implementations={"postgresql": form},
        locks={"postgresql": []},
    )


@pytest.mark.parametrize(
    ("sql", "check_sql", "fragment"),
    [
        (GLUED, None, "{table}_"),
        ('CREATE INDEX IF NOT EXISTS ix ON "{table}" (id)', None, '"{table}'),
        ("CREATE INDEX IF NOT EXISTS ix ON {table} (id)", "SELECT 1 FROM x{table}", "x{table}"),
    ],
)
def test_a_glued_placeholder_is_refused_at_load(
    tmp_path: Path, sql: str, check_sql: str | None, fragment: str
) -> None:
    folder = catalog(tmp_path, _ddl(sql, check_sql))
    with pytest.raises(CatalogError) as refused:
        load_registry([folder])
    said = str(refused.value)
    assert "implementations.postgresql" in said and repr(fragment) in said, said
    assert "may not touch other name characters" in said


def test_what_it_refuses_is_sql_postgresql_rejects_and_a_whole_name_loads(
    tmp_path: Path, pg_url: str
) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE glued_logs (id int)"))
        with pytest.raises(exc.ProgrammingError, match="syntax error"), engine.begin() as conn:
            conn.execute(text(GLUED.replace("{table}", '"glued_logs"')))
    finally:
        engine.dispose()
    whole = "CREATE INDEX IF NOT EXISTS ix ON {table} (id)"
    loaded = load_registry([catalog(tmp_path, _ddl(whole))]).get("count_rows_here")
    assert loaded.implementation("postgresql").sql_templates == (whole,)
