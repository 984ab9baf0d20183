"""`aishell plan log-cleanup` over a table another session holds: one line naming the
table and the session holding it, as the dry run names it (handlers/purge/count.py),
never an internal error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import Connection

from aishell.cli import cli
from tests.helpers import use_target
from tests.services import engine

PLAN = [
    "plan", "log-cleanup", "--table", "orders", "--date-column", "created_at",
    "--retention-days", "30", "--target", "db",
]  # fmt: skip


def orders(url: str) -> None:
    """A table of 200 rows over 200 days, its statistics fresh (the plan estimates)."""
    with engine(url).connect() as conn:
        conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY, created_at DATE)"))
        conn.execute(text("CREATE INDEX orders_created ON orders (created_at)"))
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("INSERT INTO orders SELECT g, current_date - g FROM generate_series(1, 200) g")
            )
            conn.execute(text("ANALYZE orders"))
        else:
            conn.execute(
                text(
                    "INSERT INTO orders SELECT seq, CURDATE() - INTERVAL seq DAY FROM seq_1_to_200"
                )
            )
            conn.execute(text("ANALYZE TABLE orders"))


@contextmanager
def held(url: str) -> Iterator[Connection]:
    """Another session holding orders against every reader, until the block ends."""
    conn = engine(url).connect()
    try:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="READ COMMITTED")
            conn.execute(text("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"))
        else:
            conn.execute(text("LOCK TABLES orders WRITE"))
        yield conn
    finally:
        if conn.dialect.name == "postgresql":
            conn.rollback()
        else:
            conn.execute(text("UNLOCK TABLES"))
        conn.close()


def session_id(conn: Connection) -> int:
    query = (
        "SELECT pg_backend_pid()" if conn.dialect.name == "postgresql" else "SELECT CONNECTION_ID()"
    )
    return int(conn.execute(text(query)).scalar_one())


def test_a_plan_over_a_held_table_names_it_and_its_holder(home, server_url):
    orders(server_url)
    use_target(home, server_url)
    with held(server_url) as holder:
        holder_id = session_id(holder)
        done = CliRunner().invoke(cli, PLAN)
    said = done.output.strip()
    assert "internal error" not in said, said
    assert done.exit_code == 1, said
    assert len(said.splitlines()) == 1, said
    assert "could not read orders" in said and "lock was still held by" in said, said
    assert f"pid {holder_id} " in said or f"connection {holder_id} " in said, said


def test_the_plan_is_shown_once_the_table_is_free(home, server_url):
    orders(server_url)
    use_target(home, server_url)
    done = CliRunner().invoke(cli, PLAN)
    assert done.exit_code == 0, done.output
    assert "count_table_rows" in done.output


@pytest.mark.parametrize("kind", ["quick", "standard", "full", "emergency"])
def test_a_maintenance_plan_over_a_held_table_shows_the_rest_and_names_the_holder(
    home, server_url, kind
):
    """A step the plan cannot measure for the lock says so in its place, naming the
    session holding it; the plan is shown, never an internal error."""
    orders(server_url)
    use_target(home, server_url)
    with held(server_url) as holder:
        holder_id = session_id(holder)
        done = CliRunner().invoke(
            cli, ["plan", "maintenance", "--type", kind, "--tables", "orders", "--target", "db"]
        )
    said = done.output
    assert "internal error" not in said, said
    assert done.exit_code in (0, 1), said
    if "not measured: orders held" in said or done.exit_code == 1:
        assert f"pid {holder_id}" in said or f"connection {holder_id}" in said, said


def test_a_dry_run_over_a_held_table_looks_once_as_the_plan_does(home, server_url):
    """A dry run is a preview: it waits on a held table once, as `plan` does, and says
    who holds it. Before, it tried again with the run's backoff (four waits of the lock
    timeout, each one more lock request queued on the held table)."""
    orders(server_url)
    use_target(home, server_url)
    with held(server_url) as holder:
        holder_id = session_id(holder)
        done = CliRunner().invoke(cli, ["run", *PLAN[1:], "--dry-run", "--json"])
    found = json.loads(done.stdout)
    assert done.exit_code == 1, done.output
    message = found["error"]["message"]
    assert str(holder_id) in message, message
    assert "after 1 attempt(s)" in message, message
