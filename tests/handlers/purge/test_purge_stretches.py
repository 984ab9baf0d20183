"""A purge of an integer key passes stretches without old rows by reading them: a batch
reads where its first old row is and deletes from there, so no DELETE (which on MySQL
locks every row it reads) runs over rows it keeps only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import MetaData, create_engine, insert, text

from aishell import commands
from aishell.config.models import Config, load_config
from tests.handlers.purge.test_purge_faults import SERVER_NOW, _events, _scratch, rows_of

RETENTION = 30
# Old rows at both ends of the key and in one short run between; long runs of kept
# rows in between.
OLD = set(range(1, 101)) | set(range(701, 751)) | set(range(1201, 1301))
ROWS = 1400


def _fill(url: str) -> dict[int, datetime]:
    engine = create_engine(url)
    events = _events(MetaData(), "events")
    with engine.begin() as conn:
        events.create(conn)
        now = conn.execute(text(SERVER_NOW[engine.dialect.name])).scalar_one()
        if isinstance(now, str):
            now = datetime.fromisoformat(now)
        conn.execute(
            insert(events),
            [
                {
                    "id": i,
                    "created_at": now - timedelta(days=RETENTION + 5 if i in OLD else 1),
                    "payload": f"event {i}",
                }
                for i in range(1, ROWS + 1)
            ],
        )
    engine.dispose()
    return rows_of(url)


def _point_at(home: Path, url: str, lock_timeout_ms: int) -> None:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url, "environment": "test", "lock_timeout_ms": lock_timeout_ms}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))


def _purge_of(
    url: str, home: Path, archive: str | None, lock_timeout_ms: int
) -> tuple[dict[int, datetime], Config, dict[str, Any]]:
    """The table filled (and an archive table made), the config pointed at it: the rows
    before, the config, and the purge's job."""
    before = _fill(url)
    job: dict[str, Any] = {
        "table": "events",
        "date_column": "created_at",
        "retention_days": RETENTION,
        # Batches of 20 keys, whatever they take; the look ahead grows to 400.
        "batch_size": 20,
        "max_batch_size": 400,
        "max_batch_ms": 60_000,
        # The key walk's stretches (PostgreSQL 14+ would walk the pages).
        "walk": "keys",
    }
    if archive:
        engine = create_engine(url)
        with engine.begin() as conn:
            _events(MetaData(), "events_archive", keyed=False).create(conn)
        engine.dispose()
        job["archive_to"] = "table:events_archive"
    _point_at(home, url, lock_timeout_ms)
    return before, load_config(home=home), job


def _ranges(config: Any, run_id: str, index: int, kind: str) -> list[tuple[int, int]]:
    """The (after, upper] key ranges of the purge's statements of one kind, in order."""
    return [
        (s["parameters"]["after"], s["parameters"]["upper"])
        for s in commands.run_statements(config, run_id)
        if s["step_index"] == index
        and "after" in (s["parameters"] or {})
        and s["sql"].lstrip().upper().startswith(kind)
    ]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
@pytest.mark.parametrize("archive", [None, "table"])
def test_batches_start_at_old_rows_and_kept_stretches_are_only_read(home, dialect, archive):
    with _scratch(dialect, home) as url:
        before, config, job = _purge_of(url, home, archive, lock_timeout_ms=30_000)
        result = commands.run_job(config, "log_cleanup", job)
        assert result.status == "completed", result.error
        purge = result.steps[1]
        assert purge.output["complete"] and purge.output["rows_deleted"] == len(OLD)
        assert set(rows_of(url)) == set(before) - OLD

        work = "WITH" if archive and dialect == "postgresql" else "DELETE"
        deletes = _ranges(config, result.run_id, purge.index, work)
        assert len(deletes) == purge.output["batches"]
        for after, upper in deletes:
            # Every batch's range begins at an old row, so none is only kept rows.
            assert after + 1 in OLD, (after, upper)
        looks = _ranges(config, result.run_id, purge.index, "SELECT")
        # Stretches without an old row were read and passed: no batch deleted over one.
        empty = [(a, u) for a, u in looks if not OLD & set(range(a + 1, u + 1))]
        assert empty
        for after, upper in empty:
            assert all(u <= after or a >= upper for a, u in deletes), (after, upper)
        # Between them, the reads and the batches walked the whole key.
        walked: set[int] = set()
        for after, upper in looks + deletes:
            walked |= set(range(after + 1, upper + 1))
        assert walked >= set(range(1, ROWS + 1))


@contextmanager
def _row_locked(url: str, key: int) -> Iterator[None]:
    """Another session holds a kept row locked (FOR UPDATE) for as long as the block."""
    engine = create_engine(url)
    with engine.connect() as conn:
        conn.execute(text("SELECT id FROM events WHERE id = :k FOR UPDATE"), {"k": key})
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
@pytest.mark.parametrize("archive", [None, "table"])
def test_a_kept_row_locked_by_another_session_does_not_hold_the_purge(home, dialect, archive):
    # On MySQL a DELETE (or, with an archive table, the copy's locking read) over a
    # stretch of kept rows would wait for the row's lock; the read that passes the
    # stretch takes none.
    with _scratch(dialect, home) as url:
        before, config, job = _purge_of(url, home, archive, lock_timeout_ms=2_000)
        outcome: dict[str, Any] = {}
        with _row_locked(url, 400):
            worker = threading.Thread(
                target=lambda: outcome.update(result=commands.run_job(config, "log_cleanup", job))
            )
            worker.start()
            worker.join(120)
        result = outcome["result"]
        assert result.status == "completed", result.error
        assert set(rows_of(url)) == set(before) - OLD
