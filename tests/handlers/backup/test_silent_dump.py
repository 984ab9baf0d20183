"""A dump whose server stops answering mid-dump ends within the target's limits, like
every other step: neither mariadb-dump nor pg_dump has a read timeout of its own (and
mariadb-dump takes no connect timeout in its option file either), so aishell looks at
the server through its own connection once the dump has written nothing for a second,
and that look is bounded by read_timeout_seconds. The dump program is killed, its step
fails in one line naming the setting, and nothing of the dump is left behind.

The server's port is behind a proxy the test owns: it keeps the dump's data read from
the server, then freezes, answering nothing to anyone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.executor.stopping import LOCK_CHECK_SECONDS
from aishell.targets.engines import Target, open_target
from aishell.targets.limits import TargetSilent
from tests.faultproxy import Proxy, server_port, through
from tests.helpers import fill_table
from tests.targets.test_limits import configure

READ_TIMEOUT = 2
# The dump's silence noticed (a second) and the look at the server cut off after the
# read timeout, or the run lock found silent at its next look (stopping.LOCK_CHECK_SECONDS)
# and the read timeout; then the program killed, its session looked for (a connect
# timeout) and the run lock let go (a read timeout); generous for a loaded machine.
BOUND_SECONDS = LOCK_CHECK_SECONDS + 3 * READ_TIMEOUT + 20
# What the run's or the step's error says of the silent server.
SILENT = ("read_timeout_seconds", "lost the run lock")
# What each program sends when it reads a table's rows.
DATA_READ = {"postgresql": b"COPY ", "mysql": b"SQL_NO_CACHE"}

pytestmark = pytest.mark.slow


def through_proxy(home: Path, proxy: Proxy, url: str) -> Any:
    """The config with target `db` at url through the proxy, silent after READ_TIMEOUT."""
    return configure(
        home,
        through(proxy.port, url),
        read_timeout_seconds=READ_TIMEOUT,
        connect_timeout_seconds=READ_TIMEOUT,
    )


def test_a_dump_whose_server_goes_silent_ends_within_the_read_timeout(home: Path, server_url: str):
    dialect = "postgresql" if server_url.startswith("postgresql") else "mysql"
    fill_table(server_url, "dumped", 20)
    proxy = Proxy(server_port(server_url))
    try:
        config = through_proxy(home, proxy, server_url)
        proxy.hold(DATA_READ[dialect])

        def freeze_once_held() -> None:
            proxy.held_once.wait(60)
            proxy.freeze()

        freezer = threading.Thread(target=freeze_once_held, daemon=True)
        freezer.start()
        started = time.monotonic()
        result = commands.run_job(config, "backup", {"type": "full", "verify": False})
        took = time.monotonic() - started
        freezer.join(5)
        assert proxy.held_once.is_set(), "the dump never read its table"
    finally:
        proxy.close()
    # Ended by the dump's step, cut off at the read timeout (failed), or by the run lock
    # found silent as long (interrupted, resumable): whichever looked first.
    assert result.status in ("failed", "interrupted"), (result.status, result.error)
    step = next(s for s in result.steps if s.tool == "backup_database_full")
    error = step.error or ""
    assert step.status in ("failed", "interrupted") and "\n" not in error, (step.status, error)
    assert any(why in (result.error or "") + error for why in SILENT), (result.error, error)
    assert took < BOUND_SECONDS, took
    # Nothing of the dump is left: no partial file, no backup in the catalog.
    assert commands.list_backups(config) == []
    leftovers = [p for p in (home / "backups").rglob("*") if p.is_file()]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_a_transactions_end_on_a_silent_postgresql_waits_the_read_timeout(
    home: Path, pg_url: str, end: str
):
    """A COMMIT or ROLLBACK goes past the cursor events (libpq has no read timeout):
    on a server that stopped answering it waited for ever. It now ends after
    read_timeout_seconds, in one line naming the setting."""
    with frozen_target(home, pg_url) as (target, proxy):
        conn = target.engine.connect()
        conn.execute(text("SELECT 1")).scalar()  # a transaction is open
        ends_at_the_read_timeout(proxy, getattr(conn, end))


@contextmanager
def frozen_target(home: Path, url: str) -> Iterator[tuple[Target, Proxy]]:
    """Target `db` at url through a proxy the test freezes; both closed after."""
    proxy = Proxy(server_port(url))
    try:
        target = open_target(through_proxy(home, proxy, url), "db")
        try:
            yield target, proxy
        finally:
            target.close()
    finally:
        proxy.close()


def ends_at_the_read_timeout(proxy: Proxy, call: Callable[[], Any]) -> None:
    """`call`, sent once the proxy froze, ends within the read timeout (and a margin for
    a loaded machine), in one line naming the setting."""
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(TargetSilent) as raised:
        call()
    took = time.monotonic() - started
    assert took < READ_TIMEOUT + 5, took
    assert "read_timeout_seconds" in str(raised.value), raised.value
    assert "\n" not in str(raised.value)
