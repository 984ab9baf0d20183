"""A purge's job is checked before it is planned, reading the table itself (an epoch
column's values tell its unit). Where another session holds the table past the lock
wait, planning stops in one line naming the holder, not as an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.errors import TableHeld
from tests.policy.test_held_when_counted import _config, held
from tests.services import engine, scratch_mysql, scratch_postgresql

CASES = {
    "postgresql": (scratch_postgresql, "LOCK TABLE ev_epoch IN ACCESS EXCLUSIVE MODE", "pid"),
    "mysql": (scratch_mysql, "LOCK TABLES ev_epoch WRITE", "connection"),
}


@pytest.mark.parametrize("engine_name", sorted(CASES))
def test_a_held_table_stops_the_purge_plan_in_one_line(home: Path, engine_name: str) -> None:
    scratch, lock, session = CASES[engine_name]
    with scratch() as url:
        with engine(url).begin() as conn:
            conn.execute(text("CREATE TABLE ev_epoch (id int PRIMARY KEY, created_epoch bigint)"))
            conn.execute(text("INSERT INTO ev_epoch VALUES (1, 1700000000), (2, 1800000000)"))
        config = _config(home, url)
        job = {"table": "ev_epoch", "date_column": "created_epoch", "retention_days": 30}
        with held(url, lock) as pid, pytest.raises(TableHeld) as stopped:
            commands.plan_job(config, "log_cleanup", job)

    said = str(stopped.value)
    assert said.startswith("ev_epoch could not be read to check the log_cleanup job: held (")
    assert f"{session} {pid} " in said and said.endswith("plan again once it is released")
    assert stopped.value.exit_code == 1
