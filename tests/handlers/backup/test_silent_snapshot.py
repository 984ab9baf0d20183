"""A PostgreSQL backup whose server goes silent while it reads in its snapshot's own
session (the snapshot's export, the tables' list and sizes, the counts and checksums
beside pg_dump) ends like any step: the run's stop (the run lock found silent here, as
it would be by a signal or the run's time limit) holds every statement of the target
still waiting to read_timeout_seconds, not only the step's own connection's. Before,
that second session's statement waited out the step's own limit (a day): the run hung,
deaf to SIGTERM and --max-run-time alike.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from tests.faultproxy import Proxy, server_port
from tests.handlers.backup.test_silent_dump import SILENT, through_proxy
from tests.helpers import fill_table

HANG_SECONDS = 120  # a hang detector, never a timing assertion

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "marker",
    [b"pg_export_snapshot", b"tree(top, rel)", b"count(*) FROM ONLY"],
    ids=["export", "tables", "counts"],
)
def test_a_snapshot_read_on_a_silent_server_ends_the_run(
    home: Path, pg_url: str, marker: bytes
) -> None:
    fill_table(pg_url, "dumped", 20)
    proxy = Proxy(server_port(pg_url))
    found: dict[str, Any] = {}
    try:
        config = through_proxy(home, proxy, pg_url)
        proxy.freeze_once_held(marker)

        def backup() -> None:
            found["result"] = commands.run_job(config, "backup", {"type": "full", "verify": False})

        worker = threading.Thread(target=backup, daemon=True)
        worker.start()
        worker.join(HANG_SECONDS)
        assert proxy.held_once.is_set(), f"the backup never sent {marker!r}"
        assert not worker.is_alive(), "the backup hangs on its snapshot's silent session"
    finally:
        proxy.close()
    result = found["result"]
    assert result.status in ("failed", "interrupted"), (result.status, result.error)
    step = next(s for s in result.steps if s.tool == "backup_database_full")
    error = step.error or ""
    assert "\n" not in error, error
    assert any(why in (result.error or "") + error for why in SILENT), (result.error, error)
    assert commands.list_backups(config) == []
