"""The page walk (PostgreSQL 14+): batches over ranges of the heap's pages, while another
session inserts and updates rows, and an old row moved by an UPDATE into a page already
done; a run SIGKILLed mid-purge and resumed; the rule that picks pages or keys; what a
preview shows.

Every wait is bounded by HANG seconds (a hang detector, never a timing assertion).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import load_config
from aishell.handlers.purge.pages import page_rule, walks_pages
from tests.handlers.purge.test_exactly_once import point_at, sigkill, started_run
from tests.handlers.purge.test_purge_faults import (
    StateLook,
    _no_process_left,  # noqa: F401
    aishell,
)

HANG = 90
RETENTION = 30
# 61 rows fill a page (132 bytes each with its line pointer): 40 full pages.
ROWS = 61 * 40
# Rows 1 to FREED (the first 5 pages) are deleted and vacuumed before the purge: the
# free space map has room there and nowhere else, so an UPDATE that outgrows its page
# puts the new version there.
FREED = 61 * 5
# One page a batch (about 60 rows a page), however long it takes; the page walk, which
# `walk: auto` would not take here (the ids follow the pages' order).
SMALL = {"batch_size": 10, "max_batch_size": 60, "max_batch_ms": 60_000, "walk": "pages"}


@contextmanager
def events(url: str) -> Iterator[dict[int, datetime]]:
    """events: every third row 40 days old, the others a day old, mixed along the pages;
    rows 1 to FREED gone and vacuumed; no autovacuum. Yields each row's date."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            text(
                "CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamp NOT NULL, "
                "payload text NOT NULL) WITH (autovacuum_enabled = false)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO events SELECT g, localtimestamp - CASE WHEN g % 3 = 0 THEN "
                "interval '40 days' ELSE interval '1 day' END, repeat('p', 80) "
                "FROM generate_series(1, :rows) g"
            ),
            {"rows": ROWS},
        )
        conn.execute(text("DELETE FROM events WHERE id <= :n"), {"n": FREED})
        conn.execute(text("VACUUM ANALYZE events"))
        before = dict(conn.execute(text("SELECT id, created_at FROM events")).all())
        last = conn.execute(text("SELECT max(ctid) FROM events")).scalar_one()
    engine.dispose()
    assert last == "(39,61)", last  # full pages, as the free space map's room needs
    yield before


def walk_in_config(home: Path, walk: str) -> None:
    """The log_cleanup agent's purge walks this way (a run from the command line)."""
    agents = home / "config" / "agents" / "log_cleanup.yaml"
    data = yaml.safe_load(agents.read_text())
    data["log_cleanup_agent"]["purge"]["walk"] = walk
    agents.write_text(yaml.safe_dump(data))


def ids_of(url: str) -> dict[int, datetime]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = dict(conn.execute(text("SELECT id, created_at FROM events")).all())
    engine.dispose()
    return found


class Writer:
    """Another session, as an application's: inserts new rows (ids from 100,001) and
    updates kept and old rows in place (their dates unchanged), until stopped."""

    def __init__(self, url: str, before: dict[int, datetime]) -> None:
        self.url = url
        self.ids = sorted(before)
        self.inserted: list[int] = []
        self.updates = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(HANG)

    def _write(self) -> None:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            n = 0
            while not self._stop.is_set():
                n += 1
                conn.execute(
                    text("INSERT INTO events VALUES (:id, localtimestamp, 'new')"),
                    {"id": 100_000 + n},
                )
                self.inserted.append(100_000 + n)
                # An old row and a kept one, each updated where it is (same size).
                conn.execute(
                    text("UPDATE events SET payload = repeat('u', 80) WHERE id = :id"),
                    {"id": self.ids[(n * 37) % len(self.ids)]},
                )
                self.updates += 1
                time.sleep(0.02)
        engine.dispose()


def _expect(before: dict[int, datetime], cutoff: str) -> set[int]:
    limit = datetime.fromisoformat(cutoff)
    return {i for i, at in before.items() if at < limit}


