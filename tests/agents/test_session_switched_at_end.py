"""A read-only step's session switched to read-write under the guard (by code that
reaches the DBAPI connection directly) fails the step at its end on every engine:
PostgreSQL reports the setting with every answer; MariaDB (@@session.tx_read_only) and
SQLite (PRAGMA query_only) are asked once, at the end of a step that only reads. A
handler that leaves its session as it found it is not failed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from aishell.cli import cli
from tests.agents.conftest import kept_rows, switching_handler
from tests.agents.test_plugin_own_failures import _with_handler
from tests.helpers import use_target

Install = Callable[..., str]

# Each switches its session to read-write beneath SQLAlchemy, deletes, and commits.
SWITCHES = {
    "mysql": switching_handler(
        "COMMIT", "SET SESSION TRANSACTION READ WRITE", "DELETE FROM kept_rows WHERE id <= 10"
    ),
    "sqlite": """
def _under(params, ctx):
    raw = ctx.connection.connection.dbapi_connection
    raw.commit()
    raw.execute("PRAGMA query_only = OFF")
    try:
        raw.execute("DELETE FROM kept_rows WHERE id <= 10")
        raw.commit()
    except Exception:  # a dry run opens the file read-only too
        raw.rollback()
    return {"row_count": 0}


counts = Handler(sql_templates=("SELECT 1",), run_fn=_under)
""",
}
# Reads through the DBAPI connection, and leaves the session as it was.
READS = """
def _reads(params, ctx):
    raw = ctx.connection.connection.dbapi_connection
    cur = raw.cursor()
    cur.execute("SELECT count(*) FROM kept_rows")
    return {"row_count": cur.fetchone()[0]}


counts = Handler(sql_templates=("SELECT 1",), run_fn=_reads)
"""


@pytest.fixture(params=["mysql", "sqlite"])
def kept(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[str, str]]:
    """(dialect, url): the default target, with a table of 50 rows."""
    dialect = request.param
    if dialect == "sqlite":
        url = f"sqlite:///{home / 'kept.db'}"
        yield dialect, _filled(home, url)
        return
    from tests.services import scratch_mysql

    with scratch_mysql() as url:
        yield dialect, _filled(home, url)


def _filled(home: Path, url: str) -> str:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept_rows (id int PRIMARY KEY)"))
        for i in range(1, 51):
            conn.execute(text("INSERT INTO kept_rows VALUES (:i)"), {"i": i})
    engine.dispose()
    use_target(home, url)
    return url


@pytest.mark.parametrize("how", ["--dry-run", "--yes"])
def test_a_session_switched_under_the_guard_fails_the_step(
    kept: tuple[str, str], site: Install, how: str
) -> None:
    dialect, url = kept
    agent, _ = _with_handler(site, SWITCHES[dialect], dialect=dialect)
    ran = CliRunner().invoke(
        cli, ["run", agent, "--table", "kept_rows", "--no-statistics", how, "--json"]
    )
    assert ran.exit_code == 1, ran.output
    found = json.loads(ran.stdout)
    assert found["status"] == "failed"
    said = found["steps"][0]["error"]["message"]
    assert "read-only session was switched under the guard" in said, said
    expected = "query_only is now off" if dialect == "sqlite" else "read-write again"
    assert expected in said, said
    # What it sent that way ran (the guard never saw it): the step says so by failing.
    # (A SQLite dry run opens the file read-only as well: nothing could be written.)
    assert kept_rows(url) == (50 if (dialect, how) == ("sqlite", "--dry-run") else 40)


def test_a_read_beneath_the_guard_that_leaves_the_session_passes(
    kept: tuple[str, str], site: Install
) -> None:
    dialect, url = kept
    agent, _ = _with_handler(site, READS, dialect=dialect)
    ran = CliRunner().invoke(
        cli, ["run", agent, "--table", "kept_rows", "--no-statistics", "--yes", "--json"]
    )
    assert ran.exit_code == 0, ran.output
    found = json.loads(ran.stdout)
    assert found["status"] == "completed"
    assert found["steps"][0]["output"]["row_count"] == 50
    assert kept_rows(url) == 50
