"""The schedules' next runs, read while another process writes the state store: a
store nothing has served yet has no job table, and reading it must not make one (a
write, which would wait out the other's transaction for the whole busy timeout)."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from datetime import datetime

from aishell.scheduling.nextruns import next_runs
from aishell.scheduling.serve import JOB_TABLE
from aishell.state.faults import sqlite_path
from tests.conftest import EditConfig
from tests.helpers import state_store_busy


def test_next_runs_of_a_store_never_served_do_not_wait_for_a_writer(
    edit_config: EditConfig,
) -> None:
    config = edit_config({"state": {"busy_timeout_ms": 120_000}})
    found: list[dict[str, datetime | None]] = []
    with state_store_busy(config):
        reading = threading.Thread(target=lambda: found.append(next_runs(config)))
        reading.start()
        # A wait for the writer's lock lasts the busy timeout (120 s); a read, none.
        reading.join(20)
        ended_under_the_writer = not reading.is_alive()
    reading.join(150)
    assert ended_under_the_writer, "reading the next runs waited for the writer's lock"
    assert found == [{}]
    path = sqlite_path(config.state_url)
    assert path is not None
    with closing(sqlite3.connect(path)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert JOB_TABLE not in tables
