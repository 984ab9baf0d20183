"""A MariaDB TIMESTAMP purge holds its session to the time zone its cutoff was shown in,
batch after batch, at no cost in round trips: the zone is read in the statement each
batch sends anyway after its DELETE (the read of what the DELETE sets off), so a batch
of a TIMESTAMP column sends as many statements as one of a DATETIME column. Counted by
the server itself, on the purge's own session: a trigger of the purged table records
the session's Questions as each row goes. And a batch whose DELETE moved the session's
zone (a trigger's SET time_zone, itself or through a procedure; with an archive file,
after the rows were read for it) is still rolled back."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.handlers.purge.test_cutoff_time_zone import _zoned
from tests.helpers import read_yaml, run_sql, use_target, write_yaml

# Four batches of five old rows each (ids 1 to 20), then 30 rows kept.
BATCH = 5
OLD = 20


def _table(url: str, table: str, kind: str) -> None:
    run_sql(url, f"CREATE TABLE {table} (id integer PRIMARY KEY, at {kind}(6) NULL)")
    values = ", ".join(
        f"({i}, '{'2001-01-01 00:00:00' if i <= OLD else '2037-01-01 00:00:00'}')"
        for i in range(1, 51)
    )
    run_sql(url, f"INSERT INTO {table} VALUES {values}")


def _job(table: str, **more: object) -> dict[str, object]:
    return {
        "table": table,
        "date_column": "at",
        "retention_days": 30,
        "batch_size": BATCH,
        "max_batch_size": BATCH,
        # Batches of BATCH rows however slow the server is: none shrunk for taking
        # longer than the default aim (on a busy machine the 20 rows took five).
        "max_batch_ms": 60_000,
        **more,
    }


def _no_load_checks(home: Path) -> None:
    """No check of the server's load between batches: it is due a second after the last,
    not after a batch, so its statements land in whichever batch a busy machine makes
    cross the second."""
    path = home / "config" / "agents" / "log_cleanup.yaml"
    data = read_yaml(path)
    data["log_cleanup_agent"]["purge"].update(
        {"max_running_queries": None, "max_replica_lag_seconds": None}
    )
    write_yaml(path, data)


def _statements_per_batch(home: Path, url: str, kind: str) -> list[int]:
    """The statements the purge's session sent from each batch's DELETE to the next's,
    as the server counts them (Questions leaves out those of the trigger itself)."""
    table = f"logs_{kind}"
    _table(url, table, kind)
    run_sql(
        url,
        "CREATE TABLE IF NOT EXISTS questions (tbl varchar(20), id integer, n bigint)",
        f"CREATE TRIGGER {table}_questions BEFORE DELETE ON {table} FOR EACH ROW "
        f"INSERT INTO questions SELECT '{table}', OLD.id, VARIABLE_VALUE "
        "FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'QUESTIONS'",
    )
    _no_load_checks(home)
    config = use_target(home, _zoned(url, "+05:00"))
    result = commands.run_job(
        config, "log_cleanup", _job(table), approver=PreApproved(up_to=RiskLevel.HIGH)
    )
    assert result.status == "completed", result.error
    purge = result.steps[1].output
    assert purge is not None and purge["rows_deleted"] == OLD and purge["batches"] == OLD // BATCH
    engine = create_engine(url)
    with engine.connect() as conn:
        firsts = conn.execute(
            text("SELECT n FROM questions WHERE tbl = :t AND id % :b = 1 ORDER BY id"),
            {"t": table, "b": BATCH},
        ).scalars()
        counts = [int(n) for n in firsts]
    engine.dispose()
    return [b - a for a, b in pairwise(counts)]


def test_a_timestamp_batch_sends_no_more_statements_than_a_datetime_one(
    home: Path, mysql_url: str
) -> None:
    by_datetime = _statements_per_batch(home, mysql_url, "datetime")
    by_timestamp = _statements_per_batch(home, mysql_url, "timestamp")
    print(f"statements per batch: DATETIME {by_datetime}, TIMESTAMP {by_timestamp}")
    assert len(by_datetime) == OLD // BATCH - 1
    assert by_timestamp == by_datetime, (by_timestamp, by_datetime)


_MOVERS = {
    "trigger": (
        "CREATE TRIGGER logs_zone BEFORE DELETE ON logs FOR EACH ROW SET time_zone = '+09:00'",
    ),
    "procedure": (
        "CREATE PROCEDURE move_zone() SET time_zone = '+09:00'",
        "CREATE TRIGGER logs_zone AFTER DELETE ON logs FOR EACH ROW CALL move_zone()",
    ),
}


@pytest.mark.parametrize("archived", [False, True], ids=["plain", "archive_file"])
@pytest.mark.parametrize("mover", sorted(_MOVERS))
def test_a_batch_whose_delete_moved_the_zone_is_rolled_back(
    home: Path, mysql_url: str, tmp_path: Path, mover: str, archived: bool
) -> None:
    _table(mysql_url, "logs", "timestamp")
    run_sql(mysql_url, *_MOVERS[mover])
    config = use_target(home, _zoned(mysql_url, "+05:00"))
    archive = tmp_path / "archive" / "logs.jsonl"  # not beside aishell's state
    archive.parent.mkdir()
    more = {"archive_to": f"file:{archive}"} if archived else {}
    result = commands.run_job(
        config, "log_cleanup", _job("logs", **more), approver=PreApproved(up_to=RiskLevel.HIGH)
    )
    assert result.status != "completed"
    purge = result.steps[1]
    assert "time zone became +09:00" in (purge.error or ""), (purge.status, purge.error)
    assert "shown in +05:00" in (purge.error or ""), purge.error
    engine = create_engine(mysql_url)
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM logs")).scalar_one()
    engine.dispose()
    assert left == 50
