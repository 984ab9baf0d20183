"""SQLite keeps each value with its own type, whatever the column declares, and compares
values of different types by type first (every number before any text) and text as
text. A purge of a date column holding more than one kind of value would find every row
of the other kind older than its cutoff: it is refused before anything is deleted,
naming each kind. A column of Julian days (SQLite's REAL date format) is purged by a
cutoff in Julian days, not Unix seconds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config
from aishell.errors import TargetError
from tests.helpers import query, run_sql, use_target

RETENTION = 60


def _target(home: Path) -> tuple[Config, str, Path]:
    path = home / "events.db"
    sqlite3.connect(path).close()
    url = f"sqlite:///{path}"
    run_sql(url, "CREATE TABLE ev (id INTEGER PRIMARY KEY, created_at DATETIME, msg TEXT)")
    return use_target(home, url), url, path


def _fill(url: str, rows: int, value: str, msg: str) -> None:
    """`rows` rows whose date is `value` (SQL of i, 1 to rows), tagged `msg`."""
    run_sql(
        url,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
        f"{rows}) INSERT INTO ev (created_at, msg) SELECT {value}, '{msg}' FROM n",
    )


def _tags(path: Path) -> dict[str, int]:
    return dict(query(path, "SELECT msg, count(*) FROM ev GROUP BY msg"))


def _purge(config: Config) -> commands.RunResult:
    job = {"table": "ev", "date_column": "created_at", "retention_days": RETENTION}
    return commands.run_job(config, "log_cleanup", job)


def _julian_days(home: Path) -> tuple[str, Path]:
    """A database whose table jd holds 100 rows of REAL julianday() values, row i aged
    i + 0.5 days."""
    path = home / "julian.db"
    sqlite3.connect(path).close()
    url = f"sqlite:///{path}"
    run_sql(url, "CREATE TABLE jd (id INTEGER PRIMARY KEY, created_at REAL NOT NULL)")
    run_sql(
        url,
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99) "
        "INSERT INTO jd (id, created_at) SELECT i, julianday('now') - i - 0.5 FROM n",
    )
    return url, path


def _refused(config: Config, path: Path) -> str:
    """The purge's refusal, every row left as it was."""
    before = _tags(path)
    with pytest.raises(TargetError) as refused:
        _purge(config)
    assert _tags(path) == before
    return str(refused.value)


def test_unix_times_among_iso_text_are_not_deleted(home):
    """The probe's table: old ISO text, fresh Unix seconds, fresh ISO text. A text
    cutoff finds every integer older (SQLite sorts numbers before text): refused,
    naming the table, the column and each kind with its rows; every row stays."""
    config, url, path = _target(home)
    _fill(url, 30, "datetime('now', '-90 days')", "old-text")
    _fill(url, 30, "CAST(strftime('%s', 'now') AS INTEGER) - (i % 10) * 86400", "fresh-int")
    _fill(url, 100, "datetime('now', '-' || (i % 10) || ' days')", "fresh-text")
    error = _refused(config, path)
    assert "ev.created_at" in error, error
    assert "Unix seconds (30 rows" in error, error
    assert "text YYYY-MM-DD HH:MM:SS (130 rows" in error, error
    assert "nothing is deleted" in error, error
    assert "\n" not in error


def test_two_text_shapes_are_not_compared_with_one_cutoff(home):
    """The first row in `T` form, the rest with a space: a `T` cutoff (the first row's
    shape) finds rows of the cutoff's day older though up to a day younger."""
    config, url, path = _target(home)
    _fill(url, 1, "strftime('%Y-%m-%dT%H:%M:%S', 'now', '-90 days')", "old-t")
    _fill(url, 50, "datetime('now', '-59 days', '-' || (i % 20) || ' hours')", "young-space")
    error = _refused(config, path)
    assert "text YYYY-MM-DDTHH:MM:SS (1 row," in error, error
    assert "text YYYY-MM-DD HH:MM:SS (50 rows" in error, error


@pytest.mark.parametrize(
    ("value", "named"),
    [
        # An offset: the text sorts as its local time, not its moment.
        ("strftime('%Y-%m-%dT%H:%M:%S-05:00', 'now', '-59 days')", "other values"),
        # Julian days among Unix seconds: each reads the other's value as another moment.
        ("julianday('now', '-1 day')", "Julian days"),
        # A blob sorts after any text: no date of any kind.
        ("randomblob(8)", "other values"),
    ],
    ids=["offset", "julian", "blob"],
)
def test_one_odd_kind_refuses_the_column(home, value, named):
    config, url, path = _target(home)
    base = (
        "CAST(strftime('%s', 'now') AS INTEGER) - i * 86400"
        if named == "Julian days"
        else "datetime('now', '-' || i || ' days')"
    )
    _fill(url, 80, base, "base")
    _fill(url, 1, value, "odd")
    error = _refused(config, path)
    assert f"{named} (1 row, such as" in error, error
    assert _tags(path) == {"base": 80, "odd": 1}


