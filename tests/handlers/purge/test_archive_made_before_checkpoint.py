"""A purge stopped after it named its archive file as its own and made it, before the
file's identity reached its checkpoint, left an empty file: the resume makes it again
and goes on, rather than failing for good on "already exists" with advice a resume
cannot follow. A file with bytes there, or a link, is still refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aishell.errors import StepFailed
from aishell.handlers.purge.archive import ARCHIVE_ID, open_archive
from aishell.handlers.purge.ownership import ARCHIVE_PATH, archive_key
from aishell.tool.context import ToolContext


def _resumed(path: Path) -> tuple[dict[str, object], ToolContext]:
    saved: list[dict[str, object]] = []
    ctx = ToolContext(conn=None, dialect="sqlite", target="t", run_id="r1")
    ctx.save_progress = saved.append
    progress = {ARCHIVE_PATH: archive_key(path)}  # named, its identity not checkpointed
    archive, _ = open_archive({"archive_file": str(path)}, ctx, None, progress)
    archive.close()
    return saved[-1], ctx


def test_the_run_s_own_empty_file_is_made_again(tmp_path: Path) -> None:
    path = tmp_path / "logs.jsonl"
    path.touch(mode=0o600)
    checkpoint, _ = _resumed(path)
    assert checkpoint[ARCHIVE_ID] is not None and path.exists()
    assert os.stat(path).st_size == 0


@pytest.mark.parametrize("kind", ["bytes", "link"])
def test_anything_else_there_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "logs.jsonl"
    if kind == "bytes":
        path.write_text('{"id": 1}\n')
    else:
        (tmp_path / "elsewhere").touch()
        path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StepFailed, match="already exists"):
        _resumed(path)
    assert os.path.lexists(path)
