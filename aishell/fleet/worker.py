"""The worker: takes fleet tasks off the queue and runs each with the runner it is
given (the commands layer's), one task per process at a time."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from aishell import signalrelay
from aishell.config.models import Config
from aishell.executor.stopping import stop_all, stops_with
from aishell.fleet.app import RUN_TARGET, make_app
from aishell.fleet.sending import broker
from aishell.state.processes import BEAT_SECONDS, process_started, this_host
from aishell.state.store import StateStore

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)


class TryLater(Exception):
    """The task cannot go on now (its server is at its limit, its database is in use,
    its run was interrupted): the queue delivers it again after `seconds`."""

    def __init__(self, seconds: float, why: str) -> None:
        super().__init__(why)
        self.seconds = seconds


# A fleet task's work: (fleet_id, target, what the task was sent with) -> the run's
# status; TryLater to be asked again.
RunTarget = Callable[[str, str, Any], str]

# What a run the worker's shutdown stopped was interrupted by, where a signal's name would be.
WORKER_SHUTDOWN = "the worker's shutdown"


def serve_worker(
    config: Config, run_target: RunTarget, *, concurrency: int, name: str | None = None
) -> int:
    """Consume the fleet's queue until the worker is stopped (SIGTERM: warm shutdown,
    each running task's run stops resumably and its task goes back to the queue); the
    worker's exit code. The broker is asked first:
    one that refuses or does not answer is one line (BrokerUnreachable), no worker."""
    with broker(config, unanswered="the worker did not start"):
        pass
    app = make_app(config)
    shutdown, told = _stopped_by_shutdown()

    @app.task(name=RUN_TARGET, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def fleet_task(task: object, fleet_id: str, target: str, sent_with: Any = None) -> str:
        taken = len(signalrelay.TAKEN)
        try:
            # A shutdown before the run's own signal handling is in place (planning, its
            # recording) reaches Celery's handler alone: the run stops at its start.
            with stops_with(shutdown, WORKER_SHUTDOWN), _told(told, shutdown):
                status = run_target(fleet_id, target, sent_with)
        except TryLater as later:
            logger.info("fleet %s: %s: again in %ss: %s", fleet_id, target, later.seconds, later)
            _pass_on(signalrelay.TAKEN[taken:])
            raise task.retry(countdown=later.seconds) from None  # type: ignore[attr-defined]
        except BaseException:
            _pass_on(signalrelay.TAKEN[taken:])
            raise
        logger.info("fleet %s: %s: %s", fleet_id, target, status)
        _pass_on(signalrelay.TAKEN[taken:])
        return status

    # A pool of children even for one task at a time: the worker's own process keeps
    # its broker connection alive (RabbitMQ's heartbeats) while a child runs the task.
    # Run in this process instead (Celery's solo pool), a task of more than a minute or
    # two misses them: RabbitMQ closes the connection and delivers the task again while
    # its run goes on, or resumes a run a person stopped meanwhile.
    pool = ["--concurrency", str(concurrency)]
    # The processes that run the tasks beat: each of the pool's children, never a
    # parent that forks with the beat's thread in it.
    with _beating_in_children(config):
        return _celery_main(
            app,
            [
                "worker",
                *pool,
                "--queues",
                config.main.fleet.queue,
                "--hostname",
                name or f"aishell@{socket.gethostname()}",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
        )


def _stopped_by_shutdown() -> tuple[threading.Event, Any]:
    """An event set once Celery begins the worker's shutdown (its worker_shutting_down,
    sent from its SIGTERM or SIGINT handler in the worker's main process), which also stops
    every run of the process as a signal would: a run still planning stops as it begins,
    resumably, instead of running its steps while the warm shutdown waits for it. And
    the same told to a pool's children (made before they are forked): see _told."""
    from celery.signals import worker_shutting_down

    shutdown = threading.Event()
    told = multiprocessing.get_context("fork").Event()

    def stop_runs() -> None:
        told.set()
        shutdown.set()
        stop_all(WORKER_SHUTDOWN)

    def shutting_down(**_: object) -> None:
        # Called inside the signal handler, on the main thread in the middle of a task
        # that may hold the locks a stop takes: the stop runs on a thread of its own.
        threading.Thread(target=stop_runs, name="aishell-worker-stop", daemon=True).start()

    worker_shutting_down.connect(shutting_down, weak=False)
    return shutdown, told