def test_a_saved_plan_is_refused_once_the_column_mixes_kinds(home):
    """Planned while the column was all text; Unix times written since: the run reads
    the column again before its first batch, and deletes nothing."""
    config, url, path = _target(home)
    _fill(url, 20, "datetime('now', '-90 days')", "old-text")
    _fill(url, 60, "datetime('now', '-' || (i % 10) || ' days')", "fresh-text")
    job = {"table": "ev", "date_column": "created_at", "retention_days": RETENTION}
    plan = commands.make_plan(config, "log_cleanup", job)
    _fill(url, 10, "CAST(strftime('%s', 'now') AS INTEGER)", "fresh-int")
    result = commands.apply_plan(config, plan)
    assert result.status == "failed", result.status
    assert "holds values of more than one kind" in str(result.error), result.error
    assert _tags(path) == {"old-text": 20, "fresh-text": 60, "fresh-int": 10}


def test_julian_days_are_purged_by_a_julian_cutoff(home):
    """REAL julianday() values aged 0.5 to 99.5 days: the cutoff is a Julian day, and
    the rows older than the retention go, the younger stay."""
    url, path = _julian_days(home)
    config = use_target(home, url)
    job = {"table": "jd", "date_column": "created_at", "retention_days": RETENTION}
    result = commands.run_job(config, "log_cleanup", job)
    assert result.status == "completed", result.error
    counted = result.steps[0].output
    assert counted["date_kind"] == "julian"
    assert counted["older_rows"] == 40
    (now,) = query(path, "SELECT julianday('now')")[0]
    assert now - RETENTION - 0.01 < counted["cutoff"] < now - RETENTION
    assert {r[0] for r in query(path, "SELECT id FROM jd")} == set(range(60))


def test_placeholders_of_no_date_do_not_mix_a_julian_column(home):
    """0 (older in every unit) and 10^17 (never older) beside Julian days: purged as
    Julian days, the 0 with the old rows, the far one kept."""
    url, path = _julian_days(home)
    run_sql(url, "INSERT INTO jd VALUES (-1, 0), (-2, 1e17)")
    job = {"table": "jd", "date_column": "created_at", "retention_days": RETENTION}
    result = commands.run_job(use_target(home, url), "log_cleanup", job)
    assert result.status == "completed", result.error
    assert result.steps[0].output["date_kind"] == "julian"
    assert {r[0] for r in query(path, "SELECT id FROM jd")} == {-2, *range(60)}


def test_a_generated_column_is_a_date_column(home):
    """A generated column (virtual or stored) may be the date column: SQLite's
    table_info leaves them out, table_xinfo has them."""
    path = home / "generated.db"
    sqlite3.connect(path).close()
    url = f"sqlite:///{path}"
    run_sql(
        url,
        "CREATE TABLE g (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
        "day TEXT GENERATED ALWAYS AS (datetime(ts, 'unixepoch')) VIRTUAL, "
        "sday TEXT GENERATED ALWAYS AS (datetime(ts, 'unixepoch')) STORED)",
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99) "
        "INSERT INTO g (id, ts) SELECT i, CAST(strftime('%s', 'now') AS INTEGER) "
        "- i * 86400 - 43200 FROM n",
    )
    config = use_target(home, url)
    for column, keep in (("sday", 80), ("day", RETENTION)):
        job = {"table": "g", "date_column": column, "retention_days": keep}
        result = commands.run_job(config, "log_cleanup", job)
        assert result.status == "completed", result.error
        assert {r[0] for r in query(path, "SELECT id FROM g")} == set(range(keep))


def test_julian_cutoff_is_read_by_sqlite_as_that_moment(home):
    """The cutoff shown is the Julian day SQLite itself reads as the server's clock
    less the retention (to the millisecond)."""
    path = home / "julian.db"
    sqlite3.connect(path).close()
    url = f"sqlite:///{path}"
    run_sql(url, "CREATE TABLE jd (id INTEGER PRIMARY KEY, created_at REAL)")
    run_sql(url, "INSERT INTO jd (created_at) VALUES (julianday('now'))")
    job = {"table": "jd", "date_column": "created_at", "retention_days": RETENTION}
    result = commands.run_job(use_target(home, url), "log_cleanup", job, dry_run=True)
    cutoff = result.steps[0].output["cutoff"]
    engine = create_engine(url)
    with engine.connect() as conn:
        age = conn.execute(
            text("SELECT (julianday('now') - :cutoff) * 86400"), {"cutoff": cutoff}
        ).scalar_one()
    engine.dispose()
    assert RETENTION * 86400 <= age < RETENTION * 86400 + 60


@pytest.mark.parametrize("form", ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"])
def test_dates_alone_beside_times_of_one_form_are_purged(home, form):
    """A date alone sorts first among its day's times (a prefix), as its midnight:
    purged by a cutoff in the times' form, each row by its age."""
    config, url, path = _target(home)
    _fill(url, 10, "date('now', '-' || (i + 60) || ' days')", "old-date")
    _fill(url, 10, "date('now', '-' || i || ' days')", "fresh-date")
    _fill(url, 30, f"strftime('{form}', 'now', '-' || (i * 3 + 1) || ' days')", "time")
    result = _purge(config)
    assert result.status == "completed", result.error
    assert result.steps[0].output["date_kind"] == ("text" if " " in form else "text_t")
    assert _tags(path) == {"fresh-date": 10, "time": 19}
