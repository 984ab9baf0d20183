"""The locks each tool declares (`locks:` in tools/*.yaml) are the locks its step takes:
each table-locking step runs for real on a scratch table while a session of the test
holds a conflicting lock, so the step's own request waits and shows in the server's
lock views; another session watches them. Previews name every table-touching statement,
each catalog read once, and each step's locks and lock wait."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.config.resources import bundled_catalog_dir
from aishell.policy.approvers import PreApproved
from aishell.registry import Registry, load_registry
from aishell.render.prompt import approval_prompt
from tests.handlers.backup.test_backup_lock_wait import verified_full_backup
from tests.handlers.backup.test_restore_prechecks import Recorder
from tests.helpers import one_step_plan
from tests.private_servers import private_mariadb
from tests.services import MYSQL_ADMIN, changes_counted, engine, scratch_mysql

HANG = 120  # seconds: a hang detector, never a timing assertion
TABLE = "locks_probe"


# Loaded when a test first asks, not when xdist's workers import the module to collect it.
@cache
def registry() -> Registry:
    return load_registry([bundled_catalog_dir()])


# --- PostgreSQL -------------------------------------------------------------------------

# For each mode a step may ask for: the weakest mode another session can hold that makes
# the request wait (PostgreSQL's table-level lock conflicts, "Explicit Locking").
PG_WEAKEST_CONFLICT = {
    "ACCESS SHARE": "ACCESS EXCLUSIVE",
    "ROW SHARE": "EXCLUSIVE",
    "ROW EXCLUSIVE": "SHARE",
    "SHARE UPDATE EXCLUSIVE": "SHARE UPDATE EXCLUSIVE",
    "SHARE": "ROW EXCLUSIVE",
    "SHARE ROW EXCLUSIVE": "ROW EXCLUSIVE",
    "EXCLUSIVE": "ROW SHARE",
    "ACCESS EXCLUSIVE": "ACCESS SHARE",
}


def pg_lock_name(mode: str) -> str:
    """pg_locks' name of a mode: SHARE UPDATE EXCLUSIVE is ShareUpdateExclusiveLock."""
    return mode.title().replace(" ", "") + "Lock"


@dataclass(frozen=True)
class Case:
    tool: str
    agent: str
    params: dict[str, Any]
    # The declared mode the step is made to wait for.
    waits_for: str
    # Extensions its check needs in the scratch database.
    extensions: tuple[str, ...] = ()
    # SQL that makes the table worth the step's work (a bloated index to rebuild).
    setup: tuple[str, ...] = ()
    # Wait until the statistics count the setup's changes since the table's ANALYZE.
    changed: bool = False
    # The case's name beside its tool's, where one tool has several cases.
    variant: str = ""

    @property
    def name(self) -> str:
        return f"{self.tool}-{self.variant}" if self.variant else self.tool


PURGE = {"table": TABLE, "date_column": "created_at", "retention_days": 30}
PG_CASES = [
    Case("optimize_table", "maintenance", {"table": TABLE}, "SHARE UPDATE EXCLUSIVE"),
    Case("update_table_statistics", "maintenance", {"table": TABLE}, "SHARE UPDATE EXCLUSIVE"),
    Case("vacuum_full_table", "maintenance", {"table": TABLE}, "ACCESS EXCLUSIVE"),
    Case(
        "check_table_corruption", "maintenance", {"tables": [TABLE]}, "ACCESS SHARE", ("amcheck",)
    ),
    Case(
        "repair_corrupted_tables",
        "maintenance",
        {"tables": [TABLE], "create_backup": False},
        "SHARE UPDATE EXCLUSIVE",
        ("amcheck",),
    ),
    Case("count_table_rows", "maintenance", {"table": TABLE}, "ACCESS SHARE"),
    Case("delete_old_records", "maintenance", PURGE, "ROW EXCLUSIVE"),
    # Its estimate measures a table changed since its ANALYZE (else pg_class's pages do).
    Case(
        "analyze_table_fragmentation",
        "maintenance",
        {"table": TABLE},
        "ACCESS SHARE",
        setup=(f"UPDATE {TABLE} SET v = v WHERE id = 1",),
        changed=True,
    ),
    Case("backup_database_full", "backup", {"lock_wait_seconds": 60}, "ACCESS SHARE"),
    Case(
        "analyze_database_health",
        "maintenance",
        {"tables": [TABLE], "check_corruption": True},
        "ACCESS SHARE",
    ),
    Case(
        "rebuild_fragmented_indexes",
        "maintenance",
        {"table": TABLE, "fragmentation_threshold": 30, "min_pages": 1},
        "SHARE UPDATE EXCLUSIVE",
        ("pgstattuple",),
        # Nine rows in ten gone: the index's leaf pages are mostly empty.
        (f"DELETE FROM {TABLE} WHERE id % 10 <> 0", f"VACUUM ANALYZE {TABLE}"),
    ),
]


