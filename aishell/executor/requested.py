"""`aishell stop` reaches a statement whose server stopped answering it, or that only
waits for a lock.

A stop asked with `aishell stop` is a row in the store that the loop reads between
steps (and a long tool between batches): the running statement is let to end. One
whose connection went silent (a flow a NAT or firewall dropped, a pooler that hung,
while the run lock's session still answers) never ends, and the stop waited out the
step's limit (an hour by default, a purge's a day). So while a statement waits, a
thread of its own reads the store for a stop each REQUEST_POLL_SECONDS, on a store
connection of its own (the run's is the step's thread's); once it sees one, it asks
the server, on a session of the target's own, whether it still works on that
statement: one the server works on is let to end, as before (asked again each
REQUEST_POLL_SECONDS, one question a statement, since it may come to wait for a lock);
one it runs not, one that only waits for a lock another session holds (which would
wait out the target's lock_timeout_ms, minutes maybe, with nothing of it to finish),
or a server that does not answer the question, is cancelled (and its socket closed if
the cancel gets no answer), as a signal's stop does. The step then ends interrupted
and the run resumable.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sqlalchemy.exc import SQLAlchemyError

from aishell.errors import AishellError
from aishell.executor.stopping import Stopping
from aishell.state.store import StateStore
from aishell.targets.deadlines import in_flight
from aishell.targets.sessionbusy import stoppable

# How often the store is read for a stop while a statement waits, and how long a
# statement waits before the store is first read (a quick step costs no read).
REQUEST_POLL_SECONDS = 1.0


@contextmanager
def watch_requests(stopping: Stopping, store: StateStore) -> Iterator[None]:
    """While the run lasts, a stop asked while a statement waits reaches it (above).
    `store`: the run's, whose URL the watcher opens on a connection of its own, and
    only while its file is still the one the run opened."""
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(stopping, store, done), name="aishell-stop-requests", daemon=True
    )
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(REQUEST_POLL_SECONDS * 2)


def _watch(stopping: Stopping, store: StateStore, done: threading.Event) -> None:
    reader: StateStore | None = None
    # The statements seen waiting at the last look: only one still waiting a poll
    # later costs a read of the store.
    seen: dict[int, object] = {}
    try:
        while not done.wait(REQUEST_POLL_SECONDS):
            waiting = [(c, m) for c in stopping.connections() if (m := in_flight(c)) is not None]
            old = [(c, m) for c, m in waiting if seen.get(id(c)) is m]
            seen = {id(c): m for c, m in waiting}
            if not old or stopping.signal is not None:
                continue  # nothing waits long, or a signal's stop already cancels it
            if stopping.requested is None:
                if not store.still_its_file():
                    return  # replaced or gone: the run's own next commit says so
                reader = reader or StateStore(store.url)
                stopping.requested = reader.stop_requested(stopping.run_id)
                if stopping.requested is None:
                    continue
            if any(stoppable(conn, mark) for conn, mark in old):
                if not done.is_set():  # a run that ended meanwhile has nothing to cut
                    stopping.cancel_running()
                return
    except (AishellError, SQLAlchemyError):
        return  # the store failed: the loop's own read of it says so between steps
    finally:
        if reader is not None:
            with suppress(AishellError, SQLAlchemyError):
                reader.close()
