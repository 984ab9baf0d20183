"""Unattended nights: aishell killed with SIGKILL at random moments of every bundled
agent, on SQLite, PostgreSQL and MariaDB, then `aishell resume`d; a MariaDB server
killed under a running maintenance; a connection cut in the middle of a step; a scratch
database the server finishes creating after its run was killed.

After each kill and resume: the run completes; no step that had succeeded (or been
skipped) before the kill ran again; a purge deleted exactly the rows older than its
cutoff and archived each of them once; a backup validates and nothing of the killed
attempt is left (partial and verify files, scratch databases, dump processes);
maintenance leaves no invalid index and ends with its report.

Kill moments are seeded random fractions of an uninterrupted run of the same job,
measured first in the same test. AISHELL_KILL_SEED changes the seed; every failure
names the seed and the moment, so that it can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, select, text
from sqlalchemy.engine import make_url

from tests.executor.prewarmed import Child, start_aishell
from tests.helpers import use_target
from tests.services import engine

# Minutes of real processes in all; part of the default suite all the same.
pytestmark = pytest.mark.slow

SEED = int(os.environ.get("AISHELL_KILL_SEED", "16"))
KILLS = 2
# How long a process that lost its parent may take to be gone: the kernel's
# parent-death signal is immediate, a process without one would outlive this.
ORPHAN_GRACE = 5.0
# A scratch database another test's run made while ours ran is dropped by that run
# within seconds; one a killed run leaked stays. Waited for only when one is found.
FOREIGN_SCRATCH_GRACE = 30.0
DUMP_TOOLS = {"pg_dump", "pg_restore", "psql", "mariadb-dump", "mysqldump", "mariadb", "mysql"}
FINAL = ("succeeded", "skipped")

# Purge data on the servers: rows spread over DAYS days in an order unrelated to their
# key, a third of them older than the retention (under the purge's 50% share limit).
ROWS = 3_000
DAYS = 45
RETENTION = 30
# The demo's logs span 180 days: 100 days keeps a little over half of them.
DEMO_RETENTION = 100
# Batches of a fixed, small size with a short pause between them: a purge of a few
# thousand rows then takes long enough to be killed between, and inside, its batches.
# (A short --max-batch-ms would shrink batches to one row on a loaded machine.)
PURGE_FLAGS = [
    "--batch-size", "50", "--max-batch-size", "50", "--max-batch-ms", "60000",
    "--sleep-ms", "20",
]  # fmt: skip


# --- the target ------------------------------------------------------------------------


@dataclass
class Site:
    """Where a test's runs go: the home, the target and its database."""

    dialect: str
    home: Path
    url: str
    target: str
    database: str | None  # the server database's name; None on SQLite
    template: Path | None = None  # the pristine demo database (SQLite)

    @property
    def state(self) -> Path:
        return self.home / "state.db"


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def site(request: pytest.FixtureRequest, home: Path, demo_template: Path) -> Iterator[Site]:
    if request.param == "sqlite":
        shutil.copyfile(demo_template, home / "demo.db")
        yield Site("sqlite", home, f"sqlite:///{home / 'demo.db'}", "demo", None, demo_template)
        return
    from tests.services import scratch_mysql, scratch_postgresql

    scratch = scratch_postgresql if request.param == "postgresql" else scratch_mysql
    with scratch() as url:
        use_target(home, url)
        yield Site(request.param, home, url, "db", make_url(url).database)


# --- aishell as a DBA runs it --------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AISHELL_CONFIG"}
    env["AISHELL_HOME"] = str(home)
    return env


def aishell(home: Path, *args: str) -> tuple[int, str, str]:
    """An aishell command through its CLI, in this process (exit code, stdout, stderr):
    a later command after a crash is a new invocation all the same, and this one does
    not pay a process's start-up. The runs that are killed are real processes."""
    from click.testing import CliRunner

    from aishell.cli import cli

    env = {"AISHELL_HOME": str(home), "AISHELL_CONFIG": None}
    done = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return done.exit_code, done.stdout, done.stderr


def start(home: Path, args: list[str], tag: str) -> tuple[Child, Path]:
    """A run in the background, in a process of its own (forked from a server that has
    imported aishell: tests/executor/prewarmed.py); its output goes to files."""
    out = home / "_out"
    out.mkdir(exist_ok=True)
    proc = start_aishell(args, _env(home), out / f"{tag}.out", out / f"{tag}.err")
    return proc, out / f"{tag}"