def declared(tool: str, dialect: str) -> set[str]:
    """The modes the tool declares on a table of the step (its own or every one)."""
    return {
        lock.mode
        for lock in registry().get(tool).locks_on(dialect)
        if lock.object in ("table", "every table")
    }


def configure(home: Path, url: str) -> Config:
    """Target `db` with a lock wait long enough to watch a step wait, no retries."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url, "environment": "test", "lock_timeout_ms": 60_000}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    for agent in ("maintenance", "backup"):
        agent_path = home / "config" / "agents" / f"{agent}.yaml"
        agent_data = yaml.safe_load(agent_path.read_text())
        agent_data[f"{agent}_agent"]["default_config"]["max_retries"] = 0
        agent_path.write_text(yaml.safe_dump(agent_data))
    return load_config(home=home)


def make_table(url: str, extensions: tuple[str, ...] = (), setup: tuple[str, ...] = ()) -> None:
    """2,000 rows, a tenth of them 60 days old (a purge's share stays under its limit)."""
    pg = url.startswith("postgresql")
    stamp = "TIMESTAMP" if pg else "DATETIME"
    with engine(url).connect() as conn:
        for extension in extensions:
            conn.execute(text(f"CREATE EXTENSION IF NOT EXISTS {extension}"))
        conn.execute(
            text(
                f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, created_at {stamp} NOT NULL, "
                "v VARCHAR(40))"
            )
        )
        conn.execute(text(f"CREATE INDEX {TABLE}_created ON {TABLE} (created_at)"))
        rows = [
            {"id": i, "days": 60 if i % 10 == 0 else 1, "v": f"row {i}"} for i in range(1, 2001)
        ]
        past = (
            "CAST(now() - make_interval(days => :days) AS TIMESTAMP)"
            if pg
            else "NOW() - INTERVAL :days DAY"
        )
        conn.execute(text(f"INSERT INTO {TABLE} VALUES (:id, {past}, :v)"), rows)
        if pg:
            conn.execute(text(f"ANALYZE {TABLE}"))
        for statement in setup:
            conn.execute(text(statement))


@dataclass
class Watched:
    result: Any
    # (mode, waiting) of every lock the step's sessions held or asked for on the table.
    seen: set[tuple[str, bool]]


def run_watched(
    config: Config,
    url: str,
    case: Case,
    hold: Callable[[Connection], None],
    observe: Callable[[Connection, list[int]], set[tuple[str, bool]]],
    session_id: str,
) -> Watched:
    """Run the step while a blocker session holds its lock (until the step is seen
    waiting for the lock its tool declares, or 20 s at most) and a watcher session reads
    the lock views."""
    blocker_engine, watcher_engine = engine(url), engine(url)
    blocker, watcher = blocker_engine.connect(), watcher_engine.connect()
    outcome: dict[str, Any] = {}
    try:
        others = [
            int(blocker.execute(text(f"SELECT {session_id}")).scalar_one()),
            int(watcher.execute(text(f"SELECT {session_id}")).scalar_one()),
        ]
        hold(blocker)
        dialect = "postgresql" if url.startswith("postgresql") else "mysql"
        plan = one_step_plan(case.agent, "db", dialect, case.tool, case.params)

        def step() -> None:
            try:
                outcome["result"] = commands.apply_plan(config, plan, approver=PreApproved())
            except BaseException as exc:  # handed back to the test
                outcome["error"] = exc

        worker = threading.Thread(target=step, daemon=True)
        worker.start()
        seen: set[tuple[str, bool]] = set()
        held_until = time.monotonic() + 20
        released = False
        while worker.is_alive() and time.monotonic() < held_until + HANG:
            seen |= observe(watcher, others)
            # Held until the step waits for the lock its tool declares: another wait (a
            # catalog read's brief SHARED_HIGH_PRIO on MariaDB) seen first would let the
            # step's own lock through unseen.
            waited = (case.waits_for, True) in seen
            if not released and (waited or time.monotonic() > held_until):
                release(blocker)
                released = True
            time.sleep(0.05)
        worker.join(5)
        assert not worker.is_alive(), f"{case.tool} still running after {HANG}s: it hangs"
        if "error" in outcome:
            raise outcome["error"]
        return Watched(outcome["result"], seen)
    finally:
        blocker.close()
        watcher.close()
        blocker_engine.dispose()
        watcher_engine.dispose()


def pg_hold(mode: str) -> Callable[[Connection], None]:
    def hold(conn: Connection) -> None:
        conn.execute(text("BEGIN"))
        conn.execute(text(f"LOCK TABLE {TABLE} IN {mode} MODE"))

    return hold


PG_MODES = {pg_lock_name(mode): mode for mode in PG_WEAKEST_CONFLICT}


def pg_observe(conn: Connection, others: list[int]) -> set[tuple[str, bool]]:
    rows = conn.execute(
        text(
            # Table locks; a relation's extension lock (locktype extend) is no mode.
            "SELECT l.mode, l.granted FROM pg_catalog.pg_locks l "
            "JOIN pg_catalog.pg_class c ON c.oid = l.relation "
            "JOIN pg_catalog.pg_database d ON d.oid = l.database "
            "WHERE d.datname = pg_catalog.current_database() AND c.relname = :t "
            "AND l.locktype = 'relation' AND l.pid <> ALL(:others)"
        ),
        {"t": TABLE, "others": others},
    ).all()
    conn.rollback()
    return {(PG_MODES[mode], not granted) for mode, granted in rows}


@pytest.mark.parametrize("case", PG_CASES, ids=lambda c: c.tool)
def test_postgresql_steps_take_the_locks_their_tools_declare(home, pg_url, case):
    make_table(pg_url, case.extensions, case.setup)
    if case.changed:
        changes_counted(pg_url, TABLE)
    config = configure(home, pg_url)
    mode = case.waits_for
    assert mode in declared(case.tool, "postgresql")
    watched = run_watched(
        config, pg_url, case, pg_hold(PG_WEAKEST_CONFLICT[mode]), pg_observe, "pg_backend_pid()"
    )
    # Seen waiting: the step asked for the lock the tool declares, and it conflicts with
    # the weakest mode that should hold it off.
    assert (mode, True) in watched.seen, (case.tool, watched.seen)
    # Every lock it took on the table is one the tool declares, or any other once it holds
    # ACCESS EXCLUSIVE, which conflicts with every mode: VACUUM FULL's rebuild of the
    # indexes opens the table again in SHARE mode, seen now and then.
    taken = {m for m, _ in watched.seen}
    if ("ACCESS EXCLUSIVE", False) in watched.seen:
        taken = {"ACCESS EXCLUSIVE"}
    assert taken <= declared(case.tool, "postgresql"), watched.seen
    assert watched.result.steps[0].status != "failed" or case.tool == "repair_corrupted_tables", (
        watched.result.steps[0].error
    )


# --- MariaDB ------------------------------------------------------------------------------

# Metadata locks another session can hold, and how: an open transaction that read or
# wrote the table, LOCK TABLES ... READ, LOCK TABLES ... WRITE.
MY_HOLD = {
    "SHARED_READ": ["BEGIN", f"SELECT * FROM {TABLE} LIMIT 1"],
    "SHARED_WRITE": ["BEGIN", f"UPDATE {TABLE} SET v = v WHERE 1 = 0"],
    "SHARED_READ_ONLY": [f"LOCK TABLES {TABLE} READ"],
    "SHARED_NO_READ_WRITE": [f"LOCK TABLES {TABLE} WRITE"],
}
# Which requested metadata lock waits for which held one (MariaDB's mdl.cc matrix of
# granted locks; S and SH wait only for EXCLUSIVE).
MY_CONFLICTS = {
    "SHARED": set(),
    "SHARED_HIGH_PRIO": set(),
    "SHARED_READ": {"SHARED_NO_READ_WRITE"},
    "SHARED_WRITE": {"SHARED_READ_ONLY", "SHARED_NO_READ_WRITE"},
    "SHARED_UPGRADABLE": {"SHARED_NO_READ_WRITE"},
    "SHARED_READ_ONLY": {"SHARED_WRITE", "SHARED_NO_READ_WRITE"},
    "SHARED_NO_WRITE": {"SHARED_WRITE", "SHARED_NO_READ_WRITE"},
    "SHARED_NO_READ_WRITE": set(MY_HOLD),
    "EXCLUSIVE": set(MY_HOLD),
}

MY_CASES = [
    Case(
        "optimize_table", "maintenance", {"table": TABLE, "fragmentation_threshold": 0}, "EXCLUSIVE"
    ),
    Case("update_table_statistics", "maintenance", {"table": TABLE}, "SHARED_READ"),
    Case("check_table_corruption", "maintenance", {"tables": [TABLE]}, "SHARED_READ"),
    Case("count_table_rows", "maintenance", {"table": TABLE}, "SHARED_READ"),
    Case("delete_old_records", "maintenance", PURGE, "SHARED_WRITE"),
    Case(
        "rebuild_fragmented_indexes",
        "maintenance",
        {"table": TABLE, "fragmentation_threshold": 0, "min_pages": 1},
        "EXCLUSIVE",
    ),
    Case("backup_database_full", "backup", {"lock_wait_seconds": 60}, "SHARED_READ"),
    Case(
        "analyze_database_health",
        "maintenance",
        {"tables": [TABLE], "check_corruption": True},
        "SHARED_READ",
    ),
    Case(
        "repair_corrupted_tables",
        "maintenance",
        {"tables": [TABLE], "create_backup": False},
        "EXCLUSIVE",
    ),
]
# OPTIMIZE TABLE of a table of another engine holds it whole: neither read nor written
# meanwhile (InnoDB's rebuild lets both go on). So does the rebuild step, which uses it
# on those engines.
# Fresh statistics (ANALYZE TABLE): the free space of an InnoDB table is then judged
# from a sample of its rows, a read of the table itself, as each step that measures it
# takes one.
_SAMPLED = (f"ANALYZE TABLE {TABLE}",)
MY_CASES += [
    Case(tool, "maintenance", params, "SHARED_READ", setup=_SAMPLED, variant="sampled")
    for tool, params in (
        ("analyze_table_fragmentation", {"table": TABLE}),
        ("rebuild_fragmented_indexes", {"table": TABLE, "min_pages": 1}),
        ("optimize_table", {"table": TABLE}),
        ("analyze_database_health", {"tables": [TABLE]}),
    )
]
_REBUILDS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("optimize_table", {}),
    ("rebuild_fragmented_indexes", {"min_pages": 1}),
)
for _engine in ("Aria", "MyISAM"):
    MY_CASES += [
        Case(
            tool,
            "maintenance",
            {"table": TABLE, "fragmentation_threshold": 0, **extra},
            "SHARED_NO_READ_WRITE",
            setup=(f"ALTER TABLE {TABLE} ENGINE={_engine}",),
            variant=_engine.lower(),
        )
        for tool, extra in _REBUILDS
    ]


