"""doctor's client checks on a server that stops answering once the program logged in:
bounded by the target's own timeouts, and said as the server's silence."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from aishell.commands.clientlogins import client_logins
from aishell.targets.engines import open_target
from tests.faultproxy import Proxy, server_port, through
from tests.services import scratch_postgresql
from tests.targets.test_limits import HANG, configure, in_thread

CONNECT_TIMEOUT = 2
READ_TIMEOUT = 3
# A loaded machine's process start-up and the check's kill of its program.
SLACK = 10


@pytest.fixture
def fixsil_pg() -> Iterator[str]:
    with scratch_postgresql(name=f"fixsil_{uuid.uuid4().hex[:10]}") as url:
        yield url


def test_pg_dump_on_a_server_silent_after_login_is_bounded_by_the_target(home, fixsil_pg):
    """pg_dump logs in, then its session's set-up (SET DATESTYLE) is kept from the
    server and the proxy freezes: the check ends within connect_timeout_seconds +
    read_timeout_seconds, saying the server stopped answering."""
    proxy = Proxy(server_port(fixsil_pg))
    config = configure(
        home,
        through(proxy.port, fixsil_pg),
        read_timeout_seconds=READ_TIMEOUT,
        connect_timeout_seconds=CONNECT_TIMEOUT,
    )
    target = open_target(config, "db")
    try:
        proxy.hold(b"DATESTYLE")
        started = time.monotonic()
        checks = in_thread(lambda: client_logins(target))
        took = time.monotonic() - started
        assert proxy.held_once.wait(HANG), "pg_dump never sent its set-up"
    finally:
        proxy.close()
        target.close()
    first = checks[0]
    assert first["program"] == "pg_dump" and not first["logged_in"], checks
    assert first["error"] == (
        f"the server stopped answering: pg_dump did not end within "
        f"{CONNECT_TIMEOUT + READ_TIMEOUT} s (targets.db.connect_timeout_seconds + "
        "read_timeout_seconds)"
    ), first["error"]
    assert took < CONNECT_TIMEOUT + READ_TIMEOUT + SLACK, took