def _state(site: Site, sql: str, *args: object) -> list[tuple]:
    if not site.state.exists():
        return []
    conn = sqlite3.connect(site.state, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def run_ids(site: Site) -> set[str]:
    try:
        return {r[0] for r in _state(site, "SELECT run_id FROM runs")}
    except sqlite3.OperationalError:
        return set()  # the first run is creating the state store right now


def wait_for_new_run(site: Site, known: set[str], proc: Child) -> str | None:
    """The run the process started, once its row is in the state store."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = run_ids(site) - known
        if new:
            return new.pop()
        if proc.poll() is not None:
            new = run_ids(site) - known
            return new.pop() if new else None
        time.sleep(0.005)
    raise AssertionError("the run never appeared in the state store")


def run_seconds(site: Site, run_id: str) -> float:
    [(created, finished)] = _state(
        site, "SELECT created_at, finished_at FROM runs WHERE run_id = ?", run_id
    )
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(created)).total_seconds()


def show(site: Site, run_id: str) -> dict[str, Any]:
    code, out, err = aishell(site.home, "runs", "show", run_id, "--json")
    assert code == 0, err
    return json.loads(out)


def resume_until_done(site: Site, run_id: str, why: str) -> dict[str, Any]:
    """`aishell resume` until the run completes (a resumed run may itself stop resumably)."""
    outputs = []
    for _ in range(3):
        code, out, err = aishell(site.home, "resume", run_id, "--yes", "--json")
        # With --json an error is an object on stdout too ({"error": ...}): a run the
        # kill left completed has nothing to resume.
        data = json.loads(out) if out.strip() else {}
        outputs.append(f"exit {code}: {data.get('error') or err.strip()[-600:]}")
        if data.get("status") == "completed":
            break
    final = show(site, run_id)
    assert final["status"] == "completed", f"{why}: resume did not complete: {outputs}"
    return final


def assert_nothing_recorded_left(site: Site, killed: Killed) -> None:
    """The run's scratch ledger is empty, and `aishell doctor` (where this aishell has
    it) finds nothing of the run: its resume removed what the killed attempt left."""
    cleaned = _state(
        site, "SELECT data FROM events WHERE run_id = ? AND kind = 'scratch_cleaned'", killed.run_id
    )
    assert recorded_scratch(site, killed.run_id) == [], f"{killed.why}; cleaned: {cleaned}"
    if "doctor" in _commands():
        code, out, err = aishell(site.home, "doctor", "--target", site.target, "--json")
        report = json.loads(out)
        # It exits 1 only for what it lists as a problem (a scratch database lacks amcheck).
        assert code == (1 if report.get("problems") else 0), f"{killed.why}: doctor: {err}"
        ours = [e for e in report.get("leftovers", []) if e["run_id"] == killed.run_id]
        assert ours == [], f"{killed.why}: doctor finds the killed run's scratch: {ours}"


def _commands() -> set[str]:
    from aishell.cli import cli

    return set(getattr(cli, "commands", {}))


# --- what a killed run had done, and what it left ------------------------------------------


@dataclass
class Killed:
    """A run as its fault (its SIGKILL, its server's death) left it."""

    run_id: str
    pid: int
    why: str  # the seed and the moment, for messages
    finished: bool  # the run ended before the kill landed
    steps: dict[int, tuple] = field(default_factory=dict)  # final steps: idx -> their record
    last_statement: int = 0
    last_event: int = 0
    children: list[tuple[int, str, str]] = field(default_factory=list)  # pid, start, cmdline
    # Verify databases that appeared on the server while it ran: its own, and any another
    # process made meanwhile (the server is shared); those its ledger names are its own.
    scratch_databases: set[str] = field(default_factory=set)
    recorded_databases: set[str] = field(default_factory=set)


# Makes fresh data for one run of the job (named by a tag); returns the job's arguments
# and what the checks need to know of that data.
Prepare = Callable[[str], tuple[list[str], Any]]

STEP_RECORD = "SELECT idx, status, attempts, started_at, finished_at, output FROM steps"


def _snapshot(site: Site, killed: Killed) -> None:
    rows = _state(site, f"{STEP_RECORD} WHERE run_id = ?", killed.run_id)
    killed.steps = {r[0]: r for r in rows if r[1] in FINAL}
    killed.last_statement = _state(site, "SELECT coalesce(max(id), 0) FROM statements")[0][0]
    killed.last_event = _state(site, "SELECT coalesce(max(id), 0) FROM events")[0][0]


def assert_no_final_step_ran_again(site: Site, killed: Killed) -> None:
    rows = _state(site, f"{STEP_RECORD} WHERE run_id = ?", killed.run_id)
    after = {r[0]: r for r in rows}
    for idx, before in killed.steps.items():
        assert after[idx] == before, f"{killed.why}: step {idx} changed after it was {before[1]}"
    again = _state(
        site,
        "SELECT step_idx, sql FROM statements WHERE run_id = ? AND id > ?",
        killed.run_id,
        killed.last_statement,
    )
    assert not [s for s in again if s[0] in killed.steps], (
        f"{killed.why}: steps that had ended before the kill sent statements again: "
        f"{[s for s in again if s[0] in killed.steps][:3]}"
    )
    started = _state(
        site,
        "SELECT step_idx FROM events WHERE run_id = ? AND id > ? AND kind = 'step_started'",
        killed.run_id,
        killed.last_event,
    )
    assert not {s[0] for s in started} & set(killed.steps), (
        f"{killed.why}: steps that had ended before the kill started again"
    )


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, start time, state) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[1]), fields[19].decode(), fields[0].decode()