# REPAIR TABLE, the repair of a MyISAM or Aria table, holds it whole.
for _engine in ("Aria", "MyISAM"):
    MY_CASES.append(
        Case(
            "repair_corrupted_tables",
            "maintenance",
            {"tables": [TABLE], "create_backup": False},
            "SHARED_NO_READ_WRITE",
            setup=(f"ALTER TABLE {TABLE} ENGINE={_engine}",),
            variant=_engine.lower(),
        )
    )


def release(conn: Connection) -> None:
    """End what the blocker holds: its transaction, and on MariaDB its LOCK TABLES."""
    if conn.dialect.name != "postgresql":
        conn.execute(text("UNLOCK TABLES"))
    conn.rollback()


def my_hold(mode: str) -> Callable[[Connection], None]:
    def hold(conn: Connection) -> None:
        for statement in MY_HOLD[mode]:
            conn.execute(text(statement))

    return hold


def lock_view(conn: Connection) -> str | None:
    """The server's view of metadata locks, if it has one: performance_schema (when on)
    or the metadata_lock_info plugin's table."""
    if conn.execute(text("SELECT @@performance_schema")).scalar_one():
        return (
            "SELECT m.LOCK_TYPE AS mode, m.LOCK_STATUS = 'PENDING' AS waiting "
            "FROM performance_schema.metadata_locks m JOIN performance_schema.threads t "
            "ON t.THREAD_ID = m.OWNER_THREAD_ID WHERE m.OBJECT_SCHEMA = DATABASE() "
            "AND m.OBJECT_NAME = :t AND t.PROCESSLIST_ID NOT IN :others"
        )
    plugin = conn.execute(
        text(
            "SELECT count(*) FROM information_schema.PLUGINS "
            "WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE'"
        )
    ).scalar_one()
    if plugin:
        # Granted locks only: a waiting request shows in the process list instead.
        return (
            "SELECT REPLACE(LOCK_MODE, 'MDL_', '') AS mode, 0 AS waiting "
            "FROM information_schema.METADATA_LOCK_INFO WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = :t AND THREAD_ID NOT IN :others"
        )
    return None