# How often a task in a pool's child looks whether its worker is shutting down.
TOLD_POLL_SECONDS = 0.5


@contextmanager
def _told(told: Any, shutdown: threading.Event) -> Iterator[None]:
    """While a task runs in a pool's child, where neither the worker's signal nor its
    worker_shutting_down comes (the warm shutdown would wait for the whole run): once
    the worker says it is shutting down (`told`), the child's runs stop as in the
    worker's own process. Nothing to do where the worker's main process sets it."""
    if told.is_set():
        shutdown.set()  # told before this task began: its run stops as it begins
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if told.wait(TOLD_POLL_SECONDS):
                # Once told, the watch is over: in the worker's own process the stop
                # was made already, and a told event stays set (no wait would block).
                if not shutdown.is_set():
                    shutdown.set()
                    stop_all(WORKER_SHUTDOWN)
                return

    watcher = threading.Thread(target=watch, name="aishell-worker-told", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(TOLD_POLL_SECONDS * 2)


@contextmanager
def _beating_in_children(config: Config) -> Iterator[None]:
    """Each child of the worker's pool beats (_beat) from its start to its end."""
    from celery.signals import worker_process_init

    def beat_here(**_: object) -> None:
        _beat(config)

    worker_process_init.connect(beat_here, weak=False)
    try:
        yield
    finally:
        worker_process_init.disconnect(beat_here)


def _beat(config: Config) -> threading.Event:
    """A thread of this process that stamps its beat now and every BEAT_SECONDS until
    the event returned is set. A beat the store fails is said (once until one is
    stored again) and tried again at the next; it never touches a task."""
    done = threading.Event()
    started = process_started(os.getpid())
    if started is None:  # no /proc: a run records no start time for a beat to match
        return done

    def beat() -> None:
        store: StateStore | None = None
        said = False
        while True:
            try:
                if store is None:
                    store = StateStore(config.state_url)
                    store.forget_old_beats()
                store.beat(this_host(), os.getpid(), started)
                said = False
            except Exception as exc:  # the store's failure, or anything: said, not raised
                if not said:
                    logger.warning("this worker's beat was not stored (tried again): %s", exc)
                said = True
                if store is not None:
                    with suppress(Exception):
                        store.close()
                store = None
            if done.wait(BEAT_SECONDS):
                break
        if store is not None:
            with suppress(Exception):
                store.close()

    threading.Thread(target=beat, name="aishell-beat", daemon=True).start()
    return done


def _pass_on(taken: list[int]) -> None:
    """A stop signal the task's run took (its handler in place of the worker's): the
    worker's own handler, back in place, takes it too, and the worker ends once this
    task is done or sent back."""
    stops = [s for s in taken if s in (signal.SIGTERM, signal.SIGINT)]
    if stops and _in_the_worker_itself():
        os.kill(os.getpid(), stops[-1])


def _in_the_worker_itself() -> bool:
    """Whether the task runs in the worker's main process (the solo pool), where the
    worker's own signal handlers are; a pool's child is stopped by its parent."""
    return multiprocessing.parent_process() is None and (
        threading.current_thread() is threading.main_thread()
    )


def _celery_main(app: Celery, argv: list[str]) -> int:
    """`celery worker` as app.worker_main runs it, with the exit code it drops: a worker
    that gave up on its broker ends 1, so that a service manager restarts it."""
    from celery.bin.celery import celery as command

    command.params[0].default = app  # as app.start sets it: the --app option's default
    try:
        return int(command.main(args=argv, standalone_mode=False) or 0)
    finally:
        command.params[0].default = None
