"""Schedules served with `schedule serve --fleet`, for the tests of their triggers: a
fleet on Redis with a queue of the test's own (its keys deleted at the end, the broker
being shared), schedules added as `aishell schedule add` adds them, and what a trigger
left in the state store."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import text

from aishell.cli import cli
from aishell.commands.fleet import queue_schedule, watch_fleet
from aishell.config.models import Config
from aishell.fleet.app import broker_url
from aishell.state.store import StateStore
from tests.conftest import EditConfig
from tests.fleet.queues import delete_queue


@contextmanager
def fleet_on_redis(edit_config: EditConfig, **fleet: Any) -> Iterator[Config]:
    """The home's config with a fleet on the local Redis; its queue and the keys Redis
    keeps for it deleted at the end."""
    queue = f"aishell-test-{uuid.uuid4().hex[:8]}"
    settings = {"broker_url": "redis://127.0.0.1:6379/0", "queue": queue}
    config = edit_config({"fleet": {**settings, "slot_wait_seconds": 0.2, **fleet}})
    try:
        yield config
    finally:
        delete_queue(config)
        forget_queue_keys(config)


def forget_queue_keys(config: Config) -> None:
    """Every key Redis keeps for the test's queue: the queue (a task sent back to it as
    its worker stopped), the tasks not acknowledged (a killed worker's) and its bindings."""
    import redis

    queue = config.main.fleet.queue
    kept = [f"{queue}.{key}" for key in ("unacked", "unacked_index", "unacked_mutex")]
    bindings = [f"_kombu.{kind}.{queue}" for kind in ("binding", "binding_permanent")]
    client = redis.Redis.from_url(broker_url(config))
    try:
        client.delete(queue, *kept, *bindings)
    finally:
        client.close()


def add_schedule(home: Path, name: str, *words: str, cron: str = "0 2 * * *") -> None:
    """`aishell schedule add NAME --cron CRON -- WORDS`."""
    args = ["--home", str(home), "schedule", "add", name, "--cron", cron, "--", *words]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output


def trigger(config: Config, name: str) -> None:
    """The schedule's trigger, as `schedule serve --fleet` fires it."""
    queue_schedule(config, name, "cron", threading.Event())


def fleet_ids(config: Config) -> list[str]:
    """Every fleet job's id, oldest first."""
    with StateStore(config.state_url) as store:
        found = store._conn.execute(text("SELECT fleet_id FROM fleet_jobs ORDER BY created_at"))
        ids = [str(row[0]) for row in found]
        store._conn.rollback()
    return ids


def only_fleet_job(config: Config, wait: float = 90) -> dict[str, Any]:
    """The one fleet job the triggers sent, once its targets' runs are over."""
    (fleet_id,) = fleet_ids(config)
    return watch_fleet(config, fleet_id, wait, None)


def rows(database: Path, table: str = "app_logs") -> int:
    with closing(sqlite3.connect(database)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
