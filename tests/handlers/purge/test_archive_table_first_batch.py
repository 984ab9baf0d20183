"""A purge into an archive table that already holds an earlier purge's rows, killed with
its first batch in doubt (its COMMIT landed or not), then resumed: each old row is
deleted, counted and archived once, and the earlier rows stay as they were.

A table walked by a text key has no key below its first: its first batch's range is
every key up to its end, and in the archive table that range holds every row an earlier
purge archived (their keys are below the table's least key, the rows having gone). A
resume that judged the batch by the archive's rows in that range alone took it for
committed: its rows were counted as deleted and passed over, left in the table.

SQLite: a read transaction of the test holds the batch's commit back (the run waits for
it) while the run is SIGKILLed, or, let go, the state store's lock held by the test
keeps the run from its next checkpoint. MariaDB: a TCP proxy of the test's holds the
batch's COMMIT, never sent on, or the message after it. Every wait is bounded (HANG
seconds: a hang detector, never a timing assertion).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, DateTime, MetaData, String, Table, create_engine, insert, text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import load_config
from tests.faultproxy import Proxy, server_port, through
from tests.handlers.purge.test_exactly_once import point_at, sigkill

# _no_process_left (autouse): every aishell process a test starts is killed when the
# test ends, pass or fail.
from tests.handlers.purge.test_purge_faults import (
    SERVER_NOW,
    StateLook,
    _no_process_left,  # noqa: F401
    aishell,
    commits_held,
    state_lock,
)
from tests.services import scratch_server

HANG = 90
ROWS = 200
DAYS = 45
RETENTION = 30
# The rows an earlier purge archived: keys below every key the table holds now.
EARLIER = 40


def _events(metadata: MetaData, name: str, keyed: bool = True) -> Table:
    # The archive table has no key: a row archived twice shows as two rows.
    return Table(
        name,
        metadata,
        Column("id", String(16), primary_key=keyed, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("payload", String(64), nullable=False),
    )


@dataclass
class Tables:
    url: str
    before: dict[str, datetime]
    earlier: list[str]

    def rows(self) -> dict[str, datetime]:
        engine = create_engine(self.url)
        with engine.connect() as conn:
            found = conn.execute(text("SELECT id, created_at FROM events")).all()
        engine.dispose()
        return {
            str(k): v if isinstance(v, datetime) else datetime.fromisoformat(v) for k, v in found
        }

    def archived(self) -> list[str]:
        engine = create_engine(self.url)
        with engine.connect() as conn:
            found = list(conn.execute(text("SELECT id FROM events_archive")).scalars())
        engine.dispose()
        return [str(k) for k in found]


def _fill(url: str) -> Tables:
    """events keyed by text ('e0001' ...), old and new rows mixed along the key, and an
    events_archive holding an earlier purge's rows ('a0001' ...)."""
    engine = create_engine(url)
    metadata = MetaData()
    events, archive = _events(metadata, "events"), _events(metadata, "events_archive", False)
    with engine.begin() as conn:
        metadata.create_all(conn)
        now = conn.execute(text(SERVER_NOW[engine.dialect.name])).scalar_one()
        now = datetime.fromisoformat(now) if isinstance(now, str) else now
        rows = [
            {
                "id": f"e{i:04d}",
                "created_at": now - timedelta(days=(i * 7919) % DAYS, seconds=30 + i),
                "payload": f"event {i}",
            }
            for i in range(1, ROWS + 1)
        ]
        conn.execute(insert(events), rows)
        earlier = [
            {"id": f"a{i:04d}", "created_at": now - timedelta(days=400), "payload": "earlier"}
            for i in range(1, EARLIER + 1)
        ]
        conn.execute(insert(archive), earlier)
    engine.dispose()
    tables = Tables(url, {}, [r["id"] for r in earlier])
    tables.before = tables.rows()
    return tables


def _args() -> list[str]:
    return [
        "run", "log-cleanup", "--non-interactive", "--table", "events",
        "--date-column", "created_at", "--retention-days", str(RETENTION),
        "--batch-size", "10", "--max-batch-size", "10", "--max-batch-ms", "60000",
        "--archive-to", "table:events_archive",
    ]  # fmt: skip


def _first_batch_waiting(look: StateLook, proc: subprocess.Popen[bytes]) -> str:
    """The run's id once its first batch is checkpointed pending, having deleted rows."""
    deadline = time.monotonic() + HANG
    while True:
        run_id = look.run_id() or ""
        progress = (look.progress(run_id)[0] if run_id else None) or {}
        if (progress.get("pending") or {}).get("rows") and not progress.get("batches"):
            return run_id
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before its first batch"
        assert time.monotonic() < deadline, f"no first batch pending within {HANG}s"
        time.sleep(0.02)


@contextmanager
def _killed_in_first_batch(home: Path, dialect: str, landed: bool) -> Iterator[tuple[Tables, str]]:
    """A run killed with its first batch checkpointed pending, its commit landed (the
    run stopped before its next checkpoint) or not; yields the tables and the run's id,
    the target pointing straight at the database."""
    if dialect == "sqlite":
        url = f"sqlite:///{home / f'logs-{uuid.uuid4().hex[:8]}.db'}"
        tables = _fill(url)
        point_at(home, url)
        look = StateLook(home)
        commits = ExitStack()
        commits.enter_context(commits_held(str(make_url(url).database)))
        with commits:
            proc = aishell(home, *_args())
            run_id = _first_batch_waiting(look, proc)
            if landed:
                # The next checkpoint waits for the store's lock; its commit goes through.
                with state_lock(home):
                    commits.close()
                    _wait_for(lambda: _first_ids_gone(tables), "the first batch's commit", proc)
                    sigkill(proc)
                assert not (look.progress(run_id)[0] or {}).get("batches"), "not the first"
            else:
                sigkill(proc)
        yield tables, run_id
        return
    with scratch_server(dialect) as url:
        tables = _fill(url)
        proxy = Proxy(server_port(url))
        try:
            point_at(home, through(proxy.port, url))
            if landed:  # the message after the first batch's COMMIT held
                proxy.hold(b"", after=(b"DELETE FROM", b"COMMIT"))
            else:
                proxy.hold(b"COMMIT", after=(b"DELETE FROM",))
            proc = aishell(home, *_args())
            run_id = _first_batch_waiting(StateLook(home), proc)
            _wait_for(proxy.held_once.is_set, "a message held", proc)
            sigkill(proc)
            point_at(home, url)
            yield tables, run_id
        finally:
            proxy.close()


def _wait_for(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HANG
    while not ready():
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {HANG}s"
        time.sleep(0.02)


def _first_ids_gone(tables: Tables) -> bool:
    """Whether rows the first batch deleted are gone (its commit landed)."""
    return len(tables.rows()) < len(tables.before)


@pytest.mark.parametrize("landed", [False, True])
@pytest.mark.parametrize("dialect", ["sqlite", "mysql"])
def test_a_first_batch_in_doubt_beside_earlier_archived_rows_counts_once(home, dialect, landed):
    with _killed_in_first_batch(home, dialect, landed) as (tables, run_id):
        result = commands.resume_run(load_config(home=home), run_id)
        assert result.status == "completed", result.error
        cutoff = datetime.fromisoformat(result.steps[0].output["cutoff"])
        old = {k for k, at in tables.before.items() if at < cutoff}
        assert 0 < len(old) < ROWS
        left = set(tables.rows())
        assert left == set(tables.before) - old, f"{len(left & old)} old rows left"
        assert sorted(tables.archived()) == sorted([*tables.earlier, *old])
        assert result.steps[1].output["rows_deleted"] == len(old)