def _cmdline(pid: int) -> str:
    try:
        # Another process's arguments need not be UTF-8 (a test passing undecodable bytes).
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def children_of(pid: int) -> list[tuple[int, str, str]]:
    found = []
    for child in _pids():
        stat = _stat(child)
        if stat and stat[0] == pid:
            found.append((child, stat[1], _cmdline(child)))
    return found


def alive(pid: int, started: str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] == started and stat[2] not in ("Z", "X")


def dump_processes(names: set[str]) -> list[str]:
    """Dump and restore tools at work on any of these databases."""
    found = []
    for pid in _pids():
        line = _cmdline(pid)
        words = line.split()
        if words and Path(words[0]).name in DUMP_TOOLS and any(n in line for n in names):
            stat = _stat(pid)
            if stat and stat[2] not in ("Z", "X"):
                found.append(f"{pid}: {line}")
    return found


def scratch_databases(site: Site) -> set[str]:
    """The verify databases on the target's server (made by anyone: the server is shared)."""
    if site.dialect == "sqlite":
        return set()
    admin = engine(site.url)
    try:
        with admin.connect() as conn:
            if site.dialect == "postgresql":
                sql = "SELECT datname FROM pg_database WHERE datname LIKE 'aishell_verify%'"
            else:
                sql = (
                    "SELECT schema_name FROM information_schema.schemata "
                    "WHERE schema_name LIKE 'aishell\\_verify%'"
                )
            return set(conn.execute(text(sql)).scalars())
    finally:
        admin.dispose()


