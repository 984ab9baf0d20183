"""A dump tool's output written to its file as it streams: hashed in the same pass, and
handed on chunk by chunk to whatever reads the rows out of it.

The sha256 of a backup is taken from the bytes as they are written, so the file is not
read a second time; the kernel is told to start writing each few megabytes to disk as
they come (Linux sync_file_range), so the fsync before the rename has little left to do.
The chunks come read ahead by a thread of their own (aishell/scratch/pipereader.py): the tool
goes on writing while this one writes, hashes and reads what it wrote before.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import BinaryIO, TypeVar

from aishell.diskfaults import mount_point
from aishell.errors import StepFailed
from aishell.files import open_private
from aishell.handlers.backup.processes import tool_output
from aishell.handlers.backup.reporting import ByteProgress
from aishell.tool.context import ToolContext

T = TypeVar("T")

# Bytes written between two requests to start writing them to disk.
WRITEBACK_BYTES = 8 << 20
# Most bytes written between two looks at the free space left: an estimate of a backup's
# size (table statistics) can be far short of what the dump writes. Nearer the reserve the
# looks come sooner, so that no write ever takes the file system under it.
SPACE_CHECK_BYTES = 1 << 20


def space_reserve(total: int) -> int:
    """What a dump leaves free on its file system, of `total` bytes: it stops before the
    last byte, which the database's files, state.db or the system may need."""
    return min(64 << 20, total // 20)


class _LowSpace(Exception):
    """The next `coming` bytes would leave less than the reserve free of `free`."""

    def __init__(self, free: int, total: int, coming: int = 0) -> None:
        super().__init__(free, total, coming)
        self.free, self.total, self.coming = free, total, coming


_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except AttributeError:
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    started: Callable[[int, int, int, int], int] = call
    return started


_START_WRITEBACK = _sync_file_range()


class Tee:
    """The chunks of a stream, each written to `out` and hashed as it passes on (and
    counted for the progress display, when given one)."""

    def __init__(
        self, chunks: Iterable[bytes], out: BinaryIO, progress: ByteProgress | None = None
    ) -> None:
        self._chunks = iter(chunks)
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0
        self._flushed = 0
        self._looked = 0
        # Bytes that may follow the last look before the next one: none before the first.
        self._budget = 0
        self._progress = progress

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = next(self._chunks)
        if self.size + len(chunk) - self._looked > self._budget:
            self._look_at_space(len(chunk))
        self._out.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)
        if self.size - self._flushed >= WRITEBACK_BYTES:
            self._start_writeback()
        if self._progress is not None:
            self._progress.add(len(chunk))
        return chunk

    def drain(self) -> None:
        """Write and hash whatever the reader left unread."""
        for _chunk in self:
            pass
        self._out.flush()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def _look_at_space(self, coming: int) -> None:
        """Before `coming` bytes are written: stop if they would leave less than the
        reserve free, else set how far the writes may go before the next look."""
        self._out.flush()
        found = os.fstatvfs(self._out.fileno())
        free, total = found.f_bavail * found.f_frsize, found.f_blocks * found.f_frsize
        if free <= found.f_frsize:
            # Another writer took all the space: the write would fail, and is said so.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        # One block more: the file system allocates whole blocks.
        headroom = free - space_reserve(total) - found.f_frsize
        if headroom < coming:
            raise _LowSpace(free, total, coming)
        self._looked = self.size
        self._budget = min(SPACE_CHECK_BYTES, headroom)

    def _start_writeback(self) -> None:
        self._out.flush()
        if _START_WRITEBACK is not None:
            # Asynchronous: the kernel starts writing these pages, nothing waits.
            _START_WRITEBACK(
                self._out.fileno(), self._flushed, self.size - self._flushed, _SYNC_FILE_RANGE_WRITE
            )
        self._flushed = self.size


def stream_into(
    path: Path,
    argv: list[str],
    env: dict[str, str],
    ctx: ToolContext,
    read: Callable[[Iterator[bytes]], T],
    progress: ByteProgress | None = None,
    quiet: tuple[float, Callable[[], None]] | None = None,
) -> tuple[T, str]:
    """Run a dump tool into path, its output hashed and read by `read` on the way (what
    `read` leaves is still written), and its bytes counted by `progress` if given;
    `quiet` as for processes.tool_output. Returns what `read` returned, and the sha256."""
    source = tool_output(argv, env, ctx, quiet)
    # On any failure the tool is killed first, then the file closed.
    try:
        with open_private(path) as out, closing(source):
            tee = Tee(source, out, progress)
            found = read(tee)
            tee.drain()
    except _LowSpace as low:
        raise StepFailed(
            f"Stopped writing {path}: the file system at {mount_point(path)} had "
            f"{low.free:,} of {low.total:,} bytes free, and the dump's next "
            f"{low.coming:,} bytes would have left less than the "
            f"{space_reserve(low.total):,} a backup leaves free for other writers; free "
            "space there, or set backup_dir to a larger disk, and retry"
        ) from None
    return found, tee.sha256


def stream_read(
    argv: list[str],
    env: dict[str, str],
    ctx: ToolContext,
    read: Callable[[Iterator[bytes]], T],
    watch: Callable[[int], None] | None = None,
) -> T:
    """Run a dump tool and read its output as it streams, writing it nowhere; `watch`
    as processes.run_tool's."""
    source = tool_output(argv, env, ctx, watch=watch)
    with closing(source):
        found = read(source)
        for _chunk in source:  # what `read` left, so that the tool ends as it should
            pass
    return found
