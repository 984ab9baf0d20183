"""Every table-touching tool, on every engine and every kind of table it may meet there,
takes no lock stronger than its definition declares (`locks:` in tools/*.yaml): the
lock a DBA approves a step by is the one the server takes.

Each step runs for real on a table of the test while a second session holds a lock on
that table and a third watches what the step's sessions hold and wait for:
PostgreSQL's pg_locks (the table, its partitions, its TOAST table and every index of
them); MariaDB's metadata locks (information_schema.METADATA_LOCK_INFO) and the waits
behind the engine's own table locks, which MyISAM, Aria and MEMORY take and no metadata
lock shows; SQLite's file locks as a second connection's BEGIN IMMEDIATE and read see
them. A declared lock covers a lock seen when it conflicts with everything the seen
one conflicts with; a step seen waiting behind the held lock must declare a lock that
conflicts with it."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from aishell.tool.locks import MODES
from tests.helpers import one_step_plan
from tests.services import engine, scratch_mysql, scratch_postgresql
from tests.tool.test_declared_locks import configure, registry

# Each step runs whole, beside a held lock and a watcher: started first in its worker.
pytestmark = pytest.mark.slow

HANG = 60  # seconds: a hang detector, never a timing assertion
# How long the second session holds its lock when the step never waits behind it.
HOLD = 3.0
T = "locks_every"
PURGE = {"table": T, "date_column": "created_at", "retention_days": 30}
TOOLS: dict[str, dict[str, Any]] = {
    "count_table_rows": {"table": T},
    "delete_old_records": PURGE,
    "update_table_statistics": {"table": T},
    "check_table_corruption": {"tables": [T]},
    "analyze_table_fragmentation": {"table": T},
    "analyze_database_health": {"tables": [T], "check_corruption": True},
    "optimize_table": {"table": T, "fragmentation_threshold": 0},
    "rebuild_fragmented_indexes": {"table": T, "fragmentation_threshold": 0, "min_pages": 1},
    "repair_corrupted_tables": {"tables": [T], "create_backup": False},
    "vacuum_full_table": {"table": T},
    "backup_database_full": {"lock_wait_seconds": 60},
}


@dataclass
class Seen:
    # (object kind, mode) of each lock the step's sessions held or asked for.
    locks: set[tuple[str, str]] = field(default_factory=set)
    # Whether a step's session waited behind the lock the second session held.
    waited: bool = False


def run_step(
    config: Config,
    dialect: str,
    tool: str,
    hold: Callable[[], None],
    release: Callable[[], None],
    observe: Callable[[Seen], None],
) -> tuple[Any, Seen]:
    """Run the tool's step while `hold` is held: until the step is seen waiting, or HOLD
    seconds; `observe` adds what the step's sessions hold and wait for, read as often
    as the server answers."""
    plan = one_step_plan(
        "backup" if tool.startswith("backup") else "maintenance", "db", dialect, tool, TOOLS[tool]
    )
    outcome: dict[str, Any] = {}

    def step() -> None:
        try:
            outcome["result"] = commands.apply_plan(config, plan, approver=PreApproved())
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc

    hold()
    seen, held = Seen(), True
    worker = threading.Thread(target=step, daemon=True)
    worker.start()
    started = time.monotonic()
    try:
        while worker.is_alive() and time.monotonic() < started + HANG:
            before = seen.waited
            observe(seen)
            # A wait once released is behind the step's own locks, not the held one.
            seen.waited = seen.waited if held else before
            if held and (seen.waited or time.monotonic() > started + HOLD):
                release()
                held = False
    finally:
        if held:
            release()
    worker.join(5)
    assert not worker.is_alive(), f"{tool} still running after {HANG} s: it hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], seen


def uncovered(
    seen: Seen, declared: set[tuple[str, str]], conflicts: dict[str, set[str]], held: str
) -> list[str]:
    """What the step took or waited for that no lock it declares is as strong as."""

    def covers(kind: str, mode: str) -> bool:
        return any(
            conflicts[mode] <= conflicts[d]
            for on, d in declared
            if on == kind or (kind == "index" and on == "table")
        )

    missing = [f"{mode} on {kind}" for kind, mode in sorted(seen.locks) if not covers(kind, mode)]
    if seen.waited and not any(held in conflicts[d] for _, d in declared):
        missing.append(f"a lock that waits behind {held} (none declared conflicts with it)")
    return missing


def declared_locks(tool: str, dialect: str) -> set[tuple[str, str]]:
    """(object kind, mode) of each lock the tool declares on the step's tables."""
    kinds = {"every table": "table", "table": "table", "index": "index", "database file": "file"}
    return {
        (kinds[lock.object], lock.mode)
        for lock in registry().get(tool).locks_on(dialect)
        if lock.object in kinds
    }


