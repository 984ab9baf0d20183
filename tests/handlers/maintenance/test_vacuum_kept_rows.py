"""A VACUUM that could not remove dead rows, because an older snapshot still sees them,
is not reported as if it had: the step says how many stayed and what holds that
snapshot, and the maintenance report says so in its summary. A snapshot that does
not see them, or no snapshot at all, is never blamed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, use_target

ROWS = 4_000


def _pg(url: str, autocommit: bool = True) -> psycopg.Connection[Any]:
    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, autocommit=autocommit
    )


def _table(url: str) -> None:
    with _pg(url) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO events SELECT g, repeat('x', 50) FROM generate_series(1, %s) g", (ROWS,)
        )
        conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
        conn.execute("ANALYZE")


def _delete_half(url: str) -> int:
    """Delete every other row; the deleting transaction's id."""
    with _pg(url, autocommit=False) as conn:
        conn.execute("DELETE FROM events WHERE id % 2 = 0")
        row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        conn.commit()
    assert row is not None
    return int(row[0])


@contextmanager
def snapshot(url: str, after_xid: int | None = None) -> Iterator[int]:
    """Another session in a REPEATABLE READ transaction that has taken its snapshot
    (it read another table): its backend pid. With after_xid, a snapshot whose xmin is
    past that transaction: on a server shared with other processes, a transaction in
    another database that began before it ended holds a new snapshot's xmin back, and
    VACUUM then rightly keeps what it deleted; such a snapshot is taken again."""
    deadline = time.monotonic() + 60
    while True:
        conn = _pg(url, autocommit=False)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT count(*) FROM other").fetchone()
        if after_xid is None:
            break
        row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
        assert row is not None
        if int(row[0]) > after_xid:
            break
        conn.close()
        assert time.monotonic() < deadline, f"no snapshot past transaction {after_xid} in 60 s"
        time.sleep(0.2)
    try:
        yield conn.info.backend_pid
    finally:
        conn.close()


def _vacuum(config: Any) -> Any:
    plan = one_step_plan("maintenance", "db", "postgresql", "optimize_table", {"table": "events"})
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    return result.steps[0].output


def test_rows_an_older_snapshot_sees_are_reported_kept_with_who_holds_it(home, pg_url):
    _table(pg_url)
    config = use_target(home, pg_url)
    with snapshot(pg_url) as holder:
        _delete_half(pg_url)
        output = _vacuum(config)
    assert output["vacuumed"] is True
    assert output["dead_rows_after"] == ROWS // 2
    assert output["dead_rows_kept"] == ROWS // 2
    [kept_by] = output["kept_by"]
    assert kept_by.startswith(f"pid {holder} (") and "in a transaction for " in kept_by
    assert "SELECT count(*) FROM other" in kept_by
    # Once the snapshot is gone, the same VACUUM removes them.
    again = _vacuum(config)
    assert again["dead_rows_after"] == 0 and "kept_by" not in again


def test_the_maintenance_report_says_what_vacuum_left_and_why(home, pg_url):
    _table(pg_url)
    config = use_target(home, pg_url)
    with snapshot(pg_url) as holder:
        _delete_half(pg_url)
        result = commands.run_job(
            config, "maintenance", {"type": "full", "tables": ["events"]}, approver=PreApproved()
        )
    assert result.status == "completed", result.error
    report = result.steps[-1].output
    assert report["dead_rows_kept"]["events"]["dead_rows_kept"] == ROWS // 2
    assert (
        f"{ROWS // 2} dead row(s) in 1 table(s) VACUUM could not remove: an older snapshot "
        f"still sees them, held by pid {holder} ("
    ) in report["summary"]


def test_a_snapshot_taken_after_the_delete_is_not_blamed(home, pg_url):
    _table(pg_url)
    config = use_target(home, pg_url)
    deleted_by = _delete_half(pg_url)
    with snapshot(pg_url, after_xid=deleted_by):
        output = _vacuum(config)
    assert output["dead_rows_after"] == 0
    assert "kept_by" not in output and "dead_rows_kept" not in output


def test_without_any_other_snapshot_nothing_is_said(home, pg_url):
    _table(pg_url)
    config = use_target(home, pg_url)
    _delete_half(pg_url)
    result = commands.run_job(
        config, "maintenance", {"type": "full", "tables": ["events"]}, approver=PreApproved()
    )
    report = result.steps[-1].output
    assert report["dead_rows_kept"] == {}
    assert "could not remove" not in report["summary"]
