"""`per_server_limit` counts the runs on a database server, however a target's URL names
it: two targets reaching one server as 127.0.0.1 and as localhost share its slots, so a
task for the second waits while the first's run holds the last one.

Before, the slot was keyed by the host as written, and each spelling had a limit of its
own: two names, twice the runs on one server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from aishell.commands.fleet import run_fleet_target
from aishell.commands.tools import load_catalog
from aishell.fleet.sending import sent_with
from aishell.fleet.slots import server_of, server_slot
from aishell.fleet.worker import TryLater
from aishell.state.store import StateStore, signed_store
from tests.conftest import EditConfig
from tests.services import scratch_mysql, scratch_postgresql

SCRATCH = {"postgresql": scratch_postgresql, "mysql": scratch_mysql}


@pytest.fixture(params=["postgresql", "mysql"])
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A scratch database of the test's own on the local server."""
    made: AbstractContextManager[str] = SCRATCH[request.param]()
    with made as url:
        yield url


def test_a_server_named_two_ways_counts_its_runs_once(
    edit_config: EditConfig, home: Path, database: str
) -> None:
    by_address = make_url(database).set(host="127.0.0.1").render_as_string(False)
    by_name = make_url(database).set(host="localhost").render_as_string(False)
    config = edit_config(
        {
            "targets": {"by_address": {"url": by_address}, "by_name": {"url": by_name}},
            "fleet": {"per_server_limit": 1, "slot_wait_seconds": 1},
        }
    )
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job(
            "maintenance", {"type": "quick"}, {}, "by_name", ["by_name"]
        )
    carried = sent_with(load_catalog(config), config.agent("maintenance"), config.main.targets)
    # by_address's run, on another worker, holds the server's one slot.
    with server_slot(config.state_url, server_of(by_address), 1) as held:
        assert held
        with pytest.raises(TryLater, match="runs 1 already"):
            run_fleet_target(config, fleet_id, "by_name", carried)
    with StateStore(config.state_url) as store:
        assert store.fleet_runs(fleet_id) == {}  # nothing ran on the server meanwhile
