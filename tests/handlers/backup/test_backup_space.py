"""A dump watches the free space it writes into: a backup larger than its estimate
(table statistics far behind the table) stops before it fills the file system, leaving
room for the database's files and state.db, and says so in one line."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.handlers.backup.stream import Tee, _LowSpace, space_reserve
from tests.helpers import tmpfs, use_target
from tests.services import MYSQL_ADMIN, admin_engine, engine


@pytest.fixture
def stale_mysql() -> Iterator[str]:
    """A MariaDB database whose one table holds about 12 MB while its statistics, frozen
    after one row, say 16 KiB; the URL of a login that may dump it but not read the
    tablespace files' sizes (no PROCESS), so the estimate has only the statistics."""
    name = f"aishell_space_{uuid.uuid4().hex[:10]}"
    user = f"u_{uuid.uuid4().hex[:12]}"
    admin = admin_engine(MYSQL_ADMIN, "MariaDB")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}`"))
        conn.execute(text(f"CREATE USER '{user}'@'127.0.0.1'"))
        conn.execute(
            text(
                f"GRANT SELECT, LOCK TABLES, SHOW VIEW, EVENT, TRIGGER ON `{name}`.* "
                f"TO '{user}'@'127.0.0.1'"
            )
        )
    url = make_url(MYSQL_ADMIN).set(database=name).render_as_string(False)
    try:
        with engine(url).connect() as conn:
            conn.execute(
                text(
                    "CREATE TABLE big (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(600)) "
                    "ENGINE=InnoDB STATS_PERSISTENT=1 STATS_AUTO_RECALC=0"
                )
            )
            conn.execute(text("INSERT INTO big (v) VALUES ('x')"))
            conn.execute(text("ANALYZE TABLE big"))
            conn.execute(text("INSERT INTO big (v) SELECT repeat('y', 500) FROM seq_1_to_24000"))
        yield make_url(url).set(username=user).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'"))
        admin.dispose()


def test_a_dump_past_its_estimate_stops_before_the_disk_is_full(
    stale_mysql: str, home: Path, tmp_path: Path, edit_config
) -> None:
    use_target(home, stale_mysql)
    with tmpfs(tmp_path / "small", "8m") as disk:
        config = edit_config({"backup_dir": str(disk)})
        result = commands.run_job(config, "backup", {"type": "full", "verify": False})
        size, backup = result.steps[0], result.steps[1]
        assert size.status == "succeeded" and size.output["enough_space"] is True
        assert result.status == "failed" and backup.status == "failed"
        assert backup.error.startswith("Stopped writing "), backup.error
        assert f"the file system at {disk} had " in backup.error
        assert "a backup leaves free for other writers" in backup.error
        usage = shutil.disk_usage(disk)
        # Nothing of the dump is left, and it never took the last of the space.
        assert [p.name for p in disk.rglob("*") if p.is_file()] == []
        assert usage.free >= space_reserve(usage.total)
        assert commands.list_backups(config) == []


@pytest.mark.parametrize("size, chunk", [("1m", 64 << 10), ("3m", 200_000), ("40m", 1 << 20)])
def test_no_write_ever_takes_the_disk_under_its_reserve(
    tmp_path: Path, size: str, chunk: int
) -> None:
    """Whatever the disk's size against the bytes between two looks, and however the
    chunks fall, the dump stops before a write would leave less than the reserve free."""
    with tmpfs(tmp_path / "small", size) as disk:
        endless = iter(lambda: b"z" * chunk, b"")
        with (disk / "dump.partial").open("wb") as out, pytest.raises(_LowSpace):
            for _chunk in Tee(endless, out):
                pass
        usage = shutil.disk_usage(disk)
        assert usage.free >= space_reserve(usage.total)
        # It stopped near the reserve, not far from it.
        assert usage.free < space_reserve(usage.total) + 2 * chunk + 8192