def recorded_scratch(site: Site, run_id: str) -> list[tuple]:
    """What the state store still holds as made, and not yet removed, by this run."""
    tables = {r[0] for r in _state(site, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "scratch" not in tables:
        return []
    return _state(site, "SELECT kind, name FROM scratch WHERE run_id = ?", run_id)


def kill_at(site: Site, args: list[str], fraction: float, seconds: float, why: str) -> Killed:
    """Start the job, SIGKILL it `fraction` of `seconds` after its run began."""
    known = run_ids(site)
    before = scratch_databases(site)
    proc, output = start(site.home, args, uuid.uuid4().hex[:8])
    run_id = wait_for_new_run(site, known, proc)
    if not run_id:
        code = proc.wait()
        # With --json a refusal is on stdout, anything else on stderr: both are said.
        said = " ".join(
            output.with_suffix(kind).read_text(errors="replace").strip()
            for kind in (".out", ".err")
        )
        raise AssertionError(f"{why}: the job made no run (exit {code}): {said}")
    time.sleep(fraction * seconds)
    killed = Killed(run_id, proc.pid, why, finished=proc.poll() is not None)
    if not killed.finished:
        killed.children = children_of(proc.pid)
        killed.scratch_databases = scratch_databases(site) - before
        try:
            proc.kill()
        except ProcessLookupError:
            killed.finished = True  # it ended since the look above
    proc.wait(120)
    # A CREATE DATABASE the server was running when its client died still completes.
    killed.scratch_databases |= scratch_databases(site) - before
    killed.recorded_databases = {n for k, n in recorded_scratch(site, run_id) if k == "database"}
    killed.scratch_databases |= killed.recorded_databases
    _snapshot(site, killed)
    at = _state(
        site,
        "SELECT idx, tool, status FROM steps WHERE run_id = ? AND status <> 'pending' "
        "ORDER BY idx DESC LIMIT 1",
        run_id,
    )
    left = recorded_scratch(site, run_id)
    killed.why += f"; the kill found {at[0] if at else 'no step begun'}, scratch {left}"
    print(killed.why, "(finished first)" if killed.finished else "")
    if not killed.finished:
        deadline = time.monotonic() + ORPHAN_GRACE
        while time.monotonic() < deadline and any(alive(p, s) for p, s, _ in killed.children):
            time.sleep(0.05)
        orphans = [c for p, s, c in killed.children if alive(p, s)]
        assert not orphans, f"{killed.why}: processes of the killed run outlived it: {orphans}"
    return killed


def kills(
    site: Site,
    request: pytest.FixtureRequest,
    seconds: float,
    prepare: Prepare,
    count: int = KILLS,
) -> Iterator[tuple[Killed, Any]]:
    """`count` runs of the job, each on freshly prepared data and killed at a random moment;
    a run that finished before its kill landed is tried again, killed sooner. At least
    one must have been killed mid-run."""
    seed = SEED ^ zlib.crc32(request.node.nodeid.encode())
    rng = random.Random(seed)
    landed = 0
    for n in range(count):
        fraction = rng.uniform(0.05, 0.95)
        for attempt in range(4):
            args, context = prepare(f"{n}_{attempt}")
            why = (
                f"AISHELL_KILL_SEED={SEED} (seed {seed}), kill {n}: {fraction:.3f} of "
                f"{seconds:.2f}s into `aishell {' '.join(args)}`"
            )
            killed = kill_at(site, args, fraction, seconds, why)
            yield killed, context
            if not killed.finished:
                landed += 1
                break
            fraction /= 3
    assert landed, f"no kill landed before its run finished (seed {seed})"


def measure(site: Site, prepare: Prepare) -> tuple[float, dict[str, Any], Any]:
    """An uninterrupted run of the job: how long its run lasts, its result, its context."""
    args, context = prepare("probe")
    code, out, err = aishell(site.home, *args)
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "completed", result.get("error")
    return max(run_seconds(site, result["run_id"]), 0.05), result, context


def leftover_files(home: Path) -> list[str]:
    return sorted(
        str(p.relative_to(home))
        for pattern in ("*.partial", "*.verify-*")
        for p in home.rglob(pattern)
    )


# --- maintenance --------------------------------------------------------------------------

MAINTENANCE = ["run", "maintenance", "--type", "full", "--yes", "--json"]
MAINTAINED = 4


def fresh_demo(site: Site) -> None:
    """The template's demo in place of the last one, whole: a copy renamed over it, with
    no journal a killed run left beside the old file to be rolled into the new one."""
    demo = site.home / "demo.db"
    for suffix in ("-journal", "-wal", "-shm"):
        demo.with_name(demo.name + suffix).unlink(missing_ok=True)
    fresh = demo.with_name("demo.db.fresh")
    shutil.copyfile(site.template, fresh)  # type: ignore[arg-type]
    os.replace(fresh, demo)


def fragmented_tables(site: Site, tables: int = MAINTAINED, rows: int = 20_000) -> None:
    """Tables whose indexes and pages are fragmented (rows in random key order, then two
    thirds deleted), so a full maintenance rebuilds and compacts them; made anew."""
    eng = engine(site.url)
    pg = site.dialect == "postgresql"
    with eng.connect() as conn:
        if pg:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pgstattuple"))
        else:
            conn.execute(text("SET SESSION max_recursive_iterations = 10000000"))
        for i in range(tables):
            name = f"m{i}"
            conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
            conn.execute(
                text(
                    f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, k INTEGER NOT NULL, "
                    "note VARCHAR(200) NOT NULL)"
                )
            )
            conn.execute(text(f"CREATE INDEX {name}_k ON {name} (k)"))
            if pg:
                conn.execute(
                    text(
                        f"INSERT INTO {name} SELECT g, (g * 7919) % {rows}, repeat('x', 120) "
                        f"FROM generate_series(1, {rows}) g"
                    )
                )
            else:
                conn.execute(
                    text(
                        f"INSERT INTO {name} WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL "
                        f"SELECT n + 1 FROM g WHERE n < {rows}) "
                        f"SELECT n, (n * 7919) % {rows}, REPEAT('x', 120) FROM g"
                    )
                )
            conn.execute(text(f"DELETE FROM {name} WHERE id % 3 <> 0"))
    eng.dispose()


def invalid_indexes(site: Site) -> list[str]:
    if site.dialect != "postgresql":
        return []
    eng = engine(site.url)
    try:
        with eng.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid")
                ).scalars()
            )
    finally:
        eng.dispose()


