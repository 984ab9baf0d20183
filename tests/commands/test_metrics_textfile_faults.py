"""`metrics --textfile` on a file system that refuses the write says so in diskfaults'
one line, as the state store and backups do: which file system, why, and what to do;
never the bare "cannot be written: Read-only file system", nor "full" for a file system
with its bytes free and no inode left."""

from __future__ import annotations

import subprocess
from pathlib import Path

from click.testing import CliRunner, Result

from aishell.cli import cli
from tests.helpers import tmpfs


def textfile(path: Path) -> Result:
    return CliRunner().invoke(cli, ["metrics", "--textfile", str(path)])


def one_line(done: Result) -> str:
    assert done.exit_code == 2, done.output
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.output
    return lines[0]


def test_a_read_only_file_system_is_named_with_its_fix(home: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "1m") as folder:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        said = one_line(textfile(folder / "aishell.prom"))
        assert said == (
            f"Error: Read-only file system: the file system at {folder} is read-only while "
            f"writing metrics file {folder / 'aishell.prom'}; remount it read-write, or "
            "write it elsewhere"
        )


def test_a_file_system_with_no_inode_left_is_not_called_full(home: Path, tmp_path: Path) -> None:
    # tmpfs counts its root folder as one of its inodes: two files more use them up.
    with tmpfs(tmp_path / "inodes", "1m,nr_inodes=3") as folder:
        for name in ("a", "b"):
            (folder / name).write_bytes(b"")
        said = one_line(textfile(folder / "aishell.prom"))
        assert said.startswith(
            f"Error: No space left on device: the file system at {folder} has no free "
            "inodes (all 3 files it may hold are made) while writing metrics file "
        ), said
        assert said.endswith("; free space there, or write it elsewhere"), said
        assert sorted(p.name for p in folder.iterdir()) == ["a", "b"]