def _on_page(url: str, number: int) -> list[tuple[int, datetime]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, created_at FROM events WHERE ctid >= CAST(:low AS tid) "
                "AND ctid < CAST(:high AS tid) ORDER BY id"
            ),
            {"low": f"({number},0)", "high": f"({number + 1},0)"},
        ).all()
    engine.dispose()
    return [(int(i), at) for i, at in rows]


def _old_on_page(url: str, number: int) -> int:
    """An old row's id on the page (rows are a day or 40 days old)."""
    limit = datetime.now() - timedelta(days=20)
    return next(i for i, at in _on_page(url, number) if at < limit)


def _waiting_on_a_lock(url: str, database: str) -> bool:
    engine = create_engine(url)
    with engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :d "
                "AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM%'"
            ),
            {"d": database},
        ).scalar_one()
    engine.dispose()
    return bool(waiting)


def test_page_batches_delete_exactly_the_old_rows_while_another_session_writes(home):
    """A writer inserts and updates meanwhile; one old row, moved by an UPDATE that
    outgrows its page into a page the walk has done (free space a VACUUM left), is found
    by the last look and deleted in a second round. Every row old at the start goes, once;
    no other row does."""
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url, events(url) as before:
        point_at(home, url)
        config = load_config(home=home)
        database = url.rsplit("/", 1)[1]
        # The batch of page 15 waits on a lock held here; meanwhile an old row of page
        # 30, not yet walked, is updated to outgrow its page.
        held_row = _old_on_page(url, 15)
        moved_row = _old_on_page(url, 30)
        holder = create_engine(url).connect()
        holder.execute(text("SELECT 1 FROM events WHERE id = :id FOR UPDATE"), {"id": held_row})
        moved: dict[str, Any] = {}

        def move_while_held() -> None:
            deadline = time.monotonic() + HANG
            while not _waiting_on_a_lock(url, database) and time.monotonic() < deadline:
                time.sleep(0.02)
            engine = create_engine(url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                moved["ctid"] = conn.execute(
                    text(
                        "UPDATE events SET payload = (SELECT string_agg(md5(g::text), '') "
                        "FROM generate_series(1, 40) g) WHERE id = :id RETURNING ctid::text"
                    ),
                    {"id": moved_row},
                ).scalar_one()
            engine.dispose()
            holder.rollback()

        mover = threading.Thread(target=move_while_held, daemon=True)
        with Writer(url, before) as writer:
            mover.start()
            result = commands.run_job(
                config,
                "log_cleanup",
                {
                    "table": "events",
                    "date_column": "created_at",
                    "retention_days": RETENTION,
                    **SMALL,
                },
            )
            mover.join(HANG)
        holder.close()
        assert result.status == "completed", result.error
        purge = result.steps[1].output
        assert purge["walk"] == "pages" and purge["complete"]
        old = _expect(before, result.steps[0].output["cutoff"])
        after = ids_of(url)
        assert not old & set(after), "an old row was left"
        assert set(after) == (set(before) - old) | set(writer.inserted)
        assert purge["rows_deleted"] == len(old)
        # The moved row landed on a page already done: the look after the pages found it.
        page = int(moved["ctid"].strip("()").split(",")[0])
        assert page < 15, moved
        assert purge["looks"] >= 1
        assert writer.updates > 0


def killable_purge(archive: Path) -> list[str]:
    """A log cleanup of events in small batches with a pause between them, archived to
    `archive`: slow enough to be killed mid-purge."""
    return [
        "run", "log-cleanup", "--non-interactive", "--table", "events",
        "--date-column", "created_at", "--retention-days", str(RETENTION),
        "--batch-size", "10", "--max-batch-size", "60", "--max-batch-ms", "60000",
        "--sleep-ms", "50", "--archive-to", f"file:{archive}",
    ]  # fmt: skip


def assert_resumed_purge_exact(
    home: Path, url: str, run_id: str, before: Any, writer: Any, archive: Path
) -> dict[str, Any]:
    """The resumed run completed; every row old at the start was deleted and archived
    once, no other row went; the purge step's output."""
    run = commands.show_run(load_config(home=home), run_id)
    assert run["status"] == "completed", run["status"]
    purge: dict[str, Any] = run["steps"][1]["output"]
    old = _expect(before, run["steps"][0]["output"]["cutoff"])
    after = ids_of(url)
    assert not old & set(after), "an old row was left"
    assert set(after) == (set(before) - old) | set(writer.inserted)
    archived = [json.loads(line)["id"] for line in archive.read_text().splitlines()]
    assert sorted(archived) == sorted(old), "a row archived twice, or not at all"
    assert purge["rows_deleted"] == len(old) and purge["resumed"]
    return purge


def killed_mid_purge(home: Path, args: list[str]) -> tuple[str, dict[str, Any]]:
    """The purge `args` start, SIGKILLed once 8 batches are done: its run, and its
    progress as the kill left it."""
    proc = aishell(home, *args)
    run_id = started_run(home, proc, batches=8)
    progress = StateLook(home).progress(run_id)[0] or {}
    sigkill(proc)
    return run_id, progress


def test_a_page_walk_killed_mid_purge_resumes_deleting_and_archiving_each_row_once(home):
    """`aishell run log-cleanup` SIGKILLed mid-purge while another session writes, then
    `aishell resume`: every row old at the start is deleted and archived once, the run
    counts each once, and no other row goes."""
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url, events(url) as before:
        point_at(home, url)
        walk_in_config(home, "pages")
        archive = home / "archive" / "events.jsonl"
        args = killable_purge(archive)
        with Writer(url, before) as writer:
            run_id, progress = killed_mid_purge(home, args)
            assert progress.get("walk") == "pages", progress
            resumed = aishell(home, "resume", run_id, "--non-interactive")
            assert resumed.wait(HANG) == 0
        assert_resumed_purge_exact(home, url, run_id, before, writer, archive)


def test_walk_auto_on_a_key_in_the_pages_order_walks_the_key_and_resumes_exactly(home):
    """`walk: auto` (the default) on events, whose ids follow its pages: key ranges.
    SIGKILLed mid-purge while another session writes; then an old row the walk has not
    reached is moved by an UPDATE that outgrows its page (into free space a VACUUM left
    near the start, behind the walk, or the table's end); `aishell resume`: every row old
    at the start is deleted and archived once, the moved one too, and no other row goes."""
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url, events(url) as before:
        point_at(home, url)
        archive = home / "archive" / "events.jsonl"
        args = killable_purge(archive)
        with Writer(url, before) as writer:
            run_id, progress = killed_mid_purge(home, args)
            assert progress.get("walk") != "pages" and progress.get("last_key"), progress
        ahead = max(i for i in _expect(before, progress["cutoff"]) if i > progress["last_key"])
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            moved = conn.execute(
                text("UPDATE events SET payload = repeat('m', 400) WHERE id = :id RETURNING ctid"),
                {"id": ahead},
            ).scalar_one()
        engine.dispose()
        assert moved, "the old row ahead of the walk was not moved"
        resumed = aishell(home, "resume", run_id, "--non-interactive")
        assert resumed.wait(HANG) == 0
        purge = assert_resumed_purge_exact(home, url, run_id, before, writer, archive)
        assert purge.get("walk") != "pages"


@pytest.mark.parametrize(
    ("dialect", "version", "kind", "params", "pages"),
    [
        ("postgresql", (15, 2), "r", {}, True),
        ("postgresql", (14, 0), "r", {"walk": "pages"}, True),
        ("postgresql", (13, 9), "r", {}, False),  # no TID range scans before 14
        ("postgresql", (15, 2), "p", {}, False),  # partitioned: its partitions' pages
        ("postgresql", (15, 2), "r", {"max_rows": 100}, False),  # batches counted in rows
        ("postgresql", (15, 2), "r", {"walk": "keys"}, False),
        ("mysql", (10, 11), "r", {}, False),
        ("sqlite", (3, 40), "r", {}, False),
    ],
)
def test_pages_or_keys(dialect, version, kind, params, pages):
    assert page_rule(dialect, version, kind, params) is pages


@pytest.mark.parametrize(
    ("params", "pages"),
    [({}, False), ({"walk": "auto"}, False), ({"walk": "pages"}, True), ({"walk": "keys"}, False)],
)
def test_a_key_in_the_pages_order_is_walked_unless_the_job_says_pages(params, pages):
    assert page_rule("postgresql", (15, 2), "r", params, key_in_order=True) is pages


def test_walk_auto_reads_whether_the_key_follows_the_pages_order():
    """On a real server: ids inserted in order are walked by key; ids shuffled along the
    pages, or a table never analyzed (no statistics), by pages."""
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            tables = (("in_order", "g"), ("shuffled", "(g * 7919) % 5003"), ("bare", "g"))
            for name, order in tables:
                conn.execute(text(f'CREATE TABLE "{name}" (id bigint PRIMARY KEY, at timestamp)'))
                conn.execute(
                    text(
                        f'INSERT INTO "{name}" SELECT {order}, localtimestamp '
                        f"FROM generate_series(1, 5003) g"
                    )
                )
            conn.execute(text('ANALYZE "in_order", "shuffled"'))
            chosen = {
                name: walks_pages(conn, f'"{name}"', {}, "id", integer_key=True)
                for name in ("in_order", "shuffled", "bare")
            }
            # A text key is walked by pages: its key walk looks up each batch's end.
            text_key = walks_pages(conn, '"in_order"', {}, "id", integer_key=False)
        engine.dispose()
    assert chosen == {"in_order": False, "shuffled": True, "bare": True}
    assert text_key is True


def test_the_preview_shows_the_statements_the_page_walk_sends(home):
    """What is checked is what runs: the preview's statements are the page walk's, and
    every statement the purge then sends is one of them."""
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url, events(url):
        point_at(home, url)
        config = load_config(home=home)
        job = {
            "table": "events",
            "date_column": "created_at",
            "retention_days": RETENTION,
            "walk": "pages",
        }
        dry = commands.run_job(config, "log_cleanup", job, dry_run=True)
        # The reads at its start (the key's ends, the count max_share is of), then the walk's.
        ends, count_all, *shown = dry.steps[1].sql
        assert ends.startswith('SELECT (SELECT "id" FROM "events"'), ends
        assert count_all == 'SELECT count(*) FROM "events"'
        assert shown[0].startswith("SELECT pg_catalog.pg_relation_size(")
        assert shown[1] == (
            'DELETE FROM "events" WHERE ctid >= CAST(:low AS tid) AND ctid < CAST(:high AS '
            'tid) AND "created_at" < :cutoff'
        )
        assert any("pg_current_xact_id" in sql for sql in shown)
        assert 'SELECT "id" FROM "events" WHERE "created_at" < :cutoff LIMIT :n' in shown
        assert (
            shown[-2] == 'DELETE FROM "events" WHERE "id" = ANY (:keys) AND "created_at" < :cutoff'
        )
        # The count of the old rows left that a stop at max_share sends.
        assert shown[-1] == (
            'SELECT count(*) FROM (SELECT 1 FROM "events" WHERE "created_at" < :cutoff '
            "LIMIT :n) aishell_left"
        )
        result = commands.run_job(config, "log_cleanup", {**job, **SMALL})
        assert result.status == "completed", result.error
        sent = {
            s["sql"]
            for s in commands.run_statements(config, result.run_id)
            if s["step_index"] == 1 and ("ctid" in s["sql"] or "xact" in s["sql"])
        }
        previewed = {re.sub(r"(?<![:\w]):[a-z_]+", ":v", sql) for sql in shown}
        assert sent and {_as_previewed(sql) for sql in sent} <= previewed, (sent, shown)


def _as_previewed(sql: str) -> str:
    """A statement as the driver got it ($1, ...) with :name for each value, as shown."""
    return re.sub(r"\$\d+", ":v", sql)
