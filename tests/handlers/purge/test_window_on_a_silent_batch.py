"""A purge whose batch's connection goes silent ends at the maintenance window's close,
not at the step's limit.

The purge holds to its deadline (the window's end, its run time) between batches: a
batch under way is let to end. A batch whose connection went silent (a proxy the test
owns keeps the first DELETE from the server, while every other connection answers, as
when a NAT dropped one flow) never ends, and the purge waited out the step's whole
limit (a day by default) past the window. Now, past its deadline, the server is asked
whether it runs the batch: it does not, so the batch is cancelled and its socket
closed; the purge reconnects, finds the batch never committed, and stops at the
window's end as it does on an answering server, its rows all there for the next run.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aishell import commands
from tests.faultproxy import Proxy, server_port, through
from tests.handlers.purge.test_log_cleanup import SMALL, fill, job, rows_of
from tests.services import scratch_server
from tests.targets.test_limits import in_thread

# The target's read timeout, and the connect's: the cut comes this long after the cancel.
READ_TIMEOUT = 1
# The step's limit: without the fix the silent batch waits all of it.
STEP_LIMIT = 40
# The window closes this long after the run's first step starts (on the policy's clock).
WINDOW_LEFT = 3
# From the window's close to the run's end: two looks at the waiting batch (one each
# LOOK_SECONDS), the server asked, the cancel's read timeout, the reconnect, the
# checkpoint and the run lock's release; generous for a loaded two-core machine.
BOUND = 15


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_the_window_ends_a_purge_whose_batch_went_silent(home, edit_config, dialect):
    hour = 3
    with scratch_server(dialect) as url:
        fill(url)
        before = rows_of(url)
        proxy = Proxy(server_port(url))
        try:
            config = edit_config(
                {
                    "default_target": "db",
                    "targets": {
                        "db": {
                            "url": through(proxy.port, url),
                            "environment": "test",
                            "read_timeout_seconds": READ_TIMEOUT,
                            "connect_timeout_seconds": READ_TIMEOUT,
                        }
                    },
                },
                log_cleanup={
                    "default_config": {"max_execution_time": STEP_LIMIT},
                    "safety_constraints": [
                        {"type": "purge_limits"},
                        {"type": "maintenance_window", "allowed_hours": [hour]},
                    ],
                },
            )
            fake = datetime(2026, 11, 23, hour, 60 - 1, 60 - WINDOW_LEFT, tzinfo=UTC)
            started: list[datetime] = []

            def clock() -> datetime:
                # From the first step's reading: planning on a loaded machine uses none.
                if not started:
                    started.append(datetime.now(UTC))
                return fake + (datetime.now(UTC) - started[0])

            # The first batch's DELETE never reaches the server; all else answers.
            proxy.hold(b"DELETE FROM")
            result = in_thread(
                lambda: commands.run_job(config, "log_cleanup", job(**SMALL), clock=clock)
            )
            ended = datetime.now(UTC)
            assert proxy.held_once.is_set(), "the batch's DELETE was never sent"
        finally:
            proxy.close()
        assert rows_of(url) == before
    took = (ended - started[0]).total_seconds()
    assert took < WINDOW_LEFT + BOUND, took
    purge = result.steps[1]
    assert purge.status == "succeeded", (purge.status, purge.error, result.error)
    assert purge.output["stopped_by"] == "maintenance window closes at 04:00 UTC"
    assert purge.output["rows_deleted"] == 0 and not purge.output["complete"]
