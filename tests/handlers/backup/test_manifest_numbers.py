"""A manifest beside a backup is a file anyone with the folder may edit: one whose JSON
holds an integer of more digits than Python converts is refused as not a manifest, in
one line, like any other that is not one."""

from __future__ import annotations

import pytest

from aishell.errors import StepFailed
from aishell.handlers.backup.manifest import _manifest_path, read_manifest


@pytest.mark.parametrize("body", ['{"rows": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000])
def test_a_manifest_past_what_json_reads_is_refused_in_one_line(tmp_path, body):
    archive = tmp_path / "backup.dump"
    archive.write_bytes(b"x")
    _manifest_path(archive).write_text(body)
    with pytest.raises(StepFailed, match="is not a manifest's JSON"):
        read_manifest(archive)
