"""An archive file holds each value as the server holds it: after the purge it is the
rows' only copy. PostgreSQL's json and jsonb are written as the server's JSON text (the
driver's parse made every number a float, so 12345678901234567890123 and
0.1000000000000000055511151231257827 lost digits and 1e400 became Infinity, and it
dropped a json value's repeated keys); its intervals as the server's text (the driver's
seconds counted a year as 365 days and lost a microsecond of a long one); and a float
that is not finite as the text NaN, Infinity or -Infinity, where Python wrote tokens no
JSON parser takes. The connection's other reads keep the driver's values."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.handlers.purge.exactread import exact_reads
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.helpers import use_target
from tests.services import engine, scratch_postgresql

JSON_TEXT = '{"a": 1.00000000000000000001, "a": 12345678901234567890123, "x": 1e400}'
JSONB_TEXT = '{"v": 0.1000000000000000055511151231257827}'


def _strict(line: str) -> dict[str, Any]:
    """A line as a JSON parser that takes no NaN or Infinity reads it, numbers as text."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    row: dict[str, Any] = json.loads(line, parse_constant=refuse, parse_float=str, parse_int=str)
    return row


def _purge(home: Path, url: str, archive: Path, **job: Any) -> None:
    config = use_target(home, url)
    job = {"table": "logs", "date_column": "at", "retention_days": 30, **job}
    job["archive_to"] = f"file:{archive}"
    result = commands.run_job(
        config, "log_cleanup", job, approver=PreApproved(up_to=RiskLevel.HIGH)
    )
    assert result.status == "completed", result.error


@pytest.mark.parametrize("walk", ["keys", "pages"])
def test_postgresql_json_intervals_and_floats_are_archived_as_the_server_holds_them(
    home: Path, walk: str
) -> None:
    with scratch_postgresql() as url:
        with engine(url).begin() as conn:
            conn.execute(
                text(
                    "CREATE TABLE logs (id int PRIMARY KEY, at timestamp NOT NULL, j json, "
                    "jb jsonb, js json[], iv interval, ivs interval[], f4 real, f8 float8)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO logs VALUES (1, '2000-01-01', :j, :jb, ARRAY[CAST(:ja AS json)], "
                    "'1 year', '{\"1 mon\",\"1 day\"}', 'NaN', '-Infinity'), "
                    "(2, '2000-01-01', '[1,\n2]', '1e400', NULL, "
                    "'100000000 days 0.000001 sec', NULL, 'Infinity', 0.1)"
                ),
                {"j": JSON_TEXT, "jb": JSONB_TEXT, "ja": JSONB_TEXT},
            )
            conn.execute(
                text("INSERT INTO logs (id, at) SELECT g, now() FROM generate_series(3, 9) g")
            )
        archive = home / "archive" / "logs.jsonl"

        _purge(home, url, archive, walk=walk)

        lines = archive.read_text().splitlines()
        assert len(lines) == 2, lines
        rows = {row["id"]: row for row in map(_strict, lines)}
        # The server's own text, in the line as it is: repeated keys and all digits.
        assert f'"j": {JSON_TEXT}, ' in next(x for x in lines if x.startswith('{"id": 1,'))
        assert rows["1"]["jb"] == {"v": "0.1000000000000000055511151231257827"}
        assert rows["1"]["js"] == [{"v": "0.1000000000000000055511151231257827"}]
        assert rows["2"]["j"] == ["1", "2"] and rows["2"]["jb"] == "1" + "0" * 400
        # An interval as the server writes it, read back as the same interval.
        assert rows["1"]["iv"] == "1 year" and rows["1"]["ivs"] == ["1 mon", "1 day"]
        assert rows["2"]["iv"] == "100000000 days 00:00:00.000001"
        assert (rows["1"]["f4"], rows["1"]["f8"]) == ("NaN", "-Infinity")
        assert (rows["2"]["f4"], rows["2"]["f8"]) == ("Infinity", "0.1")


def test_exact_reads_last_only_while_open() -> None:
    with scratch_postgresql() as url, engine(url).connect() as conn:
        sql = text("SELECT CAST('{\"a\": 1}' AS jsonb), CAST('1 day' AS interval)")
        with exact_reads(conn):
            assert tuple(conn.execute(sql).one()) == ('{"a": 1}', "1 day")
        found = conn.execute(sql).one()
        assert found[0] == {"a": 1} and found[1].days == 1


def test_sqlite_infinite_floats_are_archived_as_text(home: Path) -> None:
    db = home / "target.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, at TEXT NOT NULL, r REAL)")
        conn.execute("INSERT INTO logs VALUES (1, '2000-01-01', 9e999), (2, '2000-01-01', -9e999)")
        conn.executemany(
            "INSERT INTO logs VALUES (?, '2999-01-01', 1.5)", [(k,) for k in range(3, 9)]
        )
    archive = home / "archive" / "logs.jsonl"

    _purge(home, f"sqlite:///{db}", archive)

    rows = [_strict(line) for line in archive.read_text().splitlines()]
    assert [(r["id"], r["r"]) for r in rows] == [("1", "Infinity"), ("2", "-Infinity")]
