"""What a purge's batch sets off (reach.py) holds the routines its triggers call, each
with when it was created and last altered: times MariaDB shows in the session's
time_zone. They are read as the instants they name, so a reach read in one session
and read again in a session in another zone (a reconnect, a resume) is the same reach;
a routine created again since still reads as changed. Both ways the routines are read:
mysql.proc, and information_schema.ROUTINES (for a table whose name InnoDB's dictionary
spells otherwise)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine

from aishell.handlers.purge.reach import TableReach, changed_since, read_reach
from tests.handlers.purge.test_cutoff_time_zone import _zoned
from tests.helpers import run_sql

NOTE = "CREATE PROCEDURE note(x integer) INSERT INTO audit VALUES (x)"


def _schema(url: str, table: str) -> None:
    run_sql(
        url,
        f"CREATE TABLE `{table}` (id integer PRIMARY KEY, at datetime NULL)",
        "CREATE TABLE audit (id integer)",
        NOTE,
        f"CREATE TRIGGER logs_note BEFORE DELETE ON `{table}` FOR EACH ROW CALL note(OLD.id)",
    )


def _read(url: str, zone: str, table: str) -> TableReach:
    engine = create_engine(_zoned(url, zone))
    try:
        with engine.connect() as conn:
            return read_reach(conn, f"`{table}`", table)
    finally:
        engine.dispose()


def _changed(url: str, zone: str, start: TableReach) -> str | None:
    engine = create_engine(_zoned(url, zone))
    try:
        with engine.connect() as conn:
            return changed_since(conn, start)[1]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("table", "routines"),
    [("logs", "mysql.proc"), ("logs$zone", "information_schema.ROUTINES")],
)
def test_a_reach_reads_alike_from_sessions_in_other_zones(
    mysql_url: str, table: str, routines: str
) -> None:
    _schema(mysql_url, table)
    start = _read(mysql_url, "+00:00", table)
    assert f"JOIN {routines} " in start.sql
    assert any(kind == "routine" for kind, _, _ in start.found), start.found
    for zone in ("+05:30", "-08:00", "+00:00"):
        assert _changed(mysql_url, zone, start) is None, zone
    assert _read(mysql_url, "+05:30", table).found == start.found


def test_a_routine_created_again_still_reads_as_changed_in_another_zone(mysql_url: str) -> None:
    _schema(mysql_url, "logs")
    start = _read(mysql_url, "+00:00", "logs")
    time.sleep(1.1)  # the times are kept to the second
    run_sql(mysql_url, "DROP PROCEDURE note", NOTE)
    changed = _changed(mysql_url, "+05:30", start) or ""
    assert changed.startswith("changed routine procedure "), changed
