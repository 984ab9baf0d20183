"""The page walk holds max_batch_size on every batch it commits, whatever the table's
statistics say: a table analyzed when it held a few rows, then grown by many old rows
with autovacuum off (its pg_class still saying a page of ten rows), is purged in batches
of at most max_batch_size rows, and every old row is gone; so is a table analyzed as it
is, whose wide kept rows come first and narrow old rows after (its rows per page, an
average, far fewer than the old rows a page holds)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from aishell import commands
from aishell.config.models import load_config
from tests.handlers.purge.test_exactly_once import point_at
from tests.services import scratch_postgresql

RETENTION = 30
OLD = 200_000
BATCH, LARGEST = 500, 1000
# Kept rows: a few narrow ones analyzed before the old rows came (stale statistics), or
# many wide ones (about five a page, uncompressed) analyzed with them.
FEW, WIDE = 10, 5_000

_INSERT = (
    "INSERT INTO fixpage_events SELECT g, localtimestamp - CAST(:age AS interval), "
    "repeat('w', CAST(:width AS int)) "
    "FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS s(g)"
)


def _insert(conn: Connection, first: int, n: int, age: str, width: int) -> None:
    values = {"first": first, "last": first + n - 1, "age": age, "width": width}
    conn.execute(text(_INSERT), values)


def _table(url: str, stale: bool) -> int:
    """fixpage_events with kept rows (ids from 1), then OLD rows 40 days old, one
    character wide; no autovacuum. The number of rows kept."""
    kept = FEW if stale else WIDE
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            text(
                "CREATE TABLE fixpage_events (id bigint PRIMARY KEY, created_at timestamp "
                "NOT NULL, payload text NOT NULL) WITH (autovacuum_enabled = false)"
            )
        )
        conn.execute(text("ALTER TABLE fixpage_events ALTER payload SET STORAGE PLAIN"))
        _insert(conn, 1, kept, "0 days", 1 if stale else 1500)
        if stale:
            conn.execute(text("ANALYZE fixpage_events"))
        _insert(conn, kept + 1, OLD, "40 days", 1)
        if not stale:
            conn.execute(text("ANALYZE fixpage_events"))
        relpages, reltuples, pages = conn.execute(
            text(
                "SELECT relpages, reltuples, pg_relation_size('fixpage_events') / 8192 "
                "FROM pg_class WHERE relname = 'fixpage_events'"
            )
        ).one()
    engine.dispose()
    if stale:
        assert relpages == 1 and pages > 500, (relpages, pages)
    else:
        # Current statistics, whose rows per page would fill a batch of max_batch_size
        # rows with pages of far more old rows.
        assert relpages == pages and reltuples / relpages < LARGEST / 10, (relpages, reltuples)
    return kept


def _page_walk_all_allowed(home: Path) -> None:
    """The purge walks pages and may delete every row (max_share 1.0)."""
    path = home / "config" / "agents" / "log_cleanup.yaml"
    data = yaml.safe_load(path.read_text())
    data["log_cleanup_agent"]["purge"]["walk"] = "pages"
    for constraint in data["log_cleanup_agent"]["safety_constraints"]:
        if constraint.get("type") == "purge_limits":
            constraint["max_share"] = 1.0
    path.write_text(yaml.safe_dump(data))


def _committed_deletes(statements: list[dict[str, Any]], step: int) -> list[int]:
    """The rows of each DELETE of the step that its batch committed: a batch that
    deleted rows reads its transaction's id before it commits; one undone does not."""
    mine = [s for s in statements if s["step_index"] == step]
    rows = []
    for this, after in zip(mine, [*mine[1:], None], strict=True):
        if not this["sql"].lstrip().upper().startswith("DELETE") or not this["rows"]:
            continue
        if after is not None and "pg_current_xact_id" in after["sql"]:
            rows.append(this["rows"])
    return rows


@pytest.mark.parametrize("stale", [True, False], ids=["stale", "wide-then-narrow"])
def test_no_page_batch_commits_over_max_batch_size(home: Path, stale: bool) -> None:
    with scratch_postgresql(name=f"fixpage_{uuid.uuid4().hex[:10]}") as url:
        kept = _table(url, stale)
        point_at(home, url)
        _page_walk_all_allowed(home)
        config = load_config(home=home)
        job = {
            "table": "fixpage_events",
            "date_column": "created_at",
            "retention_days": RETENTION,
            "batch_size": BATCH,
            "max_batch_size": LARGEST,
        }
        result = commands.run_job(config, "log_cleanup", job)
        assert result.status == "completed", result.error
        purge = result.steps[1]
        assert purge.output["walk"] == "pages"
        assert purge.output["complete"] and purge.output["rows_deleted"] == OLD

        rows = _committed_deletes(commands.run_statements(config, result.run_id), purge.index)
        assert sum(rows) == OLD
        assert max(rows) <= LARGEST, rows[:10]

        engine = create_engine(url)
        with engine.connect() as conn:
            left = conn.execute(text("SELECT id FROM fixpage_events ORDER BY id")).scalars()
            assert list(left) == list(range(1, kept + 1))
        engine.dispose()
