"""Every session aishell opens to a target runs with the same settings: a step's second
session on another database of the target's server (a validation's scratch copy, a
restore's measure) has the step's own settings, not the server's defaults, so what it
reads waits and parses as the step's reads do: on PostgreSQL its lock_timeout, string
syntax and JIT; on MariaDB its lock waits, the language of its messages (what aishell
reads errors by) and its character set. The database the test names is unique to it
and dropped."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from aishell.cli import cli
from tests.agents.test_plugin_own_failures import Install, _with_handler
from tests.helpers import run_sql, use_target

SETTINGS = ("lock_timeout", "standard_conforming_strings", "jit", "search_path")

HANDLER = f"""
from sqlalchemy import text
from aishell.agents.api import Side

SETTINGS = {SETTINGS!r}


def _seen(conn):
    return [conn.execute(text("SELECT pg_catalog.current_setting(:s)"), {{"s": s}}).scalar()
            for s in SETTINGS]


def _both(params, ctx):
    main = _seen(ctx.connection)
    database = ctx.connection.execute(text("SELECT pg_catalog.current_database()")).scalar()
    with ctx.side_session(Side("a look of its own", database=database)) as other:
        side = _seen(other)
    return {{"row_count": int(main == side), "main": main, "side": side}}


counts = Handler(sql_templates=("SELECT 1",), run_fn=_both)
"""


def test_a_second_session_on_another_database_has_the_step_s_settings(
    pg_rows: str, site: Install
) -> None:
    agent, _ = _with_handler(site, HANDLER, dialect="postgresql")
    ran = CliRunner().invoke(cli, ["run", agent, "--table", "kept_rows", "--yes", "--json"])
    assert ran.exit_code == 0, ran.output
    found = json.loads(ran.stdout)
    assert found["steps"][0]["output"]["row_count"] == 1, found["steps"][0]["output"]


MYSQL_SETTINGS = (
    "lock_wait_timeout",
    "innodb_lock_wait_timeout",
    "lc_messages",
    "character_set_client",
)
MYSQL_HANDLER = f"""
from sqlalchemy import text
from aishell.agents.api import Side

READ = "SELECT " + ", ".join("@@SESSION." + s for s in {MYSQL_SETTINGS!r})


def _both(params, ctx):
    main = list(ctx.connection.execute(text(READ)).one())
    database = ctx.connection.execute(text("SELECT DATABASE()")).scalar()
    with ctx.side_session(Side("a look of its own", database=database)) as other:
        side = list(other.execute(text(READ)).one())
    return {{"row_count": int(main == side), "main": main, "side": side}}


counts = Handler(sql_templates=("SELECT 1",), run_fn=_both)
"""


def test_a_mariadb_second_session_on_another_database_has_the_step_s_settings(
    home: Path, mysql_url: str, site: Install
) -> None:
    use_target(home, mysql_url)
    run_sql(mysql_url, "CREATE TABLE kept_rows (id int PRIMARY KEY)")
    agent, _ = _with_handler(site, MYSQL_HANDLER, dialect="mysql")
    ran = CliRunner().invoke(cli, ["run", agent, "--table", "kept_rows", "--yes", "--json"])
    assert ran.exit_code == 0, ran.output
    found = json.loads(ran.stdout)
    assert found["steps"][0]["output"]["row_count"] == 1, found["steps"][0]["output"]
