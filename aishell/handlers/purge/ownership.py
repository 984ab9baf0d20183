"""An archive file is one run's: the run names it in its checkpoints before it makes it,
writes each batch's bytes only after checkpointing where they start, how long they are
and their digest, and on resume cuts back nothing but those bytes of its own batch in
doubt. Bytes after what it wrote that are not that batch's (another run's, a person's,
a tool's) are never cut: the resume refuses, naming the file, and they stay. Another run
that names the same file is refused while the first is not finished, naming it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aishell.errors import StepFailed
from aishell.handlers.purge.archivefile import ArchiveFile
from aishell.tool.context import ToolContext

# The checkpoint's record of which file its run archives into (absolute, its folder's
# links resolved), written before the file is made.
ARCHIVE_PATH = "archive_path"


def archive_key(path: Path) -> str:
    """The file's path as every run names it: absolute, its folder's links resolved."""
    return str(Path(os.path.realpath(path.parent)) / path.name)


def claimed(path: Path, run_id: str, status: str) -> str:
    """Why a run may not archive into a file another run, not finished, archives into."""
    return (
        f"archive file {path} belongs to run {run_id} ({status}), which has not finished: "
        f"finish it first (`aishell resume {run_id}`), or archive to another file"
    )


def refuse_if_claimed(ctx: ToolContext, path: Path) -> None:
    """Refuse, naming it, another run not finished that archives into this file."""
    others = ctx.runs_progressing_with(ARCHIVE_PATH, archive_key(path))
    if others:
        raise StepFailed(claimed(path, *others[0]))


@dataclass(frozen=True)
class BatchBytes:
    """A batch's rows as the archive file will hold them, from `start`."""

    start: int
    data: bytes
    # PostgreSQL: the settings its rows were written under (exactread.SETTINGS), which
    # a resume reads them again under to compare them (exactread.judged_under).
    settings: tuple[str, ...] = ()

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def pending(self) -> dict[str, Any]:
        """What the checkpoint keeps of them, written before they are."""
        kept: dict[str, Any] = {
            "archive_from": self.start,
            "archive_offset": self.end,
            "archive_digest": hashlib.sha256(self.data).hexdigest(),
        }
        if self.settings:
            kept["archive_settings"] = list(self.settings)
        return kept


def write_batch(archive: ArchiveFile, batch: BatchBytes) -> int:
    """Append the batch's bytes, durably; a write that fails leaves none of them."""
    try:
        return archive.write(batch.data)
    except OSError:
        # Only this batch's bytes, known here, are cut: the file is as checkpointed.
        archive.cut_to(batch.start)
        raise


def cut_back(
    archive: ArchiveFile, keep: int, doubt: Mapping[str, Any] | None, run_id: str | None
) -> None:
    """Leave the file at the `keep` bytes the run wrote for its committed batches: cut
    off the bytes of its batch in doubt (`doubt`: that batch's pending checkpoint, known
    not to have committed); refuse if anything else lies after `keep`."""
    size = archive.offset
    if size == keep:
        return
    if doubt is not None and _is_batch(archive, keep, size, doubt):
        archive.cut_to(keep)  # rows of a batch that never committed: still in the table
        return
    raise StepFailed(
        f"archive file {archive.path} holds {size - keep:,} bytes after the {keep:,} this "
        "run wrote for its committed batches, and they are not just its own batch in "
        "doubt: someone else wrote to the file, and aishell does not cut off what it did "
        f"not write. Move out everything after its first {keep:,} bytes (the rows of a "
        f"batch that did not commit are still in the table), then `aishell resume {run_id}`"
    )


def _is_batch(archive: ArchiveFile, keep: int, size: int, doubt: Mapping[str, Any]) -> bool:
    """Whether bytes keep..size are exactly those the batch in doubt checkpointed."""
    end = doubt.get("archive_offset")
    if end != size or int(doubt.get("archive_from", keep)) != keep:
        return False
    digest = doubt.get("archive_digest")
    if digest is None:
        # A checkpoint of an aishell that wrote a batch before checkpointing it, and
        # checkpointed only where it ended: the length is all it knows.
        return True
    return hashlib.sha256(archive.read(keep, size - keep)).hexdigest() == str(digest)
