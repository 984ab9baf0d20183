"""A target that stops answering after the run is recorded and before its first step
(the tools' connection, the liveness watch) ends the run in the store: failed, with how
to go on, and the command's line names the run. Left `running`, it looked alive to
every later command and to a long-lived process's own listing."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.errors import AishellError
from aishell.executor.loop import Executor
from aishell.policy.approvers import PreApproved
from aishell.state.store import StateStore
from tests.faultproxy import Proxy, server_port, through
from tests.services import engine, scratch_postgresql
from tests.targets.test_limits import configure, in_thread


@pytest.fixture
def fixbefore_pg() -> Iterator[str]:
    with scratch_postgresql(name=f"fixbefore_{uuid.uuid4().hex[:10]}") as url:
        made = engine(url)
        with made.begin() as conn:
            conn.execute(text("CREATE TABLE fixbefore_t (id int PRIMARY KEY, v text)"))
            conn.execute(
                text("INSERT INTO fixbefore_t SELECT g, 'x' FROM generate_series(1, 50) g")
            )
        made.dispose()
        yield url


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_target_silent_before_the_first_step_ends_the_run(
    home, fixbefore_pg, monkeypatch, dry_run
):
    proxy = Proxy(server_port(fixbefore_pg))
    opened = Executor._tool_context

    def silent_first(self: Executor, run_id: str, dry: bool) -> Any:
        proxy.freeze()  # planning is done and the run recorded: the server goes silent
        return opened(self, run_id, dry)

    monkeypatch.setattr(Executor, "_tool_context", silent_first)
    try:
        config = configure(
            home,
            through(proxy.port, fixbefore_pg),
            read_timeout_seconds=3,
            connect_timeout_seconds=2,
        )
        with pytest.raises(AishellError) as err:
            in_thread(
                lambda: commands.run_job(
                    config,
                    "maintenance",
                    {"type": "quick"},
                    approver=PreApproved(),
                    dry_run=dry_run,
                )
            )
    finally:
        proxy.close()
    message = str(err.value)
    found = re.search(r"`aishell resume ([0-9a-f]+)`", message)
    assert found, message
    assert "no step ran" in message
    with StateStore(config.state_url) as store:
        run = store.get_run(found.group(1))
    assert run["status"] == "failed", run
    assert run["finished_at"] is not None
    assert run["error"] == message
