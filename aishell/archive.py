"""The JSON lines file a purge copies rows into before it deletes them.

Each batch is appended, flushed and fsynced before the batch's delete commits, and
the file's length after every batch is checkpointed; a resumed purge first cuts the
file back to the last length whose batch is known to have committed, so the file
holds every deleted row exactly once.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID


class ArchiveFile:
    def __init__(self, path: Path, keep_bytes: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        self._file = open(path, "ab")  # noqa: SIM115 - held open across batches
        if keep_bytes is not None and self._file.tell() > keep_bytes:
            # Rows of a batch that never committed: they are still in the table.
            self._file.truncate(keep_bytes)
            os.fsync(self._file.fileno())
        if created:
            _fsync_dir(path.parent)

    @property
    def offset(self) -> int:
        # The file's length, not the write position: after a truncation the position
        # stays at the old end until the next write.
        self._file.flush()
        return os.fstat(self._file.fileno()).st_size

    def append(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Write the rows and make them durable; returns the file's new length."""
        lines = [
            json.dumps(dict(zip(columns, row, strict=True)), default=_jsonable, sort_keys=False)
            for row in rows
        ]
        if lines:
            self._file.write(("\n".join(lines) + "\n").encode())
            self._file.flush()
            os.fsync(self._file.fileno())
        return self.offset

    def close(self) -> None:
        self._file.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    raise TypeError(f"cannot archive a value of type {type(value).__name__}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
