"""The fleet's per-server slots on a state store's server.

- A state URL that carries its timeouts (`state.connect_timeout_seconds` and
  `read_timeout_seconds`, or the URL's own query) takes slots up to the limit and frees
  them, on PostgreSQL and MariaDB: the driver is never handed a read_timeout it does
  not know.
- A state server that stops answering while a slot is taken ends the take within the
  read timeout, in one line naming the setting, instead of holding the worker.
- A fleet task whose state server stops answering goes back to the queue (TryLater),
  not failed and dropped with its target left `queued` for good.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from aishell import commands
from aishell.errors import StateError
from aishell.fleet.slots import server_slot
from aishell.fleet.worker import TryLater
from aishell.state.store import signed_store
from tests.conftest import EditConfig
from tests.faultproxy import Proxy, server_port, through
from tests.services import MYSQL_ADMIN, PG_ADMIN, scratch_postgresql

TIMEOUTS = "connect_timeout=5&read_timeout=2"


@pytest.mark.parametrize("url", [PG_ADMIN, MYSQL_ADMIN], ids=["postgresql", "mysql"])
def test_slots_on_a_state_url_with_its_timeouts_are_taken_to_the_limit_and_freed(
    url: str,
) -> None:
    state_url = f"{url}?{TIMEOUTS}"
    server = f"postgresql:slots-{uuid.uuid4().hex}:5432"  # a server of this test's own
    with (
        server_slot(state_url, server, 2) as first,
        server_slot(state_url, server, 2) as second,
        server_slot(state_url, server, 2) as third,
    ):
        assert (first, second, third) == (True, True, False)
    with server_slot(state_url, server, 1) as again:
        assert again


@pytest.mark.parametrize("url", [PG_ADMIN, MYSQL_ADMIN], ids=["postgresql", "mysql"])
def test_a_state_server_that_stops_answering_ends_the_take_at_the_read_timeout(
    url: str,
) -> None:
    proxy = Proxy(server_port(url))
    try:
        state_url = f"{through(proxy.port, url)}?{TIMEOUTS}"
        marker = b"pg_try_advisory_lock" if url.startswith("postgresql") else b"GET_LOCK"
        proxy.hold(marker)
        started = time.monotonic()
        said = r"did not answer within 2 s \(state.read_timeout_seconds\)"
        with pytest.raises(StateError, match=said), server_slot(state_url, "x", 1):
            pass
        assert time.monotonic() - started < 2 + 6  # the read timeout, and a busy machine's
    finally:
        proxy.close()


def test_a_task_whose_state_server_stops_answering_is_tried_again_later(
    home: Path, demo_db: Path, edit_config: EditConfig
) -> None:
    with scratch_postgresql() as store_url:
        proxy = Proxy(server_port(store_url))
        try:
            config = edit_config({"state": {"url": f"{through(proxy.port, store_url)}?{TIMEOUTS}"}})
            with signed_store(config) as store:
                fleet_id = store.create_fleet_job(
                    "maintenance", {"type": "quick"}, {}, "demo", ["demo"]
                )
            proxy.freeze()
            started = time.monotonic()
            said = r"^the state store: .* did not answer within 5 s \(state.connect_timeout"
            with pytest.raises(TryLater, match=said):
                commands.run_fleet_target(config, fleet_id, "demo")
            assert time.monotonic() - started < 5 + 6  # the connect timeout, a busy machine
        finally:
            proxy.close()


def test_a_slot_whose_session_is_cut_is_reported_lost() -> None:
    """The slot's session to the state store's server is ended (a terminated backend):
    the server let go of the slot, another worker may take it, and the holder is told,
    so that its run stops (commands/fleet.py: `aishell stop` of the run)."""
    import threading

    from sqlalchemy import text

    from tests.services import engine

    server = f"postgresql:slots-{uuid.uuid4().hex}:5432"
    told = threading.Event()
    with (
        scratch_postgresql() as state_url,
        server_slot(state_url, server, 1, told.set, every=0.2) as held,
    ):
        assert held
        with engine(state_url).connect() as admin:
            pids = (
                admin.execute(
                    text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
                        "AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())"
                    )
                )
                .scalars()
                .all()
            )
            assert len(pids) == 1, pids
            admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pids[0]})
            admin.commit()
        assert told.wait(10), "the lost slot was not reported"
        with server_slot(state_url, server, 1) as again:
            assert again  # the server let go of it: another may take it
