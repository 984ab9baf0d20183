"""A state store whose disk fails under a running process: its files made unwritable (the
immutable flag, which stops root too) and its file system filled up, each while a step
runs. The run stops within RUN_BOUND seconds of the fault with exit code 2 (the store, not
the target, must be fixed) and one line naming the store and what happened to its disk,
a full one with its file system and free space; never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from aishell.errors import StateError
from tests.helpers import tmpfs
from tests.services import unavailable
from tests.state.test_state_vanish import RUN_BOUND, one_line, run_with_a_fault


def store_on(home: Path, disk: Path) -> None:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["state"]["url"] = f"sqlite:///{disk / 'state.db'}"
    path.write_text(yaml.safe_dump(data))


def test_a_store_made_unwritable_mid_run(home: Path, pg_url: str) -> None:
    # The immutable flag: root's writes fail too, also through a descriptor open before.
    # Not on the -shm: SQLite writes it through a shared mapping, where a refused write is
    # SIGBUS, which no process can turn into a line (the check before any step is).
    made: list[Path] = []

    def unwritable(store: Path) -> None:
        for path in (store, store.with_name(store.name + "-wal")):
            if path.exists() and subprocess.run(["chattr", "+i", str(path)]).returncode == 0:
                made.append(path)
        if not made:
            unavailable("chattr +i is not supported on this file system")

    try:
        err, took = run_with_a_fault(home, pg_url, unwritable, StateError.exit_code)
    finally:
        for path in made:
            subprocess.run(["chattr", "-i", str(path)], check=False)
    one_line(err, "state.db", "read-only")
    assert took < RUN_BOUND


def test_a_store_whose_disk_fills_up_mid_run(home: Path, pg_url: str, tmp_path: Path):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        store_on(home, disk)

        def fill(_store: Path) -> None:
            # Unbuffered: a write the full disk cuts short leaves nothing for close to
            # flush (and fail on), whatever room the store left.
            with open(disk / "filler", "wb", buffering=0) as out:
                try:
                    while True:
                        out.write(b"\0" * 65536)
                        out.flush()
                except OSError:
                    pass

        err, took = run_with_a_fault(home, pg_url, fill, StateError.exit_code)
    one_line(err, "state.db is full: the file system at", "bytes free", str(disk))
    assert took < RUN_BOUND
