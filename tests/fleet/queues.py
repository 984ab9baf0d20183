"""The broker's queue a test made, deleted when it ends (brokers are shared), and a
worker on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from aishell.config.models import Config
from aishell.fleet.app import broker_url


def delete_queue(config: Config) -> None:
    """Delete the fleet's queue (and its exchange on RabbitMQ); gone already is fine."""
    from kombu import Connection

    name = config.main.fleet.queue
    with Connection(broker_url(config), connect_timeout=5) as connection:
        channel = connection.default_channel
        with suppress(Exception):
            channel.queue_delete(name)
        with suppress(Exception):
            channel.exchange_delete(name)


@contextmanager
def running_worker(
    home: Path, *options: str, log_folder: Path | None = None, stop_wait: float = 20
) -> Iterator[subprocess.Popen[bytes]]:
    """`aishell worker [options]` on the home's fleet for the block's length, its log in
    worker.log (of `log_folder`, else of the home); then stopped as `kill PID` stops it
    (SIGTERM to its main process alone), killed past `stop_wait` seconds."""
    name = f"w-{uuid.uuid4().hex[:8]}@test"
    with open((log_folder or home) / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "aishell", "worker", *options, "--name", name],
            env={**os.environ, "AISHELL_HOME": str(home)},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        yield worker
    finally:
        worker.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            worker.wait(stop_wait)
        with suppress(ProcessLookupError):
            worker.kill()
        worker.wait()
