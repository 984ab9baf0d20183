"""The broker's queue a test made, deleted when it ends: brokers are shared."""

from __future__ import annotations

from contextlib import suppress

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
