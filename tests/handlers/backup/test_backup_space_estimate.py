"""The free-space check before a backup: made where the backup folder will be when it
does not exist yet, and against an honest estimate of the backup's size (an earlier
backup of the same kind of the target, scaled by the database's growth since; else the
database's size), saying which estimate it used. And the line a dump stopped near a full
disk ends with, which says what it counted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config
from tests.conftest import EditConfig
from tests.handlers.backup.test_backup_space import stale_mysql  # noqa: F401  (fixture)
from tests.helpers import tmpfs, use_target
from tests.services import engine


def test_the_space_check_looks_where_a_new_backup_folder_will_be(
    home: Path, tmp_path: Path, edit_config: EditConfig
) -> None:
    # About 3 MB of database at the demo target's path, for a disk of 1 MB.
    conn = sqlite3.connect(home / "demo.db")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", (("x" * 1000,) for _ in range(3000)))
    conn.commit()
    conn.close()
    with tmpfs(tmp_path / "small", "1m") as disk:
        config = edit_config({"backup_dir": str(disk / "not" / "made" / "yet")})
        done = commands.run_job(config, "backup", {"type": "full", "verify": False})
        size, backup = done.steps[0].output, done.steps[1]
        assert size["free_bytes"] is not None and size["free_in"] == str(disk)
        assert size["enough_space"] is False
        assert done.status == "failed" and backup.status == "failed"
        assert backup.error.startswith(f"Not enough free space in {disk}: about "), backup.error
        assert "(no earlier full backup to go by)" in backup.error
        assert list(disk.iterdir()) == []


def _compressible(url: str) -> None:
    """About 25 MB of table that pg_dump -Fc compresses to well under 1 MB."""
    with engine(url).connect() as conn:
        conn.execute(text("CREATE TABLE big (id integer PRIMARY KEY, v text)"))
        conn.execute(
            text("INSERT INTO big SELECT i, repeat('x', 1000) FROM generate_series(1, 20000) i")
        )
        conn.execute(text("ANALYZE big"))


def _full(config: Config) -> dict:
    return commands.run_job(config, "backup", {"type": "full", "verify": False}).steps


def test_a_compressed_archive_is_sized_by_the_backup_before_it(
    home: Path, pg_url: str, tmp_path: Path, edit_config: EditConfig
) -> None:
    _compressible(pg_url)
    use_target(home, pg_url)
    with tmpfs(tmp_path / "small", "16m") as disk:
        config = edit_config({"backup_dir": str(disk)})
        # No backup to go by: the database's size, which the disk cannot hold.
        first, refused = _full(config)[:2]
        assert refused.status == "failed" and "Not enough free space" in refused.error
        # One taken elsewhere, then: its archive is small.
        elsewhere = edit_config({"backup_dir": str(tmp_path / "big-disk")})
        taken = _full(elsewhere)[1]
        assert taken.status == "succeeded", taken.error
        [earlier] = commands.list_backups(elsewhere)
        config = edit_config({"backup_dir": str(disk)})
        size, backup = _full(config)[:2]
        assert backup.status == "succeeded", backup.error
        assert Path(backup.output["backup_path"]).is_relative_to(disk)
        assert size.output["estimate"].startswith(f"backup {earlier['id']}'s "), size.output
        assert size.output["estimated_bytes"] < size.output["database_bytes"] / 5
        assert first.output["estimate"].startswith("the database's size, ")


def test_a_dump_stopped_near_a_full_disk_says_what_it_counted(
    stale_mysql: str,  # noqa: F811
    home: Path,
    tmp_path: Path,
    edit_config: EditConfig,
) -> None:
    use_target(home, stale_mysql)
    with tmpfs(tmp_path / "small", "8m") as disk:
        config = edit_config({"backup_dir": str(disk)})
        backup = _full(config)[1]
        assert backup.status == "failed"
        assert f"the file system at {disk} had " in backup.error
        # What was free, and what the next write would have left: never "left, under".
        assert " bytes free, and the dump's next " in backup.error, backup.error
        assert "would have left less than the " in backup.error
