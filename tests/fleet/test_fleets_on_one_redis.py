"""Two fleets on one Redis database keep apart by their queues, the tasks they have
taken but not yet acknowledged too: a fleet whose visibility timeout is short puts back
its own unacknowledged tasks, never another fleet's task still running."""

from __future__ import annotations

import time
import uuid

from kombu import Connection

from aishell.config.fleet import FleetConfig
from aishell.fleet.app import transport_options

REDIS = "redis://127.0.0.1:6379/0"


def test_a_fleet_s_sweep_puts_back_only_its_own_tasks() -> None:
    unique = uuid.uuid4().hex[:8]
    slow = FleetConfig(queue=f"aishell-test-slow-{unique}", visibility_timeout_seconds=3600)
    quick = FleetConfig(queue=f"aishell-test-quick-{unique}", visibility_timeout_seconds=5)
    with Connection(REDIS, transport_options=transport_options(slow)) as taking:
        queue = taking.SimpleQueue(slow.queue)
        try:
            queue.put({"task": "long"})
            taken = queue.get(timeout=5)  # running, not acknowledged
            with Connection(
                REDIS, transport_options={**transport_options(quick), "visibility_timeout": 1}
            ) as sweeping:
                time.sleep(1.5)
                sweeping.default_channel.qos.restore_visible(num=100, interval=1)
            # Not put back: the other fleet's sweep left it (Redis keeps a queue as a list).
            assert taking.default_channel.client.llen(slow.queue) == 0
            taken.ack()
        finally:
            queue.clear()
            queue.close()
            client = taking.default_channel.client
            for key in ("unacked", "unacked_index", "unacked_mutex"):
                client.delete(f"{slow.queue}.{key}", f"{quick.queue}.{key}")
