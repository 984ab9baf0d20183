"""MariaDB cannot say who holds a metadata lock, so every other session on the database
is named as a candidate holder: never one of aishell's own (an idle connection of the
same run, here a second one of the target's), which a DBA would look for in vain."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from aishell.targets.engines import open_target
from aishell.targets.lockholders import blocking_sessions
from tests.helpers import run_sql, use_target
from tests.services import scratch_mysql
from tests.targets.test_lock_holders_named import _held


def test_a_mariadb_holder_list_names_other_sessions_never_aishells_own(home: Path) -> None:
    with scratch_mysql() as url:
        run_sql(url, "CREATE TABLE t (id INT PRIMARY KEY)")
        config = use_target(home, url)
        handle = open_target(config, None)
        try:
            idle, asking = handle.connect(), handle.connect()
            own = int(idle.execute(text("SELECT CONNECTION_ID()")).scalar_one())
            idle.commit()  # idle, in no transaction, as a run's other sessions wait
            with _held(url, "t", "the holder") as holder:
                named = " ".join(blocking_sessions(asking, ["t"]))
            assert f"connection {holder} " in named, named
            assert f"connection {own} " not in named, named
            idle.close()
            asking.close()
        finally:
            handle.close()
