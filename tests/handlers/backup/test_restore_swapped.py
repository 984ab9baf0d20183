"""A MariaDB restore over a target's tables leaves the target holding its old tables whole
or the backup's whole, never a mix, whatever cuts it: its client killed while it loads,
its loading session ended, aishell itself killed (then resumed), the swap held off by a
lock. It loads into a scratch database and swaps the tables in with one RENAME TABLE;
nothing of its scratch databases is left once it ends or a resumed run cleaned up."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config
from tests.handlers.backup.test_backup_lock_wait import verified_full_backup
from tests.handlers.backup.test_restore_prechecks import Recorder, server_backup, sqlite_backup
from tests.helpers import run_sql, use_target
from tests.services import engine

ROWS = 100_000
TABLES = ("a_small", "z_big", "zz_after")


def _target_with_a_backup(home: Path, url: str) -> tuple[Config, dict[str, Any]]:
    """Three tables backed up holding 'backup' in every row; the target's rows then say
    'target', so that what it holds after a restore tells whose they are."""
    config = use_target(home, url)
    run_sql(
        url,
        "CREATE TABLE a_small (id INTEGER PRIMARY KEY, v VARCHAR(100))",
        "INSERT INTO a_small VALUES (1, 'backup')",
        "CREATE TABLE z_big (id INTEGER PRIMARY KEY, v VARCHAR(100))",
        f"INSERT INTO z_big SELECT seq, 'backup' FROM seq_1_to_{ROWS}",
        "CREATE TABLE zz_after (id INTEGER PRIMARY KEY, v VARCHAR(100))",
        "INSERT INTO zz_after VALUES (1, 'backup')",
    )
    taken = verified_full_backup(config)
    run_sql(url, *(f"UPDATE {table} SET v = 'target'" for table in TABLES))
    return config, taken


def _held(url: str) -> dict[str, list[tuple[str, int]]]:
    """Each table of the target with its rows' values and how many of each."""
    with engine(url).connect() as conn:
        tables = conn.execute(
            text(
                "SELECT TABLE_NAME FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME"
            )
        ).scalars()
        return {
            t: [tuple(r) for r in conn.execute(text(f"SELECT v, count(*) FROM {t} GROUP BY v"))]
            for t in list(tables)
        }


def _whole(whose: str) -> dict[str, list[tuple[str, int]]]:
    return {"a_small": [(whose, 1)], "z_big": [(whose, ROWS)], "zz_after": [(whose, 1)]}


def _scratch_databases(home: Path) -> list[str]:
    """The scratch databases the home's ledger holds."""
    with sqlite3.connect(home / "state.db") as state:
        found = state.execute("SELECT name FROM scratch WHERE kind = 'database'").fetchall()
    return [name for (name,) in found]


def _on_server(url: str, names: list[str]) -> list[str]:
    with engine(url).connect() as conn:
        return [
            n
            for n in names
            if conn.execute(
                text("SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"),
                {"n": n},
            ).scalar()
        ]


def _once_loading(home: Path, url: str, act: Callable[[int], None], seen: list[str]) -> None:
    """`act(session)` once the restore's own session loads z_big: into one of the
    scratch databases this home's ledger holds, or (as restores did) into the test's
    own target (60 s at most)."""
    deadline = time.monotonic() + 60
    target = make_url(url).database
    with engine(url).connect() as conn:
        while time.monotonic() < deadline:
            ours = _scratch_databases(home) if (home / "state.db").exists() else []
            ours.append(str(target))
            found = conn.execute(
                text(
                    "SELECT ID, DB FROM information_schema.PROCESSLIST "
                    "WHERE INFO LIKE 'INSERT INTO `z_big` %'"
                )
            ).all()
            conn.rollback()
            mine = [(session, db) for session, db in found if db in ours]
            if mine:
                seen.append(str(mine[0][1]))
                act(int(mine[0][0]))
                return
            time.sleep(0.005)


