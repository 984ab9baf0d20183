"""A reader that closes its end of the pipe (`aishell runs list | head -1`) never stops a
command midway: what was still to print is dropped, the command goes on to its end (a
run finishes and is recorded) and exits as it would have, with no word about the pipe."""

from __future__ import annotations

import os
import sys
from contextlib import suppress
from typing import Any, TextIO


class DropsWhenClosed:
    """A text stream that passes everything on to `stream` until its reader is gone,
    then drops it: the file descriptor is pointed at /dev/null, so what is still in the
    stream's buffer and what a library writes past this object go nowhere too."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if self.reader_gone:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        self.reader_gone = True
        with suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        with suppress(OSError, ValueError):
            self._stream.flush()  # now to /dev/null: nothing is left to fail at exit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def drop_output_once_its_reader_is_gone() -> None:
    """Put stdout and stderr behind DropsWhenClosed (the console entry point's first act)."""
    if not isinstance(sys.stdout, DropsWhenClosed) and sys.stdout is not None:
        sys.stdout = DropsWhenClosed(sys.stdout)
    if not isinstance(sys.stderr, DropsWhenClosed) and sys.stderr is not None:
        sys.stderr = DropsWhenClosed(sys.stderr)
