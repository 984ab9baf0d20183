"""A restore's preview and prompt name the other sessions connected to the target's
database (an application still at work there), since the restore neither waits for
them nor ends them; aishell's own sessions (its run lock's) are not named."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from aishell import commands
from tests.handlers.backup.test_restore_prechecks import Recorder, server_backup


def test_a_restore_names_the_sessions_on_its_target(
    server_config: Any, server_url: str, home: Any
) -> None:
    backup = server_backup(server_config, server_url)
    # An application's session on the target's database, idle between its statements.
    app = create_engine(server_url, poolclass=NullPool)
    with app.connect() as held:
        if server_url.startswith("postgresql"):
            marker = f"pid {held.execute(text('SELECT pg_backend_pid()')).scalar_one()} ("
        else:
            marker = f"connection {held.execute(text('SELECT CONNECTION_ID()')).scalar_one()} ("
        recorder = Recorder(answer="no")
        done = commands.restore(
            server_config, backup["id"], "db", replace=True, approver=recorder.approver
        )
        assert done.status != "completed"
        [request] = recorder.asked
        sessions = request.estimate["other_sessions"]
        # The test's own pool may hold a session there too; aishell's are never named.
        assert [s for s in sessions if marker in s], sessions
        assert not [s for s in sessions if "aishell" in s], sessions
        [line] = [s for s in request.sql if "other session" in s]
        many = "1 other session is" if len(sessions) == 1 else f"{len(sessions)} other sessions are"
        assert line.startswith(f"-- {many} connected to the database of 'db' now, and the restore ")
        assert marker in line
    app.dispose()
    # Gone, it is no longer named.
    recorder = Recorder(answer="no")
    commands.restore(server_config, backup["id"], "db", replace=True, approver=recorder.approver)
    [request] = recorder.asked
    assert not [s for s in request.estimate["other_sessions"] if marker in s]
