"""Connecting is bounded by connect_timeout_seconds, all of it. libpq's connect_timeout
ends at the login; what a new PostgreSQL connection then sends before aishell hands it
out (the search path's pin, SQLAlchemy's first statements, a step's limit) goes past
the cursor events, and waited for ever on a server that stopped answering just after
the login. It now ends at the same bound, in one line naming the setting.

The same holds for a state store on PostgreSQL. The server's port is behind a proxy
the test owns, which keeps one of those statements from the server.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aishell.errors import TargetUnreachable
from tests.faultproxy import Proxy, server_port
from tests.handlers.backup.test_silent_dump import READ_TIMEOUT, frozen_target
from tests.targets.test_silent_limits import SLACK, _aishell, _store_through


# The search path's pin (a listener's own cursor), and SQLAlchemy's first statements (on
# a Connection of its own, through the cursor events).
@pytest.mark.parametrize(
    "kept",
    [
        b"current_setting('search_path'), CURRENT_USER",
        b"set_config('search_path'",
        b"current_schema()",
    ],
)
def test_a_server_silent_after_the_login_ends_the_connect_at_its_timeout(
    home: Path, pg_url: str, kept: bytes
):
    with frozen_target(home, pg_url) as (target, proxy):
        proxy.hold(kept)
        started = time.monotonic()
        with pytest.raises(TargetUnreachable) as raised:
            target.connect()
        took = time.monotonic() - started
        proxy.release()
    assert took < READ_TIMEOUT + 5, took
    said = str(raised.value)
    assert "targets.db.connect_timeout_seconds" in said, said
    assert "\n" not in said


def test_a_state_store_silent_after_the_login_is_one_line_naming_the_setting(
    home: Path, pg_url: str
):
    """The same for a state store on PostgreSQL: SQLAlchemy's first statements on its
    first connection are kept from the server; the command ends at the store's connect
    timeout (2 s) plus a child's start-up, in one line."""
    proxy = Proxy(server_port(pg_url))
    try:
        _store_through(home, pg_url, proxy.port)
        proxy.hold(b"pg_catalog.version()")
        started = time.monotonic()
        done = _aishell(home, "runs", "list")
        took = time.monotonic() - started
    finally:
        proxy.release()
        proxy.close()
    assert took < 2 + SLACK, took
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: The state store "), lines[0]
    assert lines[0].endswith("(state.connect_timeout_seconds)"), lines[0]
    assert done.returncode != 0
