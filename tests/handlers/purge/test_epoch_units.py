"""A Unix-time column's unit decides which rows are older than the cutoff: one row in
the other unit (an outlier, a special value, a placeholder) must never make every row
old. Milliseconds are chosen only where no value reads as seconds; a column of both is
refused before anything is deleted."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config
from aishell.errors import TargetError
from tests.helpers import run_sql, scratch_target

RETENTION = 30
ROWS = 400


def _kept(url: str) -> set[int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        kept = {int(r[0]) for r in conn.execute(text("SELECT id FROM stamps"))}
    engine.dispose()
    return kept


def _stamps(url: str, unit: int, column_type: str, indexed: bool) -> dict[int, float]:
    """ROWS rows aged 0.5 to 59.5 days, in `unit` (1: seconds, 1000: milliseconds)."""
    ages = {i: (i % 60) + 0.5 for i in range(1, ROWS + 1)}
    now = time.time()
    run_sql(url, f"CREATE TABLE stamps (id bigint PRIMARY KEY, at {column_type} NOT NULL)")
    if indexed:
        run_sql(url, "CREATE INDEX stamps_at ON stamps (at)")
    values = ", ".join(f"({i}, {int((now - age * 86_400) * unit)})" for i, age in ages.items())
    run_sql(url, f"INSERT INTO stamps VALUES {values}")
    return ages


def _purge(config: Config) -> commands.RunResult:
    job = {"table": "stamps", "date_column": "at", "retention_days": RETENTION, "batch_size": 50}
    return commands.run_job(config, "log_cleanup", job)


def _refused(config: Config) -> str:
    """The purge's refusal, met while planning, before a run starts."""
    with pytest.raises(TargetError) as refused:
        _purge(config)
    return str(refused.value)


DIALECTS = ["postgresql", "mysql", "sqlite"]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "unindexed"])
@pytest.mark.parametrize("outlier", [10**11, 10**13])
def test_one_value_in_milliseconds_among_seconds_deletes_nothing(dialect, indexed, outlier, home):
    """The outlier is the newest value (an index's max): the column is refused, naming a
    value of each unit, and every row stays."""
    with scratch_target(dialect, home) as (config, url):
        _stamps(url, 1, "bigint", indexed)
        run_sql(url, f"INSERT INTO stamps VALUES (0, {outlier})")
        before = _kept(url)
        if indexed:
            error = _refused(config)
            assert "in seconds and in milliseconds" in error, error
            assert str(outlier) in error, error
            assert _kept(url) == before
            return
        # Unindexed, the sample may miss the outlier: then the purge is in seconds,
        # whose cutoff never reaches it.
        try:
            result = _purge(config)
        except TargetError as refused:
            assert "in seconds and in milliseconds" in str(refused)
            assert _kept(url) == before
            return
        assert result.status == "completed", result.error
        assert result.steps[0].output["date_kind"] == "epoch"
        assert _kept(url) == {i for i in before if i == 0 or (i % 60) + 0.5 < RETENTION}


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "unindexed"])
def test_seconds_beyond_the_sample_of_a_milliseconds_column_are_not_deleted(dialect, indexed, home):
    """A column in milliseconds whose later rows (beyond any sample) are in seconds: the
    seconds' rows would all be older than a cutoff in milliseconds. Refused."""
    with scratch_target(dialect, home) as (config, url):
        _stamps(url, 1000, "bigint", indexed)
        recent = int(time.time() - 3600)
        run_sql(url, f"INSERT INTO stamps VALUES (100000, {recent})")
        error = _refused(config)
        assert "in seconds and in milliseconds" in error, error
        assert str(recent) in error, error
        assert len(_kept(url)) == ROWS + 1


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_special_and_placeholder_values_do_not_decide_the_unit(dialect, home):
    """Seconds in a numeric column with an 'Infinity' (PostgreSQL) or a far-future
    placeholder (MariaDB's DECIMAL has no infinity), and a 0: purged in seconds, each
    row by its age; the special rows stay (never older than the cutoff), the 0 goes."""
    with scratch_target(dialect, home) as (config, url):
        ages = _stamps(url, 1, "numeric" if dialect == "postgresql" else "decimal(30,3)", True)
        special = "'Infinity'" if dialect == "postgresql" else "99999999999999999999"
        run_sql(url, f"INSERT INTO stamps VALUES (0, 0), (-1, {special})")
        result = _purge(config)
        assert result.status == "completed", result.error
        assert result.steps[0].output["date_kind"] == "epoch"
        assert _kept(url) == {-1} | {i for i, age in ages.items() if age < RETENTION}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_milliseconds_with_a_zero_placeholder_are_milliseconds(dialect, home):
    with scratch_target(dialect, home) as (config, url):
        ages = _stamps(url, 1000, "bigint", True)
        run_sql(url, "INSERT INTO stamps VALUES (0, 0)")
        result = _purge(config)
        assert result.status == "completed", result.error
        assert result.steps[0].output["date_kind"] == "epoch_ms"
        assert _kept(url) == {i for i, age in ages.items() if age < RETENTION}