def my_observer(
    view: str | None, mode: str
) -> Callable[[Connection, list[int]], set[tuple[str, bool]]]:
    """The step's metadata locks as the server's view shows them; and, on every server,
    its sessions that wait for a metadata lock in the process list (the one thing a
    server without a lock view shows), counted as waiting for `mode`."""

    def observe(conn: Connection, others: list[int]) -> set[tuple[str, bool]]:
        seen: set[tuple[str, bool]] = set()
        if view is not None:
            query = text(view).bindparams(bindparam("others", expanding=True))
            seen |= {(m, bool(w)) for m, w in conn.execute(query, {"t": TABLE, "others": others})}
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
                "AND STATE = 'Waiting for table metadata lock' AND ID <> :a AND ID <> :b"
            ),
            {"a": others[0], "b": others[1]},
        ).scalar_one()
        conn.rollback()
        if waiting and view is None:
            seen.add((mode, True))
        return seen

    return observe


@pytest.fixture(scope="session")
def metadata_lock_server() -> Iterator[str]:
    """A MariaDB whose performance_schema shows metadata locks: the shared server's
    admin URL when it does, else a private server started with it (once per worker)."""
    shared = engine(MYSQL_ADMIN)
    with shared.connect() as conn:
        shows = conn.execute(text("SELECT @@performance_schema")).scalar_one() and (
            conn.execute(
                text(
                    "SELECT ENABLED = 'YES' FROM performance_schema.setup_instruments "
                    "WHERE NAME = 'wait/lock/metadata/sql/mdl'"
                )
            ).scalar()
        )
    shared.dispose()
    if shows:
        yield MYSQL_ADMIN
        return
    with private_mariadb(
        "--performance-schema=ON",
        "--performance-schema-instrument=wait/lock/metadata/sql/mdl=ON",
    ) as (url, _stop, _start):
        yield url