def tools_on(dialect: str) -> list[str]:
    return [t for t in TOOLS if dialect in registry().get(t).implementations]


# --- PostgreSQL ---------------------------------------------------------------------------

_AE, _EX, _SRE, _SH, _SUE, _RE, _RS, _AS = (
    "ACCESS EXCLUSIVE",
    "EXCLUSIVE",
    "SHARE ROW EXCLUSIVE",
    "SHARE",
    "SHARE UPDATE EXCLUSIVE",
    "ROW EXCLUSIVE",
    "ROW SHARE",
    "ACCESS SHARE",
)
# Which modes each conflicts with (PostgreSQL's "Conflicting Lock Modes" table).
PG_CONFLICTS = {
    _AS: {_AE},
    _RS: {_EX, _AE},
    _RE: {_SH, _SRE, _EX, _AE},
    _SUE: {_SUE, _SH, _SRE, _EX, _AE},
    _SH: {_RE, _SUE, _SRE, _EX, _AE},
    _SRE: {_RE, _SUE, _SH, _SRE, _EX, _AE},
    _EX: {_RS, _RE, _SUE, _SH, _SRE, _EX, _AE},
    _AE: {_AS, _RS, _RE, _SUE, _SH, _SRE, _EX, _AE},
}
_PG_NAMES = {m.title().replace(" ", "") + "Lock": m for m in PG_CONFLICTS}

PG_TABLES = {
    "plain": [
        f"CREATE TABLE {T} (id INTEGER PRIMARY KEY, created_at TIMESTAMP NOT NULL, v VARCHAR(40))",
    ],
    "partitioned": [
        f"CREATE TABLE {T} (id INTEGER, created_at TIMESTAMP NOT NULL, v VARCHAR(40), "
        "PRIMARY KEY (id)) PARTITION BY RANGE (id)",
        f"CREATE TABLE {T}_low PARTITION OF {T} FOR VALUES FROM (MINVALUE) TO (1001)",
        f"CREATE TABLE {T}_high PARTITION OF {T} FOR VALUES FROM (1001) TO (MAXVALUE)",
    ],
    # Every tenth row's text kept out of line, uncompressed, in the TOAST table.
    "toast": [
        f"CREATE TABLE {T} (id INTEGER PRIMARY KEY, created_at TIMESTAMP NOT NULL, v TEXT)",
        f"ALTER TABLE {T} ALTER COLUMN v SET STORAGE EXTERNAL",
    ],
}


def pg_table(conn: Connection, kind: str, tool: str) -> None:
    conn.execute(text(f"DROP TABLE IF EXISTS {T} CASCADE"))
    for statement in PG_TABLES[kind]:
        conn.execute(text(statement))
    # Several indexes: each REINDEX CONCURRENTLY's swap holds its index for a moment,
    # and each moment is one more chance for the watcher to see it.
    for i, columns in enumerate(
        ("created_at", "created_at, id", "id, created_at", "created_at DESC", "(id % 7)")
    ):
        conn.execute(text(f"CREATE INDEX {T}_{i} ON {T} ({columns})"))
    value = "repeat('x', 4000)" if kind == "toast" else "'row ' || g"
    conn.execute(
        text(
            f"INSERT INTO {T} SELECT g, CAST(now() AS TIMESTAMP) - make_interval(days => "
            f"CASE WHEN g % 10 = 0 THEN 60 ELSE 1 END), CASE WHEN g % 10 = 0 THEN {value} "
            "ELSE 'row ' || g END FROM generate_series(1, 2000) g"
        )
    )
    if tool == "rebuild_fragmented_indexes":  # nine rows in ten gone: indexes worth it
        conn.execute(text(f"DELETE FROM {T} WHERE id % 10 <> 0"))
        conn.execute(text(f"VACUUM {T}"))
    conn.execute(text(f"ANALYZE {T}"))


