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


# Each column's value, and how the archive file holds it: the server's text where the
# driver's Python value is not the value (an array's bounds, a range, a date past year
# 9999); every text one the server reads back as the same value.
VALUES = {
    "lb": ("int[]", "'[2:3]={7,8}'"),
    "md": ("int[]", "'[0:1][1:2]={{1,2},{3,4}}'"),
    "ja": ("json[]", '\'[0:0]={"{\\"a\\": 1.0000000000000000001}"}\''),
    "ia": ("interval[]", "'[5:5]={\"1 year\"}'"),
    "ta": ("timestamptz[]", "'[2:2]={\"2000-01-01 00:00+02\"}'"),
    "r": ("int4range", "'[1,5)'"),
    "mr": ("int4multirange", "'{[1,3),[5,7)}'"),
    "tr": ("tstzrange", "'[2000-01-01 00:00+02,)'"),
    "dom": ("bounded", "'[3:3]={1}'"),
    "c": ("pair", "ROW('[1:1]={2}', 'a \"b\"')"),
    "e": ("mood", "'happy'"),
    "mo": ("money", "'12.34'"),
    "vb": ("varbit", "B'0101'"),
    "tv": ("tsvector", "'a:1 b:2'"),
    "x": ("xml", "'<a>1</a>'"),
    "ip": ("inet", "'10.0.0.1/8'"),
    "ci": ("cidr", "'10.0.0.0/8'"),
    "nn": ("numeric", "'NaN'"),
    "ni": ("numeric", "'-Infinity'"),
    "bc": ("date", "'4713-01-01 BC'"),
    "far": ("timestamptz", "'294276-12-31 23:59:59+00'"),
    "t24": ("time", "'24:00:00'"),
}
PLAIN = {
    "m": ("int[]", "'{{1,2},{3,4}}'", [["1", "2"], ["3", "4"]]),
    "na": ("numeric[]", "'{NaN,Infinity,1.50}'", ["NaN", "Infinity", "1.50"]),
    "b": ("bytea", "'\\x00ff'", {"base64": "AP8="}),
    "u": ("uuid", "'00000000-0000-0000-0000-00000000000a'", "00000000-0000-0000-0000-00000000000a"),
}


@pytest.mark.parametrize("walk", ["keys", "pages"])
def test_postgresql_values_the_driver_changes_are_archived_as_server_text(
    home: Path, walk: str
) -> None:
    columns = {**{c: v[:2] for c, v in PLAIN.items()}, **VALUES}
    with scratch_postgresql() as url:
        with engine(url).begin() as conn:
            for ddl in (
                "CREATE DOMAIN bounded AS int[]",
                "CREATE TYPE pair AS (a int[], b text)",
                "CREATE TYPE mood AS ENUM ('sad', 'happy')",
            ):
                conn.execute(text(ddl))
            kinds = ", ".join(f"{c} {kind}" for c, (kind, _) in columns.items())
            conn.execute(text(f"CREATE TABLE logs (id int PRIMARY KEY, at date NOT NULL, {kinds})"))
            values = ", ".join(value for _, value in columns.values())
            conn.execute(text(f"INSERT INTO logs VALUES (1, '2000-01-01', {values})"))
            conn.execute(
                text("INSERT INTO logs (id, at) SELECT g, now() FROM generate_series(2, 9) g")
            )
            conn.execute(text("CREATE TABLE kept AS SELECT * FROM logs WHERE id = 1"))
        archive = home / "archive" / "logs.jsonl"

        _purge(home, url, archive, walk=walk)

        (line,) = archive.read_text().splitlines()
        row = _strict(line)
        for column, (_, _, archived) in PLAIN.items():
            assert row[column] == archived, column
        with engine(url).connect() as conn:
            for column, (kind, _) in VALUES.items():
                assert isinstance(row[column], str), (column, row[column])
                same = conn.execute(
                    text(f"SELECT CAST(CAST(:v AS {kind}) AS text) = {column}::text FROM kept"),
                    {"v": row[column]},
                ).scalar()
                assert same, (column, row[column])
        assert row["lb"] == "[2:3]={7,8}" and row["r"] == "[1,5)"


def _set_by_trigger(url: str, name: str, value: str, when: str) -> None:
    with engine(url).begin() as conn:
        if name == "lc_monetary":
            # Every session of the database begins in C.UTF-8, whatever the server's.
            database = conn.execute(text("SELECT current_database()")).scalar_one()
            conn.execute(text(f"ALTER DATABASE \"{database}\" SET lc_monetary = 'C.UTF-8'"))
        conn.execute(
            text(
                "CREATE TABLE logs (id int PRIMARY KEY, at timestamp NOT NULL, f float8, "
                "iv interval, mo money)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO logs SELECT g, '2000-01-01', 0.1 + g, '-1 year +2 days', 1234.5 + g "
                "FROM generate_series(1, 4) g"
            )
        )
        conn.execute(text("INSERT INTO logs (id, at) SELECT g, now() FROM generate_series(5, 9) g"))
        conn.execute(
            text(
                "CREATE FUNCTION set_it() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "PERFORM pg_catalog.set_config(TG_ARGV[0], TG_ARGV[1], false); "
                "RETURN OLD; END $$"
            )
        )
        conn.execute(
            text(f"CREATE TRIGGER logs_set {when} EXECUTE FUNCTION set_it('{name}', '{value}')")
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("extra_float_digits", "-15"),
        ("DateStyle", "SQL, DMY"),
        ("IntervalStyle", "sql_standard"),
        # money's text is read back in the lc_monetary of the session that reads it, not
        # the C.UTF-8 the purge's session began in (_set_by_trigger).
        ("lc_monetary", "C"),
    ],
)
@pytest.mark.parametrize(
    ("when", "batches"),
    [("BEFORE DELETE ON logs FOR EACH ROW", 0), ("AFTER DELETE ON logs FOR EACH STATEMENT", 1)],
    ids=["rows", "later"],
)
def test_a_setting_code_changes_mid_purge_rolls_its_batch_back(
    home: Path, name: str, value: str, when: str, batches: int
) -> None:
    """A trigger that changes how the server writes values: set before each row is
    deleted, the first batch's rows are sent under it; set after them, its batch's rows
    are exact, and the rows of the session's next batch would be sent under it. No row is
    archived inexactly: the batch that would be is rolled back, and the step fails."""
    with scratch_postgresql() as url:
        _set_by_trigger(url, name, value, when)
        archive = home / "archive" / "logs.jsonl"
        config = use_target(home, url)
        # Walking keys, two rows a batch: the page walk's one batch would hold them all.
        job = {"table": "logs", "date_column": "at", "retention_days": 30, "batch_size": 2}
        job["walk"] = "keys"
        job["archive_to"] = f"file:{archive}"
        result = commands.run_job(
            config, "log_cleanup", job, approver=PreApproved(up_to=RiskLevel.HIGH)
        )
        assert result.status != "completed"
        error = next(s.error for s in result.steps if s.error)
        assert f"{name} was {value}" in (error or ""), error
        with engine(url).connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM logs")).scalar() == 9 - 2 * batches
        lines = archive.read_text().splitlines() if archive.exists() else []
        assert len(lines) == 2 * batches
