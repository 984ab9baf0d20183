"""A tool that goes on with its session after the server ended it (its own handling of
the error reads again, as a handler's cleanup would) loses its connection, the step's
to retry on a new one or to fail resumably: never an internal error of the tool.
SQLAlchemy raises PendingRollbackError there, not the server's error."""

from __future__ import annotations

import json
import threading
import uuid

from click.testing import CliRunner
from sqlalchemy import create_engine, text

from aishell.cli import cli
from tests.agents.test_plugin_own_failures import Install, _with_handler

# The first attempt waits on the server (until the test ends its session), then reads
# again on that session while handling the error; a later attempt returns at once.
HANDLER = """
from sqlalchemy import text


def _wait_then_read(params, ctx):
    if ctx.attempt == 1:
        try:
            ctx.connection.execute(text("SELECT pg_sleep(MARK)"))
        except Exception:
            ctx.connection.execute(text("SELECT 1"))
    return {"row_count": ctx.connection.execute(text("SELECT 1")).scalar()}


counts = Handler(sql_templates=("SELECT pg_sleep(MARK)", "SELECT 1"), run_fn=_wait_then_read)
"""


def _end_the_sleeper(url: str, mark: str, done: threading.Event) -> None:
    """Ends this database's session whose statement is the test's own pg_sleep."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as watch:
        while not done.wait(0.05):
            ended = watch.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query = :statement"
                ),
                {"statement": f"SELECT pg_sleep({mark})"},
            ).all()
            if ended:
                break
    engine.dispose()


def test_a_tool_reading_on_after_its_session_ended_is_retried_on_a_new_one(
    pg_rows: str, site: Install
) -> None:
    mark = f"30.{uuid.uuid4().int % 10**6:06d}"  # this test's own statement
    agent, _ = _with_handler(site, HANDLER.replace("MARK", mark), dialect="postgresql")
    done = threading.Event()
    ender = threading.Thread(target=_end_the_sleeper, args=(pg_rows, mark, done))
    ender.start()
    try:
        args = ["run", agent, "--table", "kept_rows", "--no-statistics", "--yes", "--json"]
        ran = CliRunner().invoke(cli, args)
    finally:
        done.set()
        ender.join(30)
    found = json.loads(ran.stdout)
    first = found["steps"][0]
    assert "internal error" not in json.dumps(first), first
    assert first["status"] == "succeeded" and first["attempts"] == 2, first
    assert found["status"] == "completed" and ran.exit_code == 0, ran.output