# The locks of the step's sessions on the relations of the test's database: the
# table, its partitions, their TOAST tables and every index of them (no other table is
# there; the system catalogs are left out).
_PG_LOCKS = (
    "SELECT c.relkind IN ('i', 'I') AS is_index, l.mode, l.granted "
    "FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_class c ON c.oid = l.relation "
    "WHERE l.locktype = 'relation' AND l.pid <> ALL(:others) "
    "AND l.database = (SELECT oid FROM pg_catalog.pg_database "
    "WHERE datname = pg_catalog.current_database()) "
    "AND c.relnamespace <> CAST('pg_catalog' AS regnamespace)"
)
# A wait of the step's sessions for anything (a lock, or another transaction's end).
_PG_WAITING = (
    "SELECT count(*) FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a "
    "ON a.pid = l.pid WHERE NOT l.granted AND a.datname = pg_catalog.current_database() "
    "AND l.pid <> ALL(:others)"
)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with scratch_postgresql() as url:
        with engine(url).connect() as conn:
            for extension in ("amcheck", "pgstattuple"):
                conn.execute(text(f"CREATE EXTENSION IF NOT EXISTS {extension}"))
        yield url


@pytest.mark.parametrize("kind", list(PG_TABLES))
def test_postgresql_steps_take_no_lock_stronger_than_declared(home, pg_database, kind):
    """The second session reads the table in an open transaction: ACCESS SHARE on it,
    its partitions and every index of them (the planner's), which only ACCESS EXCLUSIVE
    waits for, so a step that asks for one there is seen waiting. It lets go at the
    step's first wait (REINDEX CONCURRENTLY waits for the table's open transactions);
    the brief ACCESS EXCLUSIVE of each swap after it is caught by the watcher's reads,
    the table's several indexes giving it several chances."""
    config = configure(home, pg_database)
    db = engine(pg_database)
    wrong: dict[str, list[str]] = {}
    # Every lock seen: none at all would be a watcher that sees nothing.
    every: set[tuple[str, str]] = set()
    with db.connect() as admin, db.connect() as blocker, db.connect() as watcher:
        others = [
            int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in (blocker, watcher)
        ]
        watcher.rollback()
        blocker.rollback()
        family = text(_PG_LOCKS)

        def hold() -> None:
            blocker.execute(text("BEGIN"))
            blocker.execute(text(f"SELECT * FROM {T} LIMIT 0"))

        def observe(seen: Seen) -> None:
            try:
                rows = watcher.execute(family, {"others": others}).all()
                waits = watcher.execute(text(_PG_WAITING), {"others": others}).scalar_one()
            finally:
                watcher.rollback()
            for is_index, mode, _granted in rows:
                seen.locks.add(("index" if is_index else "table", _PG_NAMES[mode]))
            seen.waited |= bool(waits)

        for tool in tools_on("postgresql"):
            pg_table(admin, kind, tool)
            result, seen = run_step(
                config, "postgresql", tool, hold, lambda: blocker.rollback(), observe
            )
            assert result.steps[0].status in ("succeeded", "skipped") or tool.startswith(
                "repair"
            ), (tool, result.steps[0].error)
            # A wait behind the reader is a wait for its transaction's end too (REINDEX
            # CONCURRENTLY waits for the table's readers so): the locks seen judge it.
            seen.waited = False
            every |= seen.locks
            missing = uncovered(seen, declared_locks(tool, "postgresql"), PG_CONFLICTS, "")
            if missing:
                wrong[tool] = missing
        admin.execute(text(f"DROP TABLE IF EXISTS {T} CASCADE"))
    db.dispose()
    assert every, "no lock of any step seen"
    assert not wrong, wrong


# --- MariaDB ------------------------------------------------------------------------------

