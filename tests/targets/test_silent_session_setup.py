"""A server that answers the login, then falls silent while the new session is set up
(its autocommit switched on), fails the connection as one that cannot be made: the
driver's own error, raised outside SQLAlchemy's wrapping, once escaped the liveness
watch and ended its thread, leaving a run on a frozen server unwatched."""

from __future__ import annotations

import pytest

from aishell.errors import TargetUnreachable
from aishell.targets.engines import open_target
from tests.faultproxy import Proxy, server_port, through
from tests.targets.test_limits import configure


def test_a_session_left_unanswered_as_it_is_set_up_fails_as_unreachable(home, mysql_url) -> None:
    proxy = Proxy(server_port(mysql_url))
    try:
        config = configure(
            home, through(proxy.port, mysql_url), read_timeout_seconds=1, connect_timeout_seconds=2
        )
        target = open_target(config, "db")
        try:
            # The second: PyMySQL sets its own mode at the login (inside SQLAlchemy), then
            # the session is switched to autocommit: that one is kept from the server.
            proxy.hold(b"SET AUTOCOMMIT", after=(b"SET AUTOCOMMIT",))
            with pytest.raises(TargetUnreachable) as failed:
                target.connect()
            assert proxy.held_once.is_set()
            assert "Cannot connect to target 'db'" in str(failed.value), failed.value
        finally:
            proxy.release()
            target.close()
    finally:
        proxy.close()
