"""A SQLite restore while another process writes the target: what the restore then
measures is the backup plus that process's writes, so a mismatch is said to be theirs
(stop the writers, restore again), not the backup's (restore another backup)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from aishell import commands
from aishell.config.models import Config
from tests.handlers.backup.test_restore_prechecks import Recorder, sqlite_backup


def test_a_restore_another_process_wrote_during_blames_the_writes_not_the_backup(
    config: Config, demo_db: Path, home: Path
) -> None:
    backup = sqlite_backup(config)
    stop, wrote = threading.Event(), []
    made = iter(range(10**9))

    def write() -> None:
        conn = sqlite3.connect(demo_db, timeout=60, isolation_level=None)
        try:
            while not stop.is_set():
                try:
                    conn.execute(
                        "INSERT INTO users (email, name, country, created_at) "
                        "VALUES (?, 'w', 'NL', '2026-01-01')",
                        (f"writer-{next(made)}@example.org",),
                    )
                    wrote.append(1)
                except sqlite3.DatabaseError:  # the file replaced under it: again
                    pass
                stop.wait(0.002)
        finally:
            conn.close()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        run = commands.restore(
            config,
            backup["id"],
            "demo",
            replace=True,
            approver=Recorder().approver,
        )
    finally:
        stop.set()
        writer.join(30)
    assert wrote
    assert run.status == "failed", run.status
    error = run.error or ""
    assert "Another process wrote to 'demo' while" in error, error
    assert "restore another backup" not in error, error
