"""The Celery app of a fleet: the broker from config, tasks acknowledged late.

A task is acknowledged when it has finished, and rejected back to the queue when its
worker is lost mid-task (task_reject_on_worker_lost): a worker killed in the middle of
a run has its task delivered to another, which resumes the run (the run lock says
whether its first holder is gone). No result backend: what a run did is in the state
store. One task at a time per worker process (prefetch 1), so a slow target never holds
others queued behind it on a busy worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aishell.config.checks import env_password
from aishell.config.fleet import FleetConfig
from aishell.config.models import Config
from aishell.errors import ConfigError

if TYPE_CHECKING:
    from celery import Celery

# The task every fleet job sends, one per target: (fleet_id, target).
RUN_TARGET = "aishell.fleet.run_target"


def broker_url(config: Config) -> str:
    """The broker's URL with its password from the environment (never from a file). A
    config that names none has no fleet: a default broker on this machine would be
    whatever RabbitMQ answers there, shared with anyone's fleet on its queue."""
    fleet = config.main.fleet
    if "broker_url" not in fleet.model_fields_set:
        raise ConfigError(
            f"{config.path}: no fleet broker is configured; add "
            "`fleet: {broker_url: amqp://USER@HOST:5672//, queue: NAME}` (or redis://...) "
            "naming the broker and a queue of this fleet's own"
        )
    password = None
    if fleet.password_env:
        whose = "The fleet broker's password"
        password = env_password(fleet.password_env, whose, "fleet.password_env", config.path)
    return fleet.broker(password)


def transport_options(fleet: FleetConfig) -> dict[str, float | str]:
    """Redis: a task not acknowledged for `visibility_timeout` goes back to the queue,
    found by a sweep each worker makes. kombu sweeps every tenth time it is asked, every
    10 s: a killed worker's task would wait 100 s more; here every worker sweeps at most
    a quarter of the timeout apart (a cheap sorted-set read). RabbitMQ ignores these.

    The timeouts: without them a broker that accepts a connection and never answers
    holds a send (and a worker) for good. Redis takes socket_*; RabbitMQ's connection
    read_ and write_timeout (its connect timeout is broker_connection_timeout).

    A Redis database keeps the tasks not yet acknowledged under keys of its own, which
    every fleet on it would share: a fleet of a shorter visibility timeout would put
    back another's tasks still running. Each queue has its own (fleet.queue)."""
    visibility = fleet.visibility_timeout_seconds
    return {
        "unacked_key": f"{fleet.queue}.unacked",
        "unacked_index_key": f"{fleet.queue}.unacked_index",
        "unacked_mutex_key": f"{fleet.queue}.unacked_mutex",
        "visibility_timeout": visibility,
        "unacked_restore_interval": max(1, min(10, visibility // 4)),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": fleet.connect_timeout_seconds,
        "socket_timeout": fleet.read_timeout_seconds,
        "read_timeout": fleet.read_timeout_seconds,
        "write_timeout": fleet.read_timeout_seconds,
    }


def make_app(config: Config) -> Celery:
    from celery import Celery

    fleet = config.main.fleet
    app = Celery("aishell", broker=broker_url(config), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_default_queue=fleet.queue,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(fleet),
        broker_connection_timeout=fleet.connect_timeout_seconds,
        # The broker is a queue, not a store: without it, sending fails at once
        # instead of waiting forever.
        broker_connection_max_retries=3,
        # A send the broker failed is tried twice more, not three times each waiting
        # out the read timeout.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    )
    return app