def test_maintenance_killed_anywhere_resumes_to_its_report(site, request):
    def prepare(_tag: str) -> tuple[list[str], None]:
        if site.dialect == "sqlite":
            fresh_demo(site)
        else:
            fragmented_tables(site)
        return MAINTENANCE, None

    seconds, clean, _ = measure(site, prepare)
    assert clean["steps"][-1]["tool"] == "generate_maintenance_report"
    for killed, _ in kills(site, request, seconds, prepare):
        final = resume_until_done(site, killed.run_id, killed.why)
        assert_no_final_step_ran_again(site, killed)
        report = final["steps"][-1]
        assert report["tool"] == "generate_maintenance_report"
        assert report["status"] == "succeeded" and report["output"], killed.why
        assert report["output"].get("summary"), killed.why
        assert invalid_indexes(site) == [], f"{killed.why}: invalid indexes left"
        assert_nothing_recorded_left(site, killed)


# --- backup -------------------------------------------------------------------------------

BACKUP = ["run", "backup", "--type", "full", "--yes", "--json"]


def test_backup_killed_anywhere_validates_and_leaves_nothing(site, request):
    if site.dialect != "sqlite":
        fragmented_tables(site, tables=3, rows=15_000)

    def prepare(_tag: str) -> tuple[list[str], None]:
        return BACKUP, None

    seconds, clean, _ = measure(site, prepare)
    assert [s["tool"] for s in clean["steps"]][-1] == "validate_backup"
    for killed, _ in kills(site, request, seconds, prepare):
        final = resume_until_done(site, killed.run_id, killed.why)
        assert_no_final_step_ran_again(site, killed)
        validate = final["steps"][-1]
        assert validate["status"] == "succeeded" and validate["output"]["ok"], killed.why
        path = Path(final["steps"][1]["output"]["backup_path"])
        catalog = _state(
            site, "SELECT verified_at FROM backups WHERE path = ? AND deleted_at IS NULL", str(path)
        )
        assert catalog and catalog[0][0], f"{killed.why}: {path} is not a verified backup"
        assert path.is_file() and path.with_name(path.name + ".manifest.json").is_file()

        assert leftover_files(site.home) == [], killed.why
        folder = site.home / "backups" / site.target
        unfinished = [
            p.name
            for p in folder.iterdir()
            if not p.name.endswith(".manifest.json")
            and not p.with_name(p.name + ".manifest.json").exists()
        ]
        assert unfinished == [], f"{killed.why}: backup files without a manifest"
        assert_nothing_recorded_left(site, killed)
        if site.database:
            # Only its own: another process's dump of a verify database that appeared
            # meanwhile is no process of this run's.
            names = {site.database, *killed.recorded_databases}
            assert dump_processes(names) == [], killed.why
            left = _still_there(site, killed.scratch_databases)
            assert not left, f"{killed.why}: scratch databases left on the server: {left}"


def _still_there(site: Site, names: set[str]) -> set[str]:
    """The scratch databases of `names` still on the server, after waiting out those a
    concurrent run of another test made (it drops its own within seconds)."""
    deadline = time.monotonic() + FOREIGN_SCRATCH_GRACE
    left = names & scratch_databases(site)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = names & scratch_databases(site)
    return left


# --- log cleanup --------------------------------------------------------------------------


def _logs(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("created_at", DateTime, nullable=False),
        Column("payload", String(64), nullable=False),
    )


SERVER_NOW = {"postgresql": "SELECT localtimestamp", "mysql": "SELECT NOW(6)"}


def server_logs(site: Site, name: str) -> None:
    eng = engine(site.url)
    metadata = MetaData()
    logs = _logs(metadata, name)
    with eng.begin() as conn:
        metadata.create_all(conn)
        now = conn.execute(text(SERVER_NOW[site.dialect])).scalar_one()
        values = [
            {
                "id": i,
                "created_at": now - timedelta(days=(i * 7919) % DAYS, seconds=i % 86_000 + 30),
                "payload": f"event {i}",
            }
            for i in range(1, ROWS + 1)
        ]
        conn.execute(insert(logs), values)
    eng.dispose()


def rows_of(site: Site, table: str) -> dict[int, Any]:
    eng = engine(site.url)
    try:
        with eng.connect() as conn:
            if site.dialect == "sqlite":
                rows = conn.execute(text(f'SELECT id, created_at FROM "{table}"'))
            else:
                rows = conn.execute(select(_logs(MetaData(), table).c["id", "created_at"]))
            return {r[0]: r[1] for r in rows}
    finally:
        eng.dispose()