@pytest.fixture
def lock_view_url(metadata_lock_server: str) -> Iterator[str]:
    """A scratch database on the server whose performance_schema shows metadata locks."""
    with scratch_mysql(metadata_lock_server) as url:
        yield url


@pytest.mark.parametrize("case", MY_CASES, ids=lambda c: c.name)
def test_mariadb_steps_take_the_locks_their_tools_declare(home, lock_view_url, case):
    """Every metadata lock the step takes, as performance_schema.metadata_locks shows it
    while the step runs, is one its tool declares; and the step waits behind the weakest
    lock that conflicts with the one it declares."""
    mysql_url = lock_view_url
    make_table(mysql_url, setup=case.setup)
    config = configure(home, mysql_url)
    modes = declared(case.tool, "mysql")
    assert case.waits_for in modes
    with engine(mysql_url).connect() as conn:
        view = lock_view(conn)
    assert view is not None and "performance_schema" in view
    # The weakest lock another session can hold that the declared one waits for: the
    # step is seen waiting behind it.
    blocker = next(h for h in MY_HOLD if h in MY_CONFLICTS[case.waits_for])
    watched = run_watched(
        config,
        mysql_url,
        case,
        my_hold(blocker),
        my_observer(view, case.waits_for),
        "CONNECTION_ID()",
    )
    assert (case.waits_for, True) in watched.seen, (case.tool, blocker, watched.seen)
    if view is not None:
        assert {m for m, _ in watched.seen} <= modes, watched.seen
    assert watched.result.steps[0].status in ("succeeded", "skipped"), watched.result.steps[0].error
    # The strongest lock another session can hold that none of the declared modes waits
    # for lets the step through without waiting: it asks for nothing stronger.
    for held in [h for h in MY_HOLD if not any(h in MY_CONFLICTS[m] for m in modes)][-1:]:
        through = run_watched(
            config, mysql_url, case, my_hold(held), my_observer(view, "?"), "CONNECTION_ID()"
        )
        assert not any(waiting for _, waiting in through.seen), (case.tool, held, through.seen)


