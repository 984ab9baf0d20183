"""An archive file keeps the exact instant of a time-zone-aware value, with its offset:
after the purge the file is the rows' only copy. Where the session's zone has a
daylight-saving fold, two instants an hour apart read as the same local time: MariaDB's
TIMESTAMP is written in UTC (+00:00) whatever the session's time_zone, PostgreSQL's
timestamptz with the offset the session's TimeZone gives it; a MariaDB DATETIME, which
holds no zone, stays as written. The rows purged are those older than the cutoff in the
zone shown beside it, as without an archive file."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pymysql.constants import CLIENT
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import run_sql, use_target
from tests.private_servers import private_mariadb
from tests.services import unavailable

# Europe/Berlin leaves summer time at 01:00 UTC on 2025-10-26: 00:30 and 01:30 UTC are
# both 02:30 there.
ZONE = "Europe/Berlin"
FIRST, SECOND = "2025-10-26 00:30:00", "2025-10-26 01:30:00"


def _instant(written: str) -> datetime:
    return datetime.fromisoformat(written).astimezone(UTC)


def _utc(moment: str) -> datetime:
    return datetime.fromisoformat(moment).replace(tzinfo=UTC)


@pytest.fixture
def berlin_mariadb() -> Iterator[str]:
    """A MariaDB of the test's own whose global time_zone is Europe/Berlin."""
    tzinfo = shutil.which("mariadb-tzinfo-to-sql") or shutil.which("mysql_tzinfo_to_sql")
    if tzinfo is None or not Path(f"/usr/share/zoneinfo/{ZONE}").exists():
        unavailable("mariadb-tzinfo-to-sql or the system's zoneinfo files not found")
    with private_mariadb() as (url, _stop, _start):
        zone_sql = subprocess.run(
            [tzinfo, f"/usr/share/zoneinfo/{ZONE}", ZONE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        u = make_url(url)
        conn = pymysql.connect(
            host=u.host,
            port=u.port,
            user=u.username,
            database="mysql",
            client_flag=CLIENT.MULTI_STATEMENTS,
            autocommit=True,
        )
        with conn.cursor() as cur:
            cur.execute(zone_sql)
            while cur.nextset():
                pass
            cur.execute(f"SET GLOBAL time_zone = '{ZONE}'")
        conn.close()
        yield url


def _database(url: str, name: str) -> str:
    """A database of the test's own on the module's server."""
    run_sql(url, f"CREATE DATABASE {name}")
    return str(make_url(url).set(database=name).render_as_string(False))


def _purge(home: Path, url: str, table: str, path: Path) -> Any:
    config = use_target(home, url)
    job = {"table": table, "date_column": "at", "retention_days": 30, "archive_to": f"file:{path}"}
    result = commands.run_job(config, "log_cleanup", job, approver=PreApproved())
    step = next(s for s in result.steps if s.tool == "delete_old_records")
    assert step.status == "succeeded", step.error
    return step.output


def _lines(path: Path) -> dict[Any, dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["id"]: row for row in rows}


def test_mariadb_timestamps_of_a_fold_are_archived_apart_in_utc(
    home: Path, berlin_mariadb: str
) -> None:
    url = _database(berlin_mariadb, "fold_values")
    run_sql(
        url,
        "CREATE TABLE logs (id int PRIMARY KEY, at timestamp(6) NOT NULL, "
        "seen timestamp NULL, wall datetime NULL, KEY (at))",
        # Written in UTC: in Berlin's time the two rows' times are the same.
        "SET time_zone = '+00:00'",
        f"INSERT INTO logs VALUES (1, '{FIRST}', '{SECOND}', '2025-10-26 02:30:00'), "
        f"(2, '{SECOND}.25', NULL, NULL), (3, '{SECOND}', 0, NULL)",
        "INSERT INTO logs SELECT seq, NOW(), NOW(), NULL FROM seq_4_to_9",
    )
    path = home / "archive" / "logs.jsonl"

    output = _purge(home, url, "logs", path)

    assert output["rows_deleted"] == 3 and output["cutoff_zone"] == ZONE
    rows = _lines(path)
    assert rows[1] == {
        "id": 1,
        "at": "2025-10-26T00:30:00+00:00",
        "seen": "2025-10-26T01:30:00+00:00",
        "wall": "2025-10-26T02:30:00",  # a DATETIME holds no zone: as written
    }
    assert rows[2]["at"] == "2025-10-26T01:30:00.250000+00:00" and rows[2]["seen"] is None
    assert _instant(rows[1]["at"]) == _utc(FIRST) and _instant(rows[3]["at"]) == _utc(SECOND)
    assert rows[3]["seen"] == "0000-00-00 00:00:00"  # the zero date, as the server writes it
    engine = create_engine(url)
    with engine.connect() as conn:
        left = conn.execute(text("SELECT id FROM logs ORDER BY id")).scalars().all()
    engine.dispose()
    assert left == [4, 5, 6, 7, 8, 9]


def test_postgresql_timestamptz_of_a_fold_keeps_its_offset(home: Path, pg_url: str) -> None:
    database = make_url(pg_url).database
    run_sql(
        pg_url,
        f"ALTER DATABASE \"{database}\" SET timezone = '{ZONE}'",
        "CREATE TABLE logs (id int PRIMARY KEY, at timestamptz NOT NULL)",
        f"INSERT INTO logs VALUES (1, '{FIRST}+00'), (2, '{SECOND}+00')",
        "INSERT INTO logs SELECT g, now() FROM generate_series(3, 9) g",
    )
    path = home / "archive" / "logs.jsonl"

    output = _purge(home, pg_url, "logs", path)

    assert output["rows_deleted"] == 2
    rows = _lines(path)
    assert rows[1]["at"] == "2025-10-26T02:30:00+02:00"
    assert rows[2]["at"] == "2025-10-26T02:30:00+01:00"
    assert _instant(rows[1]["at"]) == _utc(FIRST) and _instant(rows[2]["at"]) == _utc(SECOND)
