"""A child's output drained by a thread: the child goes on writing while the chunks wait
for their user, no further ahead than the bound; stderr is kept whole; close() ends the
thread while the child still writes; and a dump streamed this way is still killed when
its step's run is asked to stop."""

from __future__ import annotations

import hashlib
import os
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aishell.errors import StepInterrupted
from aishell.scratch.children import stream_child
from aishell.scratch.ledger import Ledger
from aishell.scratch.pipereader import STREAM_CHUNK, PipeReader

MIB = 1 << 20


def child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def written_bytes(pid: int) -> int:
    """What the process has written so far (Linux's per-process I/O account)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/PID/io")


def read_all(reader: PipeReader) -> bytes:
    got = bytearray()
    while (chunk := reader.next_chunk(5.0)) != b"":
        if chunk is not None:
            got += chunk
    return bytes(got)


# 6 MiB of stdout (more than a pipe holds) and 300 KiB of stderr (more than its pipe
# holds), interleaved, from a seeded generator: the test knows what to expect.
WRITER = """
import os, random, sys
r = random.Random(7)
for i in range(96):
    sys.stdout.buffer.write(r.randbytes(65536)); sys.stdout.flush()
    if i % 8 == 0:
        sys.stderr.buffer.write(b"e" * 25600); sys.stderr.flush()
"""


def expected_stdout() -> bytes:
    r = random.Random(7)
    return b"".join(r.randbytes(65536) for _ in range(96))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_child_finishes_writing_before_anyone_reads_a_byte() -> None:
    proc = child(WRITER)
    assert proc.stdout is not None and proc.stderr is not None
    reader = PipeReader(proc.stdout.fileno(), proc.stderr.fileno())
    try:
        # Nothing is read by the user yet; without the thread the child would wait on
        # its full pipe for ever, and this wait would run out.
        assert proc.wait(timeout=60) == 0
        got = read_all(reader)
    finally:
        stderr = reader.close()
        proc.stdout.close()
        proc.stderr.close()
    assert hashlib.sha256(got).digest() == hashlib.sha256(expected_stdout()).digest()
    assert stderr == b"e" * (25600 * 12)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_child_that_never_stops_is_read_no_further_ahead_than_the_bound() -> None:
    proc = child("import sys\nwhile True: sys.stdout.buffer.write(b'y' * 65536)")
    assert proc.stdout is not None and proc.stderr is not None
    ahead = 4 * MIB
    reader = PipeReader(proc.stdout.fileno(), proc.stderr.fileno(), ahead=ahead)
    try:
        # Once the queue and the pipe are full, the child waits: what it has written
        # stops growing, at no more than the queue (and a chunk over), the pipe and
        # what the child holds.
        seen, settled = -1, 0
        while settled < 5:
            time.sleep(0.2)
            now = written_bytes(proc.pid)
            settled = settled + 1 if now == seen else 0
            seen = now
        assert ahead <= seen <= ahead + 2 * STREAM_CHUNK + MIB
        assert reader.next_chunk(5.0)  # and the user gets its chunks as they were
    finally:
        closing = threading.Thread(target=reader.close)
        closing.start()
        closing.join(30)
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    # The child was still writing: close() ended the thread anyway.
    assert not closing.is_alive()


def test_an_error_in_the_reading_thread_is_raised_to_the_user() -> None:
    # A descriptor number past the process's limit is never open.
    invalid = resource.getrlimit(resource.RLIMIT_NOFILE)[0] + 10
    err, err_write = os.pipe()
    reader = PipeReader(invalid, err)
    try:
        with pytest.raises(OSError):
            read_all(reader)
    finally:
        reader.close()
        os.close(err)
        os.close(err_write)


def test_a_streamed_dump_is_killed_when_its_run_is_asked_to_stop() -> None:
    stop = threading.Event()
    # Its pid first, in 16 bytes, then output for ever.
    code = (
        "import os, sys\nsys.stdout.buffer.write(str(os.getpid()).encode().ljust(16))\n"
        "while True: sys.stdout.buffer.write(b'y' * 65536)"
    )
    stream = stream_child(
        [sys.executable, "-c", code], env={}, ledger=Ledger(), should_stop=stop.is_set
    )
    pid = int(next(stream)[:16])
    stop.set()
    with pytest.raises(StepInterrupted, match="asked to stop"):
        for _chunk in stream:
            pass
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)