# --- the engine's own table read lock (MariaDB) ------------------------------------------


@pytest.mark.parametrize("table_engine", ["MyISAM", "Aria", "InnoDB"])
def test_analyze_table_holds_off_writes_where_its_tool_says(home, mysql_url, table_engine):
    """MyISAM and Aria take their own table read lock for ANALYZE TABLE (no metadata
    lock shows it): the step waits behind a write in flight, as writes wait behind it, and
    update_table_statistics declares that lock. InnoDB's ANALYZE TABLE goes past the
    write. The writer, an INSERT sleeping in its SELECT, is stopped once the step is seen
    waiting (InnoDB: once the step ended)."""
    make_table(mysql_url, setup=(f"ALTER TABLE {TABLE} ENGINE={table_engine}",))
    config = configure(home, mysql_url)
    engine_lock = [
        lock
        for lock in registry().get("update_table_statistics").locks_on("mysql")
        if lock.mode == "SHARED_READ_ONLY"
    ]
    assert len(engine_lock) == 1 and "writers wait" in engine_lock[0].held, engine_lock
    assert "MyISAM" in engine_lock[0].held and "Aria" in engine_lock[0].held
    plan = one_step_plan("maintenance", "db", "mysql", "update_table_statistics", {"table": TABLE})
    outcome: dict[str, Any] = {}
    waits = table_engine != "InnoDB"
    db = engine(mysql_url)
    try:
        with db.connect() as writer, db.connect() as watcher:
            writer_id = writer.execute(text("SELECT CONNECTION_ID()")).scalar_one()
            writer.commit()

            def write() -> None:
                try:
                    writer.execute(
                        text(f"INSERT INTO {TABLE} SELECT 99999 + SLEEP(:s), NOW(), 'w'"),
                        {"s": HANG},
                    )
                except Exception as exc:  # stopped by the test's KILL QUERY
                    outcome["writer"] = exc

            def step() -> None:
                outcome["result"] = commands.apply_plan(config, plan, approver=PreApproved())

            writing = threading.Thread(target=write, daemon=True)
            writing.start()
            _seen_state(watcher, writer_id, "User sleep")
            stepping = threading.Thread(target=step, daemon=True)
            stepping.start()
            if waits:
                _seen_state(watcher, None, "Waiting for table level lock")
                assert stepping.is_alive()
            else:
                stepping.join(HANG)
                assert writing.is_alive(), "the writer ended before the step"
            watcher.execute(text(f"KILL QUERY {int(writer_id)}"))
            writing.join(HANG)
            stepping.join(HANG)
    finally:
        db.dispose()
    assert outcome["result"].steps[0].status == "succeeded", outcome["result"].steps[0].error


def _seen_state(conn: Connection, session: int | None, state: str) -> None:
    """Wait (a hang detector, no timing asserted) until a session of the database other
    than `conn`'s is in this state (`session`: that one)."""
    deadline = time.monotonic() + HANG
    query = (
        "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
        "AND STATE = :state AND ID <> CONNECTION_ID() AND (:id IS NULL OR ID = :id)"
    )
    while time.monotonic() < deadline:
        found = conn.execute(text(query), {"state": state, "id": session}).scalar_one()
        conn.rollback()
        if found:
            return
        time.sleep(0.05)
    raise AssertionError(f"no session seen in state {state!r} within {HANG} s")


