"""An archive file the purge cannot write for another reason than a full disk: a file
size limit (`ulimit -f`; a file system's largest file is met the same way), set on a
real `aishell` process. The step fails with one line naming the file, the error and the
way on, not an internal error; the batch being written is cut off the file and its rows
stay in the table; `aishell resume` once the limit is gone archives each row once.

Time bound: a purge of 3,000 wide rows and its resume, a few seconds."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import load_config
from tests.handlers.purge.test_purge_faults import StateLook
from tests.helpers import use_target
from tests.services import scratch_postgresql

ROWS = 3000
WIDE = 4000  # bytes of payload a row: a third of the rows is about 4 MB of archive
# Over what the state store grows to in the run, under what the archive would.
LIMIT = 2_000_000


def _wide_events(url: str) -> set[int]:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE events (id int PRIMARY KEY, created_at timestamp NOT NULL, p text)")
        )
        now = datetime.now()
        conn.execute(
            text("INSERT INTO events VALUES (:id, :at, :p)"),
            [
                {"id": i, "at": now - timedelta(days=40 if i % 3 == 0 else 1), "p": "x" * WIDE}
                for i in range(1, ROWS + 1)
            ],
        )
    engine.dispose()
    return _ids(url)


def _ids(url: str) -> set[int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = set(conn.execute(text("SELECT id FROM events")).scalars())
    engine.dispose()
    return found


def _limited(home: Path, archive: Path) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

    purge = [
        sys.executable, "-m", "aishell", "run", "log-cleanup", "--non-interactive",
        "--table", "events", "--date-column", "created_at", "--retention-days", "30",
        "--max-batch-size", "100", "--archive-to", f"file:{archive}",
    ]  # fmt: skip
    return subprocess.run(
        purge,
        env={**os.environ, "AISHELL_HOME": str(home)},
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_file_size_limit_fails_the_step_in_one_line_and_resume_goes_on(home: Path) -> None:
    with scratch_postgresql() as url:
        before = _wide_events(url)
        use_target(home, url)
        archive = home / "archive" / "events.jsonl"
        done = _limited(home, archive)
        said = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 1, said
        assert f"archive file {archive} could not be written: File too large, " in said, said
        assert "internal error" not in said, said
        assert "then `aishell resume " in said, said
        run_id = StateLook(home).run_id() or ""
        progress = StateLook(home).progress(run_id)[0] or {}
        data = archive.read_bytes()
        assert len(data) == progress["archive_offset"] < LIMIT, "the failed batch's part is cut"
        archived = [json.loads(line)["id"] for line in data.splitlines()]
        assert sorted(archived) == sorted(before - _ids(url))

        resumed = commands.resume_run(load_config(home=home), run_id)

        assert resumed.status == "completed", resumed.error
        archived = [json.loads(line)["id"] for line in archive.read_bytes().splitlines()]
        old = {i for i in before if i % 3 == 0}
        assert _ids(url) == before - old
        assert sorted(archived) == sorted(old)
