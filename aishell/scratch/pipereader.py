"""A child process's output drained by a thread as it comes.

A dump tool writes faster than one thread can write its output to a file, hash it and
read its rows in turn; while that thread is busy, the tool's pipe fills and the tool
waits. Here a second thread empties the pipes as soon as the tool writes: stdout's
chunks wait in a bounded queue for the thread that uses them, stderr is kept whole. The
GIL is no bottleneck: reading a pipe and hashing a chunk both release it.
"""

from __future__ import annotations

import os
import selectors
import threading
import time
from collections import deque

# The most a read takes at once (and a pipe holds, where the kernel allows it).
STREAM_CHUNK = 1 << 20
# Bytes read ahead of their user: the reading thread waits once this many are queued.
READ_AHEAD_BYTES = 16 << 20
# How long the reader of a slow tool's output waits for its pipe to fill.
FILL_SECONDS = 0.002
# How often the reading thread looks whether it was told to stop.
_STOP_CHECK_SECONDS = 0.1
_END = b""


class PipeReader:
    """The stdout (chunk by chunk) and stderr (whole) of a child, read by a thread of
    their own from the moment it is made. close() stops the thread; it always ends
    within a moment, whether or not the child is still writing."""

    def __init__(self, out: int, err: int, ahead: int = READ_AHEAD_BYTES) -> None:
        self._chunks: deque[bytes | BaseException] = deque()
        self._queued = 0  # bytes in _chunks
        self._ahead = ahead
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._stderr = bytearray()
        self._thread = threading.Thread(
            target=self._read, args=(out, err), name="aishell-pipe-reader", daemon=True
        )
        self._thread.start()

    def next_chunk(self, timeout: float) -> bytes | None:
        """The next chunk of stdout; b"" once both pipes are at their end; None when
        nothing came within timeout. What failed in the reading thread is raised here."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._chunks, timeout):
                return None
            item = self._chunks.popleft()
            if isinstance(item, bytes):
                self._queued -= len(item)
            self._changed.notify_all()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> bytes:
        """Stop reading; what the child wrote to stderr until then."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        self._thread.join()
        return bytes(self._stderr)

    def _read(self, out: int, err: int) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(out, selectors.EVENT_READ)
                selector.register(err, selectors.EVENT_READ)
                while selector.get_map():
                    if self._stop.is_set():
                        return
                    for key, _events in selector.select(_STOP_CHECK_SECONDS):
                        data = os.read(key.fd, STREAM_CHUNK)
                        if not data:
                            selector.unregister(key.fd)
                        elif key.fd == err:
                            self._stderr += data
                        elif not self._put(data):
                            return
                        elif len(data) < STREAM_CHUNK // 8:
                            # The tool writes slower than this reads: let its pipe fill
                            # a little, so that each wake-up takes more than a few pages.
                            time.sleep(FILL_SECONDS)
            self._put(_END)
        except BaseException as exc:  # raised again by next_chunk, in the user's thread
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> bool:
        """Queue an item, waiting while `ahead` bytes are queued; False if told to stop
        first. (The queue may hold one chunk more than `ahead`.)"""
        with self._changed:
            while self._queued >= self._ahead and not self._stop.is_set():
                self._changed.wait(_STOP_CHECK_SECONDS)
            if self._stop.is_set():
                return False
            self._chunks.append(item)
            if isinstance(item, bytes):
                self._queued += len(item)
            self._changed.notify_all()
        return True
