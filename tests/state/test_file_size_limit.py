"""A process whose file size limit (`ulimit -f`, a service's LimitFSIZE) is below what it
must write: the state store, a copy of it, a plan file. The disk has room, so it is no
full disk; each is one line naming the file and the limit, never "disk I/O error" to
check the disk for, nor an internal error, and nothing half-written is left.

Python ignores SIGXFSZ, so a write past the limit fails with EFBIG (SQLite says "disk I/O
error"), as in any aishell process a limit is set on."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import yaml

LIMIT = 4096
LINE = f"this process may write files of at most {LIMIT:,} bytes (`ulimit -f`"


def limited(*args: str, limit: int = LIMIT) -> subprocess.CompletedProcess[str]:
    """`aishell ARGS` with the file size limit at `limit` bytes."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "aishell", *args],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lower,
    )


def one_line(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert "internal error" not in lines[0] and "disk I/O error" not in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_a_store_past_the_limit_and_a_copy_of_it_are_one_line_each(
    home: Path, demo_db: Path
) -> None:
    made = limited("runs", "list", limit=resource.RLIM_INFINITY)
    assert made.returncode == 0, made.stderr
    store = home / "state.db"
    for args in (["plan", "maintenance"], ["runs", "list"], ["approve", "ffffffffffff"]):
        one_line(limited(*args), f"while writing the state store {store}: {LINE}")
    copied = limited("doctor", "--backup-state", limit=store.stat().st_size // 2)
    one_line(copied, "while writing a copy of the state store to", f"{store}.backup-")
    assert sorted(p.name for p in home.glob("state.db*")) == ["state.db", "state.db.has-history"]
    # Nothing of the store was lost: without the limit it is as it was.
    assert limited("runs", "list", limit=resource.RLIM_INFINITY).returncode == 0


def test_a_plan_file_past_the_limit_is_one_line_and_not_left(
    home: Path, demo_db: Path, pg_url: str
) -> None:
    # The store on a server: only the plan file meets the limit.
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["state"] = {"url": pg_url}
    path.write_text(yaml.safe_dump(data))
    out = home / "plans" / "nightly.json"
    out.parent.mkdir()
    done = limited("plan", "maintenance", "--type", "full", "--out", str(out))
    one_line(done, f"while writing plan file {out}: {LINE}")
    assert list(out.parent.iterdir()) == []
