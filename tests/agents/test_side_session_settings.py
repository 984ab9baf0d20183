"""Every PostgreSQL session aishell opens to a target runs with the same settings: a
step's second session on another database of the target's server (a validation's
scratch copy, a restore's measure) has the step's own lock_timeout, string syntax and
JIT, not the server's defaults, so what it reads waits and parses as the step's reads do.
The database the test names is unique to it and dropped."""

from __future__ import annotations

import json

from click.testing import CliRunner

from aishell.cli import cli
from tests.agents.test_plugin_own_failures import Install, _with_handler

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