def _older(value: Any, cutoff: str) -> bool:
    if isinstance(value, str):
        return value < cutoff  # the demo's text dates compare as the purge compares them
    return value < datetime.fromisoformat(cutoff)


@dataclass
class Purge:
    """One purge job on its own fresh table, and that table's rows before it ran."""

    table: str
    before: dict[int, Any]
    archive_file: Path | None = None
    archive_table: str | None = None


def purge_job(site: Site, tag: str, archive: str | None) -> tuple[list[str], Purge]:
    """A fresh table to purge (a fresh demo's app_logs on SQLite), and the job."""
    if site.dialect == "sqlite":
        fresh_demo(site)
        table, retention = "app_logs", DEMO_RETENTION
    else:
        table, retention = f"logs_{tag}", RETENTION
        server_logs(site, table)
    args = ["run", "log-cleanup", "--table", table, "--retention-days", str(retention)]
    args += [*PURGE_FLAGS, "--yes", "--json"]
    job = Purge(table, rows_of(site, table))
    if archive == "file":
        job.archive_file = site.home / "archive" / f"{table}-{tag}.jsonl"
        args += ["--archive-to", f"file:{job.archive_file}"]
    elif archive == "table":
        job.archive_table = f"{table}_archive"
        like = {
            "sqlite": f'CREATE TABLE "{job.archive_table}" AS SELECT * FROM "{table}" WHERE 0',
            "postgresql": f"CREATE TABLE {job.archive_table} (LIKE {table})",
            "mysql": f"CREATE TABLE {job.archive_table} LIKE {table}",
        }[site.dialect]
        eng = engine(site.url)
        with eng.begin() as conn:
            conn.execute(text(like))
        eng.dispose()
        args += ["--archive-to", f"table:{job.archive_table}"]
    return args, job


def assert_purged_exactly_once(site: Site, job: Purge, final: dict[str, Any], why: str) -> None:
    count, purge = final["steps"][0], final["steps"][1]
    cutoff = count["output"]["cutoff"]
    gone = {i for i, at in job.before.items() if _older(at, cutoff)}
    kept = set(job.before) - gone
    assert 0 < len(gone) < len(job.before), why
    assert set(rows_of(site, job.table)) == kept, f"{why}: not exactly the old rows went"
    assert purge["output"]["rows_deleted"] == len(gone), f"{why}: deleted rows miscounted"
    if job.archive_file:
        ids = [json.loads(line)["id"] for line in job.archive_file.read_text().splitlines()]
        assert sorted(ids) == sorted(gone), f"{why}: the archive file does not hold each once"
    if job.archive_table:
        eng = engine(site.url)
        with eng.connect() as conn:
            ids = list(conn.execute(text(f"SELECT id FROM {job.archive_table}")).scalars())
        eng.dispose()
        assert sorted(ids) == sorted(gone), f"{why}: the archive table does not hold each once"


@pytest.mark.parametrize("archive", [None, "file", "table"])
def test_log_cleanup_killed_anywhere_purges_each_row_once(site, request, archive):
    def prepare(tag: str) -> tuple[list[str], Purge]:
        return purge_job(site, tag, archive)

    seconds, clean, probe = measure(site, prepare)
    assert_purged_exactly_once(site, probe, clean, "uninterrupted run")
    assert clean["steps"][1]["output"]["batches"] > 10  # it really goes in batches
    # One kill per archive kind: three per engine in all.
    for killed, job in kills(site, request, seconds, prepare, count=1):
        final = resume_until_done(site, killed.run_id, killed.why)
        assert_no_final_step_ran_again(site, killed)
        assert_purged_exactly_once(site, job, final, killed.why)
        assert_nothing_recorded_left(site, killed)


# --- the server dies under a run ----------------------------------------------------------