def _killing_its_client(url: str, config: Config) -> Callable[[int], None]:
    def kill(_session: int) -> None:
        children = subprocess.run(
            ["ps", "--ppid", str(os.getpid()), "-o", "pid=,comm="],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        for line in children:
            pid, name = line.split(None, 1)
            if name.strip() in ("mariadb", "mysql"):
                os.kill(int(pid), signal.SIGKILL)

    return kill


def _ending_its_session(url: str, config: Config) -> Callable[[int], None]:
    def end(session: int) -> None:
        with engine(url).connect() as conn:
            conn.execute(text("KILL CONNECTION :id"), {"id": session})

    return end


def _asking_the_run_to_stop(url: str, config: Config) -> Callable[[int], None]:
    def stop(_session: int) -> None:
        [running] = [run for run in commands.list_runs(config) if run["status"] == "running"]
        commands.stop_run(config, running["run_id"])

    return stop


@pytest.mark.parametrize(
    ("cut", "status"),
    [
        (_killing_its_client, "failed"),
        (_ending_its_session, "failed"),
        (_asking_the_run_to_stop, "interrupted"),
    ],
)
def test_a_mariadb_restore_cut_while_it_loads_leaves_the_target_as_it_was(
    home: Path,
    mysql_url: str,
    cut: Callable[[str, Config], Callable[[int], None]],
    status: str,
) -> None:
    config, taken = _target_with_a_backup(home, mysql_url)
    seen: list[str] = []
    watcher = threading.Thread(
        target=_once_loading, args=(home, mysql_url, cut(mysql_url, config), seen), daemon=True
    )
    watcher.start()
    result = commands.restore(config, taken["id"], "db", replace=True, approver=Recorder().approver)
    watcher.join(60)
    assert seen, "the restore was never seen loading z_big"
    assert result.status == status, result.steps[0].error
    error = result.steps[0].error or ""
    assert "The target is as it was" in error, error
    assert _held(mysql_url) == _whole("target")
    assert _scratch_databases(home) == [] and _on_server(mysql_url, seen) == []
    # Resumed, it is known not to have swapped anything: it runs again, whole.
    again = commands.resume_run(config, result.run_id, approver=Recorder().approver)
    assert again.status == "completed", again.steps[0].error
    assert _held(mysql_url) == _whole("backup")
    assert _scratch_databases(home) == []


_DRIVER = """
import json, sys
from pathlib import Path
from aishell import commands
from aishell.config.models import load_config
from aishell.policy.approvers import Prompting
config = load_config(home=Path(sys.argv[1]))
done = commands.restore(
    config, int(sys.argv[2]), "db", replace=True, approver=Prompting(ask=lambda r: "yes")
)
print(json.dumps({"status": done.status}))
"""


def test_a_mariadb_restore_whose_aishell_is_killed_while_it_loads_resumes_whole(
    home: Path, mysql_url: str, child: list[subprocess.Popen[bytes]]
) -> None:
    config, taken = _target_with_a_backup(home, mysql_url)
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(home), str(taken["id"])],
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child.append(proc)
    seen: list[str] = []
    _once_loading(home, mysql_url, lambda _s: proc.send_signal(signal.SIGKILL), seen)
    proc.communicate(timeout=60)
    assert seen and proc.returncode == -signal.SIGKILL, "never seen loading z_big"
    # Killed with the restore part way: the target is as it was.
    assert _held(mysql_url) == _whole("target")
    # `aishell runs` does not call it done.
    [run] = [r for r in commands.list_runs(config) if r["status"] != "completed"]
    resumed = commands.resume_run(config, run["run_id"], approver=Recorder().approver)
    assert resumed.status == "completed", resumed.steps[0].error
    assert _held(mysql_url) == _whole("backup")
    assert _scratch_databases(home) == [] and _on_server(mysql_url, seen) == []


def test_a_mariadb_swap_held_off_by_a_lock_leaves_the_target_as_it_was(
    home: Path, mysql_url: str
) -> None:
    config, taken = _target_with_a_backup(home, mysql_url)
    holder = engine(mysql_url).connect()
    try:
        # zz_after read in a transaction left open: its lock is held until it ends.
        holder.execute(text("BEGIN"))
        holder.execute(text("SELECT count(*) FROM zz_after")).scalar()
        result = commands.restore(
            config, taken["id"], "db", replace=True, approver=Recorder().approver, lock_wait=1
        )
    finally:
        holder.execute(text("ROLLBACK"))
        holder.close()
    error = result.steps[0].error or ""
    assert result.status == "failed", error
    assert "RENAME TABLE waited 1 s for a table lock" in error, error
    assert "The target is as it was" in error, error
    assert _held(mysql_url) == _whole("target")
    assert _scratch_databases(home) == []
    # Resumed once the lock is let go: it is known not to have swapped, so it runs again.
    resumed = commands.resume_run(config, result.run_id, approver=Recorder().approver)
    assert resumed.status == "completed", resumed.steps[0].error
    assert _held(mysql_url) == _whole("backup")


def test_the_preview_says_how_each_engine_restores(home: Path, mysql_url: str) -> None:
    config, taken = _target_with_a_backup(home, mysql_url)
    asked = Recorder(answer="no")
    commands.restore(config, taken["id"], "db", replace=True, approver=asked.approver)
    shown = "\n".join(asked.asked[0].sql)
    assert "-- how: atomic. The mariadb client loads the backup into a scratch database" in shown
    assert "RENAME TABLE" in shown, shown
    # A backup holding a view cannot be swapped in: the preview says it is not atomic.
    run_sql(mysql_url, "CREATE VIEW v_small AS SELECT id FROM a_small")
    with_view = verified_full_backup(config)
    asked = Recorder(answer="no")
    commands.restore(config, with_view["id"], "db", replace=True, approver=asked.approver)
    shown = "\n".join(asked.asked[0].sql)
    assert "-- how: NOT atomic, because the backup holds view v_small" in shown, shown


def test_the_preview_says_how_postgresql_restores(home: Path, pg_url: str) -> None:
    config = use_target(home, pg_url)
    taken = server_backup(config, pg_url)
    asked = Recorder(answer="no")
    commands.restore(config, taken["id"], "db", replace=True, approver=asked.approver)
    shown = "\n".join(asked.asked[0].sql)
    assert "-- how: atomic. pg_restore loads the backup into the target in one transaction" in (
        shown
    )


def test_the_preview_says_how_sqlite_restores(config: Config, demo_db: Path) -> None:
    taken = sqlite_backup(config)
    asked = Recorder(answer="no")
    commands.restore(config, taken["id"], "demo", replace=True, approver=asked.approver)
    shown = "\n".join(asked.asked[0].sql)
    assert "-- how: atomic. The SQLite backup API copies the backup over the file" in shown
