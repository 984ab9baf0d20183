"""Why a write failed, in one line naming the file and the cause, wherever aishell writes.
SQLite says only "disk I/O error" for a used-up disk quota (EDQUOT), a read-only file
system or a file size limit: a write in the file's folder (`probe_write`) finds which,
each caused here for real. A used-up quota is said as that, never as a full disk (its
file system has room): this machine's kernel has no quotas (no CONFIG_QUOTA), so that
line is checked from the errno a write would give."""

from __future__ import annotations

import errno
import resource
import subprocess
import sys
from pathlib import Path

from aishell.diskfaults import no_space_line, probe_write
from aishell.handlers.backup.disk import disk_full
from aishell.handlers.backup.processes import ToolFailed
from tests.helpers import tmpfs
from tests.services import unavailable


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_write_in_a_full_file_system_finds_it_full(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        with open(disk / "filler", "wb") as out:
            try:
                while True:
                    out.write(bytes(65536))
                    out.flush()
            except OSError:
                pass
        probed = probe_write(disk)
        assert probed is not None and probed.errno == errno.ENOSPC, probed
        assert _left(disk) == ["filler"]


def test_a_write_in_a_read_only_file_system_finds_it_read_only(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)])
    if done.returncode != 0:
        unavailable("cannot mount a read-only tmpfs here")
    try:
        probed = probe_write(folder)
        assert probed is not None and probed.errno == errno.EROFS, probed
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_write_past_the_file_size_limit_finds_the_limit(tmp_path: Path) -> None:
    """Python ignores SIGXFSZ: a write past `ulimit -f` fails with EFBIG."""
    code = "import sys\nfrom aishell.diskfaults import probe_write\n"
    code += "from pathlib import Path\nprint(probe_write(Path(sys.argv[1])).errno)"

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        preexec_fn=lower,
        check=True,
    )
    assert int(done.stdout) == errno.EFBIG
    assert _left(tmp_path) == []


def test_a_write_with_room_finds_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    assert probe_write(tmp_path) is None and _left(tmp_path) == []


def test_a_used_up_quota_is_named_not_called_a_full_disk(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    quota = OSError(errno.EDQUOT, "Disk quota exceeded", str(plan))
    line = no_space_line(plan, "writing plan file", "free space there", quota)
    assert line.startswith("Disk quota exceeded: the quota of user "), line
    assert "on the file system at " in line and f"while writing plan file {plan}" in line, line
    assert line.endswith("; have the quota raised, or free space there") and " full" not in line
    full = no_space_line(plan, "writing plan file", "free space there")
    assert full.startswith("No space left on device: the file system at ") and " is full " in full
    # A program that says so (pg_dump, mariadb-dump): its backup step says the same.
    said = ToolFailed("pg_dump", "pg_dump: error: could not write: Disk quota exceeded", 1)
    step = str(disk_full(tmp_path / "b.dump", "writing the backup", exc=said))
    assert step.startswith("Disk quota exceeded: the quota of user ") and " full" not in step