def wait_for_step(site: Site, run_id: str, at_least: int, proc: Child) -> int:
    """The index of the step the run has got to once it is past its first `at_least`
    steps (a step on small tables says it ran only when it ends)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        reached = _state(
            site,
            "SELECT max(idx) FROM steps WHERE run_id = ? "
            "AND status IN ('running', 'succeeded', 'skipped')",
            run_id,
        )
        if reached and reached[0][0] is not None and reached[0][0] >= at_least:
            return int(reached[0][0])
        time.sleep(0.01)
    raise AssertionError(f"run {run_id} never got to step {at_least} (exit {proc.poll()})")


def wait_for_lock_wait(url: str, proc: Child) -> str:
    """The statement of another session that waits for a table lock on the server (not
    the health check's CHECK TABLE, which gives up on a locked table soon)."""
    deadline = time.monotonic() + 120
    with engine(url).connect() as conn:
        while time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute(
                text(
                    "SELECT INFO FROM information_schema.PROCESSLIST "
                    "WHERE STATE LIKE 'Waiting for table%' AND ID <> CONNECTION_ID() "
                    "AND INFO NOT LIKE 'CHECK TABLE%'"
                )
            ).first()
            if row is not None:
                return str(row[0])
            time.sleep(0.01)
    raise AssertionError(f"the run never waited for the held lock (exit {proc.poll()})")


def test_mariadb_killed_under_maintenance_fails_honestly_then_resumes(home, edit_config):
    from tests.private_servers import private_mariadb

    with private_mariadb() as (url, kill_server, start_server):
        site = Site("mysql", home, url, "db", make_url(url).database)
        use_target(home, url)
        # Quick retries: the run's limits, not the test, decide when it gives up. Every
        # table past the thresholds: each is rebuilt and compacted, whatever its size.
        defaults = {"retry_backoff_seconds": 0.1, "fragmentation_threshold": 0}
        edit_config(maintenance={"default_config": {**defaults, "min_index_pages": 1}})
        fragmented_tables(site, tables=6, rows=3_000)
        # The run's work on the last table waits for this lock: the server is killed
        # while that step waits, after the work on the tables before it, wherever the
        # store's record of the run has got to. The metadata lock of an open transaction
        # that read the table keeps off its rebuild, not the health check's CHECK TABLE
        # (which would wait out the lock three times, seconds apart, before the work).
        holder = engine(url).connect()
        holder.execute(text("BEGIN"))
        holder.execute(text("SELECT id FROM m5 LIMIT 1")).all()
        proc, out = start(home, MAINTENANCE, "server-killed")
        run_id = wait_for_new_run(site, set(), proc)
        assert run_id
        waiting = wait_for_lock_wait(url, proc)
        at = wait_for_step(site, run_id, 0, proc)
        print(f"the run waits at: {waiting}")
        kill_server()
        with suppress(Exception):
            holder.close()
        try:
            code = proc.wait(300)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the run hung after its server was killed") from None
        printed = out.with_suffix(".out").read_text()
        told = out.with_suffix(".err").read_text()
        print(f"server killed at step {at}: exit {code}", told[-3000:], sep="\n")
        assert printed.strip(), f"exit {code} and no result; it said: {told[-600:]}"
        result = json.loads(printed)
        error = (result["error"] or {}).get("message", "")
        why = f"server killed at step {at}: exit {code}, {result['status']}: {error}"
        assert code in (1, 4), why
        assert result["status"] in ("failed", "interrupted"), why
        assert result["error"]["exit_code"] == code, why
        assert "internal error" not in error and "Traceback" not in told, why
        # It names the target and says the server was lost or refused the connection.
        assert "'db'" in error, why
        assert any(w in error.lower() for w in ("lost connection", "can't connect", "gone")), why
        killed = Killed(run_id, proc.pid, why, finished=False)
        _snapshot(site, killed)

        start_server()
        final = resume_until_done(site, run_id, why)
        assert_no_final_step_ran_again(site, killed)
        report = final["steps"][-1]
        assert report["tool"] == "generate_maintenance_report"
        assert report["status"] == "succeeded" and report["output"].get("summary"), why


def test_a_scratch_database_the_server_creates_after_its_run_died_is_not_left(home):
    """The server goes on with a CREATE DATABASE whose client was killed: here it waits on
    a lock another session holds on template0 (scratch databases are copied from it), as
    a busy or slow server makes it wait.
    The next run cleans the dead run's scratch before the server has finished creating
    it; the database that appears afterwards must not be forgotten."""
    from tests.private_servers import private_postgresql

    with private_postgresql() as (url, _stop, _start):
        site = Site("postgresql", home, url, "db", make_url(url).database)
        use_target(home, url)
        path = home / "config" / "aishell.yaml"
        data = yaml.safe_load(path.read_text())
        # The lock wait outlasts the test's steps instead of ending in a lock timeout.
        data["targets"]["db"]["lock_timeout_ms"] = 300_000
        path.write_text(yaml.safe_dump(data))
        fragmented_tables(site, tables=1, rows=1_000)
        admin = engine(url)
        holder = admin.connect()
        holder.execute(text("BEGIN"))
        # Any CREATE DATABASE copying template0 waits for this transaction to end.
        holder.execute(text("COMMENT ON DATABASE template0 IS 'held by a test'"))
        resume: Child | None = None
        try:
            proc, _ = start(home, BACKUP, "held")
            name = _waiting_create_database(admin, proc)
            proc.kill()
            proc.wait(60)
            [run_id] = run_ids(site)
            resume, _ = start(home, ["resume", run_id, "--yes", "--json"], "resume")
            # The lock is released once the resume has dealt with the dead run's scratch
            # (its entry is gone, or the resume's own CREATE DATABASE waits), or has
            # waited for the server's CREATE a while.
            deadline = time.monotonic() + 20
            while (
                name in {n for _, n in _all_scratch(site)}
                and not _waiting_creates(admin) - {name}
                and resume.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
        finally:
            holder.execute(text("ROLLBACK"))
            holder.close()
            if resume is not None:
                resume.wait(120)
        with admin.connect() as conn:
            deadline = time.monotonic() + 60
            while (
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE DATABASE%'"
                    )
                ).scalar()
                and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            left = set(
                conn.execute(
                    text("SELECT datname FROM pg_database WHERE datname LIKE 'aishell_verify%'")
                ).scalars()
            )
        admin.dispose()
        recorded = {n for _, n in _all_scratch(site)}
        assert left <= recorded, (
            f"scratch databases on the server that no ledger remembers: {left - recorded} "
            f"(the killed run was creating {name})"
        )


def _waiting_creates(admin: Any) -> set[str]:
    """The scratch databases whose CREATE DATABASE the server holds waiting on a lock."""
    with admin.connect() as conn:
        queries = conn.execute(
            text(
                "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'CREATE DATABASE \"aishell\\_verify\\_%'"
            )
        ).scalars()
        return {str(q).split('"')[1] for q in queries}


def _waiting_create_database(admin: Any, proc: Child) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        waiting = _waiting_creates(admin)
        if waiting:
            return waiting.pop()
        time.sleep(0.01)
    raise AssertionError(f"no CREATE DATABASE of a scratch database waited (exit {proc.poll()})")


def _all_scratch(site: Site) -> list[tuple]:
    tables = {r[0] for r in _state(site, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    return _state(site, "SELECT kind, name FROM scratch") if "scratch" in tables else []


# --- a connection lost in the middle of a step's own look at the catalog --------------------


@contextmanager
def cutting_proxy(url: str, marker: bytes) -> Iterator[str]:
    """The server behind a TCP proxy that drops the first connection sending `marker`
    (both ways, at once: what a server crash or a network cut looks like to the client);
    yields the URL through the proxy."""
    upstream = make_url(url)
    listener = socket.create_server(("127.0.0.1", 0))
    cut = threading.Event()

    def pump(source: socket.socket, sink: socket.socket, watch: bool) -> None:
        with suppress(OSError):
            while chunk := source.recv(65536):
                if watch and not cut.is_set() and marker in chunk:
                    cut.set()
                    break
                sink.sendall(chunk)
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def serve() -> None:
        with suppress(OSError):
            while True:
                client, _ = listener.accept()
                server = socket.create_connection((upstream.host, upstream.port or 3306))
                threading.Thread(target=pump, args=(client, server, True), daemon=True).start()
                threading.Thread(target=pump, args=(server, client, False), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        port = listener.getsockname()[1]
        yield upstream.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        assert cut.is_set(), f"no statement sent {marker!r}: the fault never happened"
    finally:
        listener.close()


def test_a_connection_lost_while_looking_for_leftover_tables_is_said_as_such(home, mysql_url):
    site = Site("mysql", home, mysql_url, "db", make_url(mysql_url).database)
    fragmented_tables(site, tables=1, rows=3_000)
    # The look for tables an interrupted ALTER left (InnoDB's #sql-...) loses the server.
    with cutting_proxy(mysql_url, b"/#sql%") as url:
        use_target(home, url)
        code, out, err = aishell(home, *MAINTENANCE, "--tables", "m0")
    assert "internal error" not in err, err
    assert out.strip(), f"exit {code} and no result: {err}"
    result = json.loads(out)
    assert result["status"] in ("completed", "failed", "interrupted"), result
    if result["status"] != "completed":
        error = result["error"]["message"]
        assert "target 'db'" in error, error
        assert "connection" in error.lower(), error