# --- restores -----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_restore_takes_only_the_locks_restore_backup_declares(home, request, dialect):
    """A restore with replace of a backup of the table, watched as often as the lock view
    can be read: it drops, makes, loads, indexes and then counts the table again, and
    each lock of those is one restore_backup declares. A reader holds the table until
    the restore is seen asking for its strongest lock (the DROP's), so that lock is seen
    however quick the rest: a small table's whole restore takes a few milliseconds."""
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "lock_view_url")
    make_table(url)
    config = configure(home, url)
    taken = verified_full_backup(config)
    watcher_engine = engine(url)
    outcome: dict[str, Any] = {}

    def restore() -> None:
        outcome["result"] = commands.restore(
            config, taken["id"], "db", replace=True, approver=Recorder().approver
        )

    strongest = "ACCESS EXCLUSIVE" if dialect == "postgresql" else "EXCLUSIVE"
    seen: set[tuple[str, bool]] = set()
    try:
        with watcher_engine.connect() as watcher, watcher_engine.connect() as reader:
            if dialect == "postgresql":
                observe, session_id = pg_observe, "pg_backend_pid()"
            else:
                observe, session_id = my_observer(lock_view(watcher), "?"), "CONNECTION_ID()"
            # The observers leave out the reader's session and the watcher's.
            me = [
                int(c.execute(text(f"SELECT {session_id}")).scalar_one()) for c in (watcher, reader)
            ]
            watcher.rollback()
            (pg_hold("ACCESS SHARE") if dialect == "postgresql" else my_hold("SHARED_READ"))(reader)
            holding = True
            worker = threading.Thread(target=restore, daemon=True)
            worker.start()
            deadline = time.monotonic() + HANG
            while worker.is_alive() and time.monotonic() < deadline:
                seen |= observe(watcher, me)
                if holding and strongest in {mode for mode, _ in seen}:
                    release(reader)
                    holding = False
            worker.join(5)
    finally:
        watcher_engine.dispose()
    assert outcome["result"].status == "completed", outcome["result"].error
    taken_modes = {mode for mode, _ in seen}
    assert (strongest, True) in seen, seen
    assert taken_modes <= declared("restore_backup", dialect), seen


# --- previews -----------------------------------------------------------------------------


def five_tables(url: str | None, path: Path) -> str:
    """Five small tables in the scratch database (or a SQLite file); the target's URL."""
    names = [f"shop_{i}" for i in range(5)]
    if url is None:
        conn = sqlite3.connect(path)
        for name in names:
            conn.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT)")
            conn.execute(f"INSERT INTO {name} VALUES (1, 'a'), (2, 'b')")
        conn.commit()
        conn.close()
        return f"sqlite:///{path}"
    with engine(url).connect() as conn:
        for name in names:
            conn.execute(text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v VARCHAR(9))"))
            conn.execute(text(f"INSERT INTO {name} VALUES (1, 'a'), (2, 'b')"))
    return url


# What must be shown per table of a full maintenance, by engine.
TOUCHES = {
    "postgresql": ['VACUUM (ANALYZE) "{t}"', 'SELECT pg_catalog.count(*) FROM "{t}"'],
    "mysql": ["CHECK TABLE `{t}`"],
    "sqlite": ['PRAGMA integrity_check("{t}")', 'ANALYZE main."{t}"', 'SELECT count(*) FROM "{t}"'],
}


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def any_url(request, tmp_path):
    if request.param == "sqlite":
        yield five_tables(None, tmp_path / "shop.db")
        return
    from tests.services import scratch_mysql, scratch_postgresql

    scratch = scratch_postgresql if request.param == "postgresql" else scratch_mysql
    with scratch() as url:
        yield five_tables(url, tmp_path)


