"""A cutoff a plan supplies (a saved plan edited by hand, a model's draft) is the value
the DELETE compares with, or it is refused before anything is deleted: never rounded to
the microsecond, never read in a zone it does not name, never cut to a date."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config
from tests.helpers import run_sql, use_target
from tests.services import scratch_server

# The column's type on each engine; every row is far older than the retention.
COLUMN = {
    ("postgresql", "timestamptz"): "timestamptz",
    ("postgresql", "timestamp"): "timestamp(6)",
    ("postgresql", "date"): "date",
    ("mysql", "timestamp"): "datetime(6)",
    ("mysql", "date"): "date",
    ("sqlite", "text"): "text",
}
ROW = {
    "timestamptz": "2000-01-01 00:00:00+00",
    "timestamp": "2000-01-01 00:00:00",
    "date": "2000-01-01",
    "text": "2000-01-01 00:00:00",
}


@contextmanager
def _stamped(dialect: str, kind: str, home: Path) -> Iterator[tuple[Config, str]]:
    """A table `stamped` of 20 rows dated 2000-01-01 and 30 of 2999-01-01 in a column of `kind`."""
    if dialect == "sqlite":
        path = home / "stamped.db"
        sqlite3.connect(path).close()
        url = f"sqlite:///{path}"
        yield _filled(home, url, kind, dialect)
        return
    with scratch_server(dialect) as url:
        yield _filled(home, url, kind, dialect)


def _filled(home: Path, url: str, kind: str, dialect: str) -> tuple[Config, str]:
    run_sql(url, f"CREATE TABLE stamped (id integer PRIMARY KEY, at {COLUMN[dialect, kind]})")
    # 30 rows in 2999 stay, so the purge keeps under max_share.
    new = ROW[kind].replace("2000", "2999")
    values = ", ".join(f"({i}, '{ROW[kind] if i <= 20 else new}')" for i in range(1, 51))
    run_sql(url, f"INSERT INTO stamped VALUES {values}")
    return use_target(home, url), url


def _rows(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count = int(conn.execute(text("SELECT count(*) FROM stamped")).scalar_one())
    engine.dispose()
    return count


def _apply_with_cutoff(config: Config, cutoff: Any) -> commands.RunResult:
    """The purge step of the log cleanup's plan, its cutoff edited to `cutoff`."""
    job = {"table": "stamped", "date_column": "at", "retention_days": 30}
    plan = commands.make_plan(config, "log_cleanup", job)
    steps = list(plan.steps)
    step = steps[1]
    steps[1] = type(step)(step.id, step.tool, dict(step.params, cutoff=cutoff), step.rationale)
    edited = type(plan)(plan.agent, plan.target, plan.dialect, plan.job, tuple(steps[:2]))
    return commands.apply_plan(config, edited)


REFUSED = [
    # Seven decimals: the driver binds six, so the DELETE compares another value.
    ("postgresql", "timestamp", "2001-01-01 00:00:00.1234567", "at most 6 decimals"),
    ("mysql", "timestamp", "2001-01-01 00:00:00.1234567", "at most 6 decimals"),
    ("postgresql", "timestamptz", "2001-01-01 00:00:00.1234567+00:00", "at most 6 decimals"),
    # No offset on a column of moments: the session's zone would be supplied.
    ("postgresql", "timestamptz", "2001-01-01 00:00:00", "give the offset"),
    # An offset on a column without a zone: it would be dropped.
    ("postgresql", "timestamp", "2001-01-01 00:00:00+05:00", "without an offset"),
    ("mysql", "timestamp", "2001-01-01 00:00:00+05:00", "without an offset"),
    # A time on a date column: cut to the date.
    ("postgresql", "date", "2001-01-01 12:00:00", "compared with a date"),
    ("mysql", "date", "2001-01-01 12:00:00", "compared with a date"),
    # SQLite compares text as text: another format or a zone is another value.
    ("sqlite", "text", "2001-01-01T00:00:00", "column's own format"),
    ("sqlite", "text", "2001-01-01 00:00:00+02:00", "column's own format"),
]


@pytest.mark.parametrize(("dialect", "kind", "cutoff", "says"), REFUSED)
def test_a_cutoff_the_column_would_compare_otherwise_is_refused(dialect, kind, cutoff, says, home):
    with _stamped(dialect, kind, home) as (config, url):
        result = _apply_with_cutoff(config, cutoff)
        assert result.status == "failed"
        error = result.steps[1].error
        assert f"cutoff {cutoff!r} is not exactly comparable with stamped.at" in error
        assert says in error
        assert _rows(url) == 50


EXACT = [
    ("postgresql", "timestamptz", "2001-01-01 00:00:00.123456+02:00"),
    ("postgresql", "timestamp", "2001-01-01 00:00:00.5"),
    ("postgresql", "date", "2001-01-01"),
    ("mysql", "timestamp", "2001-01-01 00:00:00.123456"),
    ("mysql", "date", "2001-01-01"),
    ("sqlite", "text", "2001-01-01 00:00:00"),
]


@pytest.mark.parametrize(("dialect", "kind", "cutoff"), EXACT)
def test_a_cutoff_the_column_holds_exactly_runs_as_shown(dialect, kind, cutoff, home):
    with _stamped(dialect, kind, home) as (config, url):
        result = _apply_with_cutoff(config, cutoff)
        assert result.status == "completed", result.steps[1].error
        assert result.steps[1].output["cutoff"] == cutoff
        assert _rows(url) == 30
