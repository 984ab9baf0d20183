"""A task's watch for its worker's shutdown ends once told, in the worker's own process
too, where the stop was made already: a told event stays set, so a watch that went on
would spin on a wait that no longer blocks, for the rest of the run."""

from __future__ import annotations

import multiprocessing
import threading
import time

from aishell.fleet import worker


def _watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "aishell-worker-told"]


def test_the_watch_ends_once_told_where_the_stop_was_made_already() -> None:
    told = multiprocessing.get_context("fork").Event()
    shutdown = threading.Event()
    with worker._told(told, shutdown):
        shutdown.set()  # the worker's own process: its shutdown handler stopped the runs
        told.set()
        deadline = time.monotonic() + 5 * worker.TOLD_POLL_SECONDS
        while _watchers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _watchers(), "the watch went on after it was told"


def test_a_child_told_stops_its_runs() -> None:
    told = multiprocessing.get_context("fork").Event()
    shutdown = threading.Event()
    with worker._told(told, shutdown):
        told.set()
        assert shutdown.wait(5 * worker.TOLD_POLL_SECONDS)