def test_a_full_plan_shows_each_table_statement_each_catalog_read_once_and_each_lock(home, any_url):
    configure(home, any_url)
    dialect = any_url.split(":")[0].split("+")[0]
    runner = CliRunner()
    done = runner.invoke(cli, ["plan", "maintenance", "--type", "full", "--json"])
    assert done.exit_code == 0, done.output
    plan = json.loads(done.output)
    out = runner.invoke(cli, ["plan", "maintenance", "--type", "full"], terminal_width=250)
    assert out.exit_code == 0, out.output
    shown = out.output
    assert "(read-only:" not in shown
    for table in (f"shop_{i}" for i in range(5)):
        for statement in TOUCHES[dialect]:
            assert statement.format(t=table) in shown, statement.format(t=table)
    # The small tables share one step of each tool; each catalog read printed once.
    fragmentation = [s for s in plan["steps"] if s["tool"] == "analyze_table_fragmentation"]
    assert len(fragmentation) == 1
    assert fragmentation[0]["params"]["tables"] == [f"shop_{i}" for i in range(5)]
    for statement in fragmentation[0]["sql"]:
        if not statement.startswith("--"):
            first_line = statement.strip().splitlines()[0].strip()
            assert shown.count(first_line) <= 1, first_line
    # Every step: its locks (or none) and the lock wait in effect, from the catalog.
    wait = "wait 5 s (busy_timeout_ms)" if dialect == "sqlite" else "wait 60 s (lock_timeout_ms)"
    locking = [s for s in plan["steps"] if s["locks"]["wait"]]
    assert shown.count(wait) == len(locking) > 0
    for step in plan["steps"]:
        tool = registry().get(step["tool"])
        modes = [lock.mode for lock in tool.locks_on(dialect)]
        taken = step["locks"]["taken"]
        assert [t.split(" on ")[0] for t in taken] == (modes or ["no lock"]), taken
        for mode in modes:
            assert mode in shown
    if dialect == "postgresql":
        # The shared VACUUM step's lock, on each table it lists.
        optimize = next(s for s in plan["steps"] if s["tool"] == "optimize_table")
        assert optimize["locks"]["taken"][0].startswith("SHARE UPDATE EXCLUSIVE on shop_0, ")


def test_the_prompt_and_the_dry_run_show_the_locks_and_the_wait(home, pg_url):
    make_table(pg_url)
    config = configure(home, pg_url)
    recorder = Recorder(answer="no")
    plan = one_step_plan("maintenance", "db", "postgresql", "vacuum_full_table", {"table": TABLE})
    commands.apply_plan(config, plan, approver=recorder.approver)
    request = recorder.asked[0]
    assert request.locks is not None
    assert request.locks.taken[0].startswith(f"ACCESS EXCLUSIVE on {TABLE}, until the rewrite ends")
    assert request.locks.wait == "lock wait 60 s (targets.db.lock_timeout_ms)"
    console = Console(width=200, record=True, color_system=None)
    with CliRunner().isolation(input="n\n"):
        approval_prompt(console, request)
    panel = console.export_text()
    assert "ACCESS EXCLUSIVE on locks_probe" in panel
    assert "lock wait 60 s (targets.db.lock_timeout_ms)" in panel
    dry = CliRunner().invoke(
        cli, ["run", "maintenance", "--type", "standard", "--dry-run"], terminal_width=250
    )
    assert dry.exit_code == 0, dry.output
    assert "lock: SHARE UPDATE EXCLUSIVE" in dry.output
    assert "wait 60 s (lock_timeout_ms)" in dry.output


def test_a_tool_without_locks_is_refused_in_one_line(tmp_path):
    from aishell.errors import CatalogError
    from aishell.registry import load_tool

    data = yaml.safe_load((bundled_catalog_dir() / "optimize_table.yaml").read_text())
    del data["locks"]
    path = tmp_path / "optimize_table.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogError) as raised:
        load_tool(path)
    assert str(raised.value) == f"{path}: missing required keys: locks"
    data = yaml.safe_load((bundled_catalog_dir() / "optimize_table.yaml").read_text())
    data["locks"]["postgresql"][0]["lock"] = "SHARE UPDATE"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(
        CatalogError, match=r"locks.postgresql\[0\].lock: 'SHARE UPDATE' is not one of"
    ):
        load_tool(path)
    data["locks"].pop("sqlite")
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogError, match="locks must name exactly the engines"):
        load_tool(path)
