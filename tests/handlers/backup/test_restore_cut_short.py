"""A PostgreSQL restore whose client program stops part way (its session ended while it
loads a table, or the run asked to stop) says what it left: pg_restore restores in one
transaction, so the target is left as it was, and it says so. (A MariaDB restore loads
into a scratch database and swaps it in: test_restore_swapped.py; one that cannot be
swapped, test_restore_whole_or_nothing.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config
from tests.handlers.backup.test_backup_lock_wait import verified_full_backup
from tests.handlers.backup.test_restore_prechecks import Recorder
from tests.helpers import use_target
from tests.services import engine

ROWS = 300_000
# The loading session of this test's restore, and how to end it.
LOADING = {
    "postgresql": (
        "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE 'COPY public.z_big %'",
        "SELECT pg_catalog.pg_terminate_backend(:id)",
    ),
    "mysql": (
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
        "AND INFO LIKE 'INSERT INTO `z_big` %'",
        "KILL CONNECTION :id",
    ),
}
NUMBERS = {
    "postgresql": f"generate_series(1, {ROWS}) AS s(i)",
    "mysql": f"(SELECT seq AS i FROM seq_1_to_{ROWS}) AS s",
}


# What keeps the client running once it loads z_big, so the stop lands while it still
# runs however quick the rest of its load. MariaDB: a lock its next statement (the dump's
# DROP of the table after z_big) waits for. PostgreSQL, whose restore holds every table
# it makes in its one transaction: zz_after's check, which takes seconds for its row.
HELD_AFTER_THE_LOAD = {
    "postgresql": [],
    "mysql": ["BEGIN", "SELECT count(*) FROM zz_after"],
}
SLOW_CHECK = (
    "CREATE FUNCTION slow(i integer) RETURNS boolean LANGUAGE sql "
    "AS 'SELECT pg_catalog.pg_sleep(3) IS NOT NULL OR i IS NOT NULL'"
)
# What the target holds after the cut, by dialect: what the restore says of it, and
# whether z_big's rows (the backup's as the target's own) are there whole.
LEFT = {
    "postgresql": ("Nothing of it was restored (one transaction, rolled back)", True),
    "mysql": ("may be partly restored", False),
}


def _once_loading(
    url: str, dialect: str, act: Callable[[Any, int], None], ended: list, done: threading.Event
) -> None:
    """`act(conn, session)` once the restore's session is seen loading z_big (60 s at
    most); what it holds on `conn` is held until `done`."""
    find, _end = LOADING[dialect]
    deadline = time.monotonic() + 60
    with engine(url).connect() as conn:
        while time.monotonic() < deadline:
            found = conn.execute(text(find)).scalar()
            conn.rollback()
            if found is not None:
                act(conn, int(found))
                ended.append(int(found))
                done.wait(120)
                return
            time.sleep(0.005)


def _ending_its_session(dialect: str, config: Config) -> Callable[[Any, int], None]:
    return lambda conn, session: conn.execute(text(LOADING[dialect][1]), {"id": session})


def _asking_the_run_to_stop(dialect: str, config: Config) -> Callable[[Any, int], None]:
    def stop(conn: Any, _session: int) -> None:
        for statement in HELD_AFTER_THE_LOAD[dialect]:  # held in a transaction
            conn.execute(text(statement))
        [running] = [run for run in commands.list_runs(config) if run["status"] == "running"]
        commands.stop_run(config, running["run_id"])

    return stop


@pytest.mark.parametrize("dialect", ["postgresql"])
@pytest.mark.parametrize(
    ("cut", "status"), [(_ending_its_session, "failed"), (_asking_the_run_to_stop, "interrupted")]
)
def test_a_restore_cut_short_says_the_target_may_be_partly_restored(
    dialect, cut, status, home, request
):
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    config = use_target(home, url)
    with engine(url).begin() as conn:
        conn.execute(text("CREATE TABLE a_small (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO a_small VALUES (1)"))
        conn.execute(text("CREATE TABLE z_big (id INTEGER PRIMARY KEY, v VARCHAR(100))"))
        if dialect == "postgresql":
            conn.execute(text(SLOW_CHECK))
            conn.execute(
                text("CREATE TABLE zz_after (id INTEGER PRIMARY KEY CHECK (public.slow(id)))")
            )
            conn.execute(text("INSERT INTO zz_after VALUES (1)"))
        else:
            conn.execute(text("CREATE TABLE zz_after (id INTEGER PRIMARY KEY)"))
        numbers = NUMBERS[dialect]
        conn.execute(text(f"INSERT INTO z_big SELECT i, REPEAT('x', 100) FROM {numbers}"))
    taken = verified_full_backup(config)
    ended: list[int] = []
    act = cut(dialect, config)
    restored = threading.Event()
    killer = threading.Thread(
        target=_once_loading, args=(url, dialect, act, ended, restored), daemon=True
    )
    killer.start()
    result = commands.restore(config, taken["id"], "db", replace=True, approver=Recorder().approver)
    restored.set()
    killer.join(60)
    assert ended, "the restore was never seen loading z_big"
    assert result.status == status, result.error
    error = result.steps[0].error or ""
    said, whole = LEFT[dialect]
    assert said in error, error
    assert whole or "restore again with --replace" in error, error
    if status == "failed":
        # What it says is so: the load of z_big was cut, and it is not whole; or all
        # of the restore was undone, the target's rows as they were.
        with engine(url).connect() as conn:
            left = conn.execute(text("SELECT count(*) FROM z_big")).scalar()
        assert left == ROWS if whole else left < ROWS
    else:
        # A restore is not idempotent: resumed, it waits for a person to decide.
        asked = Recorder(answer="no")
        resumed = commands.resume_run(config, result.run_id, approver=asked.approver)
        assert resumed.status == "waiting_approval" and not asked.asked
        assert (resumed.steps[0].error or "").startswith("it was interrupted, its effect is")