# MariaDB's metadata lock modes, strongest last, as tool definitions name them.
_MDL = MODES["mysql"]
# Which metadata locks each conflicts with (MariaDB's mdl.cc compatibility matrix).
MY_CONFLICTS: dict[str, set[str]] = {
    "SHARED": {"EXCLUSIVE"},
    "SHARED_HIGH_PRIO": {"EXCLUSIVE"},
    "SHARED_READ": {"SHARED_NO_READ_WRITE", "EXCLUSIVE"},
    "SHARED_WRITE": {"SHARED_READ_ONLY", "SHARED_NO_WRITE", "SHARED_NO_READ_WRITE", "EXCLUSIVE"},
    "SHARED_UPGRADABLE": {
        "SHARED_UPGRADABLE",
        "SHARED_NO_WRITE",
        "SHARED_NO_READ_WRITE",
        "EXCLUSIVE",
    },
    "SHARED_READ_ONLY": {"SHARED_WRITE", "SHARED_NO_WRITE", "SHARED_NO_READ_WRITE", "EXCLUSIVE"},
    "SHARED_NO_WRITE": {
        "SHARED_WRITE",
        "SHARED_UPGRADABLE",
        "SHARED_NO_WRITE",
        "SHARED_NO_READ_WRITE",
        "EXCLUSIVE",
    },
    "SHARED_NO_READ_WRITE": set(_MDL) - {"SHARED", "SHARED_HIGH_PRIO"},
    "EXCLUSIVE": set(_MDL),
}
# The second session's statement, sleeping while it holds the table, and the metadata
# lock that stands for what it holds there: a read (on MyISAM, Aria and MEMORY the
# engine's table read lock as well, which only a write waits for), and an UPDATE (their
# table write lock, which reads wait for too: a read seen waiting behind it is one that
# holds off writers).
MY_PROBES = {
    "SHARED_READ": f"SELECT SLEEP(:s) FROM {T} WHERE id = 1",
    "SHARED_WRITE": f"UPDATE {T} SET v = v WHERE id = 1 AND SLEEP(:s) = 0",
}
MY_ENGINES = ("InnoDB", "MyISAM", "Aria", "MEMORY")
_MY_LOCKS = text(
    "SELECT REPLACE(LOCK_MODE, 'MDL_', '') FROM information_schema.METADATA_LOCK_INFO "
    "WHERE LOCK_TYPE = 'Table metadata lock' AND TABLE_SCHEMA = DATABASE() "
    "AND TABLE_NAME = :t AND THREAD_ID NOT IN :others"
).bindparams(bindparam("others", expanding=True))
_MY_WAITING = text(
    "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
    "AND STATE IN ('Waiting for table level lock', 'Waiting for table metadata lock') "
    "AND ID NOT IN :others AND INFO NOT LIKE '%information_schema%'"
).bindparams(bindparam("others", expanding=True))


@pytest.fixture(scope="module")
def my_database() -> Iterator[str]:
    with scratch_mysql() as url:
        with engine(url).connect() as conn:
            installed = conn.execute(
                text(
                    "SELECT count(*) FROM information_schema.PLUGINS "
                    "WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE'"
                )
            ).scalar_one()
            if not installed:
                conn.execute(text("INSTALL SONAME 'metadata_lock_info'"))
        yield url


def my_table(conn: Connection, table_engine: str) -> None:
    conn.execute(text(f"DROP TABLE IF EXISTS {T}"))
    conn.execute(
        text(
            f"CREATE TABLE {T} (id INTEGER PRIMARY KEY, created_at DATETIME NOT NULL, "
            f"v VARCHAR(40), INDEX {T}_created (created_at)) ENGINE={table_engine}"
        )
    )
    conn.execute(
        text(
            f"INSERT INTO {T} SELECT seq, NOW() - INTERVAL IF(seq % 10 = 0, 60, 1) DAY, "
            "CONCAT('row ', seq) FROM seq_1_to_2000"
        )
    )


@pytest.mark.parametrize("table_engine", MY_ENGINES)
def test_mariadb_steps_take_no_lock_stronger_than_declared(home, my_database, table_engine):
    """Per probe, the step runs while the second session sleeps in its statement on the
    table; the step's metadata locks seen, and a wait behind the probe, must be covered
    by what the tool declares."""
    config = configure(home, my_database)
    db = engine(my_database)
    wrong: dict[str, list[str]] = {}
    # Every lock seen: none at all would be a watcher that sees nothing.
    every: set[tuple[str, str]] = set()
    with db.connect() as admin, db.connect() as blocker, db.connect() as watcher:
        blocker_id = int(blocker.execute(text("SELECT CONNECTION_ID()")).scalar_one())
        others = [blocker_id, int(watcher.execute(text("SELECT CONNECTION_ID()")).scalar_one())]
        for tool in tools_on("mysql"):
            for held, probe in MY_PROBES.items():
                my_table(admin, table_engine)
                sleeping = threading.Thread(
                    target=lambda p=probe: _quietly(blocker, p), daemon=True
                )

                def hold(thread: threading.Thread = sleeping) -> None:
                    thread.start()
                    _until_sleeping(watcher, blocker_id)

                def release(thread: threading.Thread = sleeping) -> None:
                    watcher.execute(text(f"KILL QUERY {blocker_id}"))
                    thread.join(HANG)

                def observe(seen: Seen) -> None:
                    modes = watcher.execute(_MY_LOCKS, {"t": T, "others": others}).scalars()
                    seen.locks |= {("table", str(m)) for m in modes}
                    waits = watcher.execute(_MY_WAITING, {"others": others}).scalar_one()
                    seen.waited |= bool(waits)

                result, seen = run_step(config, "mysql", tool, hold, release, observe)
                assert result.steps[0].status in ("succeeded", "skipped") or _refused_purge(
                    tool, result.steps[0].error
                ), (tool, table_engine, result.steps[0].error)
                every |= seen.locks
                missing = uncovered(seen, declared_locks(tool, "mysql"), MY_CONFLICTS, held)
                if missing:
                    wrong[f"{tool} (behind {held})"] = missing
        admin.execute(text(f"DROP TABLE IF EXISTS {T}"))
    db.dispose()
    assert every, "no lock of any step seen"
    assert not wrong, wrong


