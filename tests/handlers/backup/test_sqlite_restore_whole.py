"""A SQLite restore of a chain (a full backup and an increment) killed part way leaves the
file as it was, whole: the chain is built in a scratch file beside it and copied over it
in one transaction, where each increment's drops used to commit one by one over the file
already overwritten by the full backup. Resumed, it restores the chain whole, and its
scratch file is gone."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from aishell import commands
from tests.handlers.backup.test_restore_prechecks import Recorder
from tests.handlers.backup.test_sqlite_increment_counters import _take
from tests.handlers.backup.test_sqlite_increment_schema import _sqlite_run
from tests.helpers import use_target

_DRIVER = """
import sys
from pathlib import Path
from aishell import commands
from aishell.config.models import load_config
from aishell.policy.approvers import Prompting
config = load_config(home=Path(sys.argv[1]))
commands.restore(
    config, int(sys.argv[2]), "db", replace=True, approver=Prompting(ask=lambda r: "yes")
)
"""


def _held(path: Path) -> dict[str, tuple[int, int]]:
    """Each table's rows and the sum of their ids; busy (a restore writing): empty."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=0)
    try:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")]
        return {
            n: tuple(conn.execute(f'SELECT count(*), total(rowid) FROM "{n}"').fetchone())
            for n in names
        }
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()


def _building(target: Path) -> bool:
    """Whether a scratch file beside the target holds more than a megabyte."""
    for scratch in target.parent.glob(f"{target.name}.restore-*"):
        with contextlib.suppress(OSError):
            if scratch.stat().st_size > 1 << 20:
                return True
    return False


def test_a_sqlite_chain_killed_while_it_restores_leaves_the_file_whole(
    home: Path, demo_db: Path, child: list[subprocess.Popen[bytes]]
) -> None:
    config = use_target(home, f"sqlite:///{demo_db}")
    _take(config, "full")
    # The increment reloads app_logs, grown to some 86,000 rows: its load takes a while.
    grow = (
        "INSERT INTO app_logs (created_at, level, service, message, request_id) "
        "SELECT created_at, level, service, message || ' again', request_id FROM app_logs"
    )
    _sqlite_run(demo_db, *[grow] * 4)
    _take(config, "incremental")
    newest = commands.list_backups(config, "db")[0]
    assert newest["kind"] == "incremental"
    backup = _held(demo_db)
    # The file moves on: what it holds now is its own.
    _sqlite_run(demo_db, "DELETE FROM app_logs WHERE id % 2 = 0", "DELETE FROM users")
    before = _held(demo_db)
    assert before != backup

    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(home), str(newest["id"])],
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child.append(proc)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        # Killed once the increment is being loaded: into the scratch file beside the
        # target, or (as restores did) into the target itself, whose app_logs it emptied.
        held = _held(demo_db)
        if _building(demo_db) or (held and held.get("app_logs", (0, 0))[0] == 0):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the restore ended before it was killed"
    assert _held(demo_db) == before

    [run] = [r for r in commands.list_runs(config) if r["status"] != "completed"]
    resumed = commands.resume_run(config, run["run_id"], approver=Recorder().approver)
    assert resumed.status == "completed", resumed.steps[0].error
    assert _held(demo_db) == backup
    assert list(demo_db.parent.glob(f"{demo_db.name}.restore-*")) == []