def _refused_purge(tool: str, error: str | None) -> bool:
    """A purge of a table whose engine keeps no transactions is refused before any
    batch, its DELETE never sent (archiveshape.py)."""
    return tool == "delete_old_records" and "keeps no transactions" in (error or "")


def _quietly(conn: Connection, probe: str) -> None:
    """The probe, ended by the test's KILL QUERY (or its SLEEP's end)."""
    with suppress(DBAPIError):  # the KILL QUERY that ends it
        conn.execute(text(probe), {"s": HANG})
    conn.rollback()


def _until_sleeping(watcher: Connection, session: int) -> None:
    deadline = time.monotonic() + HANG
    query = text("SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = :id")
    while time.monotonic() < deadline:
        if watcher.execute(query, {"id": session}).scalar() == "User sleep":
            return
        time.sleep(0.01)
    raise AssertionError("the probe never slept")


# --- SQLite -------------------------------------------------------------------------------

# Which file locks each conflicts with: a writer's PENDING, on its way to EXCLUSIVE,
# waits for the readers' SHARED and keeps new ones out.
SQLITE_CONFLICTS = {
    "SHARED": {"EXCLUSIVE"},
    "RESERVED": {"RESERVED", "EXCLUSIVE"},
    "EXCLUSIVE": {"SHARED", "RESERVED", "EXCLUSIVE"},
}


def sqlite_file(path: Path, tool: str) -> None:
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {T} (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, v TEXT)")
    conn.execute(f"CREATE INDEX {T}_created ON {T} (created_at)")
    conn.executemany(
        f"INSERT INTO {T} VALUES (?, datetime('now', ?), ?)",
        [(i, "-60 days" if i % 10 == 0 else "-1 days", f"row {i}") for i in range(1, 2001)],
    )
    if tool == "rebuild_fragmented_indexes":
        conn.execute(f"DELETE FROM {T} WHERE id % 10 <> 0")
    conn.commit()
    conn.close()


def test_sqlite_steps_take_no_lock_stronger_than_declared(home, tmp_path):
    """A reader holds SHARED, so a step's commit waits (PENDING: new readers wait); a
    second connection sees RESERVED as its BEGIN IMMEDIATE refused, PENDING or
    EXCLUSIVE as its read refused."""
    path = tmp_path / "locks.db"
    sqlite_file(path, "")
    config = configure(home, f"sqlite:///{path}")
    wrong: dict[str, list[str]] = {}
    # Every lock seen: none at all would be a watcher that sees nothing.
    every: set[tuple[str, str]] = set()
    for tool in tools_on("sqlite"):
        sqlite_file(path, tool)
        reader = sqlite3.connect(path, timeout=0, isolation_level=None)
        prober = sqlite3.connect(path, timeout=0, isolation_level=None)

        def hold(conn: sqlite3.Connection = reader) -> None:
            conn.execute("BEGIN")
            conn.execute(f"SELECT count(*) FROM {T}").fetchone()

        def release(conn: sqlite3.Connection = reader) -> None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

        def observe(seen: Seen, conn: sqlite3.Connection = prober) -> None:
            mode = _sqlite_lock(conn)
            if mode is not None:
                seen.locks.add(("file", mode))
                seen.waited |= mode == "EXCLUSIVE"

        try:
            result, seen = run_step(config, "sqlite", tool, hold, release, observe)
        finally:
            reader.close()
            prober.close()
        assert result.steps[0].status in ("succeeded", "skipped"), (tool, result.steps[0].error)
        every |= seen.locks
        missing = uncovered(seen, declared_locks(tool, "sqlite"), SQLITE_CONFLICTS, "SHARED")
        if missing:
            wrong[tool] = missing
    assert every, "no lock of any step seen"
    assert not wrong, wrong


def _sqlite_lock(conn: sqlite3.Connection) -> str | None:
    """The strongest lock another connection holds on the file, as this one is let in."""
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        return "EXCLUSIVE"
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return "RESERVED"
    conn.execute("ROLLBACK")
    time.sleep(0.001)
    return None
