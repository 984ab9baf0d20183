"""Exactly once, whatever the server is doing: a purge killed at every point of a batch,
above all with its COMMIT still on its way to the server (held by a TCP proxy the test
owns, as a synchronous standby or a pooler holds one), then resumed; an archive file
that another run wants, or that someone appended to.

After each kill and resume: the ids the table lost are the ids the archive holds (a
file: each once; a table: each once), and the run's count of deleted rows is the number
of ids the table lost. Every wait is bounded by HANG seconds (a hang detector, never a
timing assertion).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from aishell import commands
from aishell.config.models import load_config
from tests.faultproxy import Proxy, server_port, through

# _no_process_left (autouse): every aishell process a test starts is killed when the
# test ends, pass or fail.
from tests.handlers.purge.test_purge_faults import (
    StateLook,
    _no_process_left,  # noqa: F401
    aishell,
    fill,
    rows_of,
)
from tests.services import engine, scratch_server

# Seconds any one wait of these tests may take before it counts as a hang.
HANG = 90
RETENTION = 30
# Ten keys a batch: about 60 batches over the 600 rows fill() makes.
BATCH = ["--batch-size", "10", "--max-batch-size", "10", "--max-batch-ms", "60000"]
# What a batch sends before its COMMIT: the DELETE (on PostgreSQL with a table archive,
# inside the WITH ... INSERT that archives). psycopg sends a statement's text only until
# it prepares it (its fifth run): holds are armed before the run starts, for its second
# batch (its first already archived).
DELETE = b"DELETE FROM"
SECOND_BATCH = (DELETE, DELETE)


# --- the target, the run and what it left ---------------------------------------------------


@dataclass
class Site:
    home: Path
    url: str
    dialect: str
    archive: str
    before: dict[int, Any]
    proxy: Proxy
    db: Engine  # every look of the test's (an engine each poll costs both sides CPU)

    @property
    def database(self) -> str:
        return str(make_url(self.url).database)

    @property
    def archive_file(self) -> Path:
        return self.home / "archive" / "events.jsonl"

    def args(self) -> list[str]:
        where = f"file:{self.archive_file}" if self.archive == "file" else "table:events_archive"
        return [
            "run", "log-cleanup", "--non-interactive", "--table", "events",
            "--date-column", "created_at", "--retention-days", str(RETENTION), *BATCH,
            "--archive-to", where,
        ]  # fmt: skip

    def archived(self) -> list[int]:
        if self.archive == "file":
            path = self.archive_file
            lines = path.read_text().splitlines() if path.exists() else []
            return [json.loads(line)["id"] for line in lines]
        with self.db.connect() as conn:
            return list(conn.execute(text("SELECT id FROM events_archive")).scalars())


def point_at(home: Path, url: str) -> None:
    """The default target `db` at url; lock waits of 30 s, the bound of a resume's wait
    for the killed run's session."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url, "environment": "test", "lock_timeout_ms": 30_000}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))


@contextmanager
def site(home: Path, dialect: str, archive: str) -> Iterator[Site]:
    """A scratch database with fill()'s events (and an events_archive without a key, so
    a row archived twice shows twice), the target pointed at it through a proxy."""

    with scratch_server(dialect) as url:
        before = fill(url)
        proxy = Proxy(server_port(url))
        db = engine(url)
        try:
            point_at(home, through(proxy.port, url))
            yield Site(home, url, dialect, archive, before, proxy, db)
        finally:
            db.dispose()
            proxy.close()  # its held sessions end before the database is dropped


def output_of(home: Path) -> str:
    logs = sorted(home.glob("aishell-*.log"))
    return logs[-1].read_text() if logs else ""


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(HANG) == -signal.SIGKILL


def wait_until(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HANG
    while not ready():
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {HANG}s"
        time.sleep(0.02)


def started_run(home: Path, proc: subprocess.Popen[bytes], batches: int = 0) -> str:
    """The run's id once it has checkpointed `batches` batches."""
    look = StateLook(home)
    wait_until(lambda: bool(look.run_id()), "a run", proc)
    run_id = look.run_id() or ""
    wait_until(
        lambda: (look.progress(run_id)[0] or {}).get("batches", 0) >= batches, "batches", proc
    )
    return run_id


def held(
    s: Site, marker: bytes, after: tuple[bytes, ...], what: str
) -> tuple[subprocess.Popen[bytes], str]:
    """The run started with the proxy set to hold `marker` after `after`; once held,
    (the run's process, its id)."""
    s.proxy.hold(marker, after=after)
    proc = aishell(s.home, *s.args())
    wait_until(lambda: s.proxy.held_once.is_set(), what, proc)
    return proc, started_run(s.home, proc)


def assert_exactly_once(site: Site, run_id: str) -> None:
    """The run completed; the ids the table lost are the old ones, each archived once,
    and the run counted exactly as many."""
    run = commands.show_run(load_config(home=site.home), run_id)
    assert run["status"] == "completed", (run["status"], output_of(site.home)[-3000:])
    purge = run["steps"][1]["output"]
    gone = set(site.before) - set(rows_of(site.url))
    cutoff = run["steps"][0]["output"]["cutoff"]
    old = {i for i, at in site.before.items() if at < datetime.fromisoformat(cutoff)}
    assert gone == old, "not exactly the old rows went"
    archived = site.archived()
    assert sorted(archived) == sorted(gone), (
        f"{len(archived)} archived, {len(set(archived))} distinct, {len(gone)} deleted"
    )
    assert purge["rows_deleted"] == len(gone), f"counted {purge['rows_deleted']}, {len(gone)} went"


def run_in_process(home: Path, *args: str) -> tuple[int, str]:
    """An aishell command through its CLI in this process: (exit code, its output, and
    the traceback of an exception it did not handle)."""
    from click.testing import CliRunner

    from aishell.cli import cli

    done = CliRunner().invoke(cli, list(args), env={"AISHELL_HOME": str(home)})
    died = done.exception is not None and not isinstance(done.exception, SystemExit)
    crash = "".join(traceback.format_exception(done.exception)) if died else ""
    return done.exit_code, done.output + crash


class Resumed(threading.Thread):
    """`aishell resume` through its CLI in a thread of this process (what is tested is
    what the kill left: a process would add only its imports' CPU); wait(): exit code."""

    def __init__(self, home: Path, run_id: str) -> None:
        super().__init__(daemon=True)
        self.home, self.run_id, self.code, self.output = home, run_id, -1, ""
        self.start()

    def run(self) -> None:
        args = ("resume", self.run_id, "--non-interactive")
        self.code, self.output = run_in_process(self.home, *args)

    def wait(self, timeout: float = HANG) -> int:
        self.join(timeout)
        assert not self.is_alive(), f"the resume did not end within {timeout}s"
        return self.code


def resume(site: Site, run_id: str) -> Resumed:
    """`aishell resume` straight at the server (not through the proxy)."""
    point_at(site.home, site.url)
    return Resumed(site.home, run_id)


def resumed_in_full(site: Site, run_id: str) -> None:
    """A resume straight at the server, to its end: exit code 0."""
    resumed = resume(site, run_id)
    assert resumed.wait() == 0, resumed.output[-3000:]


# --- the server's view of the killed run's session ------------------------------------------


def sessions_in_transaction(site: Site) -> set[int]:
    """The sessions on the scratch database that are inside a transaction (the test's
    own connections are never: they autocommit)."""
    with site.db.connect() as conn:
        if site.dialect == "postgresql":
            found = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = :d "
                    "AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
                ),
                {"d": site.database},
            )
        else:
            found = conn.execute(
                text(
                    "SELECT p.ID FROM information_schema.PROCESSLIST p "
                    "JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID "
                    "WHERE p.DB = :d"
                ),
                {"d": site.database},
            )
        return {int(i) for i in found.scalars()}


def in_transaction_soon(site: Site, bound: float = 10.0) -> set[int]:
    """sessions_in_transaction, asked again for up to `bound` seconds: MariaDB's
    INNODB_TRX is a copy refreshed at most every 0.1 s, which a loaded machine (a load
    of ten on two cores) may show from before the transaction began."""
    deadline = time.monotonic() + bound
    found = sessions_in_transaction(site)
    while not found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = sessions_in_transaction(site)
    return found


def sessions_shown(site: Site) -> list[Any]:
    """What the server shows of the scratch database's sessions and of every open
    transaction: said when none was seen holding a batch's."""
    with site.db.connect() as conn:
        if site.dialect == "postgresql":
            query = "SELECT pid, state, xact_start, query FROM pg_stat_activity WHERE datname = :d"
        else:
            query = (
                "SELECT p.ID, p.COMMAND, p.STATE, p.INFO, t.trx_id, t.trx_state "
                "FROM information_schema.PROCESSLIST p LEFT JOIN information_schema.INNODB_TRX t "
                "ON t.trx_mysql_thread_id = p.ID WHERE p.DB = :d"
            )
        return [tuple(r) for r in conn.execute(text(query), {"d": site.database})]


def still_there(site: Site, ids: set[int]) -> bool:
    return bool(ids) and ids <= set(rows_of(site.url))


def in_doubt(site: Site, run_id: str) -> set[int]:
    """The old rows of the batch the checkpoint holds as pending."""
    progress = StateLook(site.home).progress(run_id)[0] or {}
    pending = progress.get("pending") or {}
    assert pending.get("rows"), f"no batch in doubt: {progress}"
    cutoff = datetime.fromisoformat(progress["cutoff"])
    if progress.get("walk") == "pages":
        # PostgreSQL 14+ walks pages: the old rows on the batch's pages, read while its
        # COMMIT is held (they are still there).
        with site.db.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT id FROM events WHERE ctid >= CAST(:low AS tid) "
                    "AND ctid < CAST(:high AS tid)"
                ),
                # A batch of part of a page (its rows past max_batch_size) ends on it.
                {
                    "low": f"({progress['page']},0)",
                    "high": f"({max(pending['page'], progress['page'] + 1)},0)",
                },
            )
            on_pages = set(found.scalars())
        return {i for i in on_pages if site.before[i] < cutoff}
    return {
        i
        for i, at in site.before.items()
        if progress["last_key"] < i <= pending["upper"] and at < cutoff
    }


# --- a run killed at each point of a batch ---------------------------------------------------


@dataclass(frozen=True)
class Point:
    """Where in a batch the run is killed: the proxy holds the message holding `marker`
    sent after ones holding each of `after` (on one link), and lets it go on once the
    resume is under way, or never."""

    marker: bytes
    after: tuple[bytes, ...]
    lands: bool


POINTS = {
    # The DELETE held: the server has nothing of the batch; let go, it runs in the
    # killed run's transaction, which never commits.
    "before_the_delete": Point(DELETE, (DELETE,), lands=True),
    # The DELETE (and archive) done, the checkpoint written, its COMMIT held: let go
    # while the resume runs, it lands on the killed run's session.
    "commit_lands_during_resume": Point(b"COMMIT", SECOND_BATCH, lands=True),
    "commit_never_lands": Point(b"COMMIT", SECOND_BATCH, lands=False),
    # The COMMIT done, the next message (the next batch's first) held: the batch is
    # committed, and its checkpoint still holds it pending.
    "after_the_commit": Point(b"", (*SECOND_BATCH, b"COMMIT"), lands=True),
}


# Every point with an archive file (whose bytes a resume may cut), on both servers; the
# held COMMIT landing during the resume with an archive table too (the count it got
# wrong there). Each case is a real run killed and resumed: the suite's time is theirs.
KILLS = [
    *[(dialect, "file", point) for dialect in ("postgresql", "mysql") for point in POINTS],
    *[(dialect, "table", "commit_lands_during_resume") for dialect in ("postgresql", "mysql")],
]


@pytest.mark.parametrize(("dialect", "archive", "point"), KILLS)
def test_a_run_killed_at_each_point_of_a_batch_deletes_archives_and_counts_each_row_once(
    home, dialect, archive, point
):
    """The proxy holds one message of a batch (above all its COMMIT), the run is
    SIGKILLed, and `aishell resume` starts at the server while the message is still
    held; it is let go once the resume is under way (or never). Each old row is deleted,
    archived and counted once. Bound: HANG seconds for each wait."""
    at = POINTS[point]
    with site(home, dialect, archive) as s:
        proc, run_id = held(s, at.marker, at.after, f"a message held ({point})")
        holders = sessions_in_transaction(s)
        if at.marker == b"COMMIT":
            holders = holders or in_transaction_soon(s)
            doubt = in_doubt(s, run_id)
            assert still_there(s, doubt), "the held batch's rows are gone before its COMMIT"
            assert holders, f"no session holds the batch's transaction: {sessions_shown(s)}"
        sigkill(proc)
        assert sessions_in_transaction(s) >= holders  # the server's side lives on
        resumed = resume(s, run_id)
        if at.lands:
            _once_under_way(s, resumed, holders)
            s.proxy.release()
        assert resumed.wait() == 0, resumed.output[-3000:]
        s.proxy.release()  # never: now, to a session that is gone
        assert_exactly_once(s, run_id)


def _once_under_way(s: Site, resumed: Resumed, holders: set[int]) -> None:
    """Until the resume has ended a session of the killed run's, or waits on its locks,
    or has ended (an older aishell waited on the locks; this one ends the session)."""
    deadline = time.monotonic() + HANG
    while resumed.is_alive() and time.monotonic() < deadline:
        if not holders <= sessions_in_transaction(s) or _waiting_for_a_lock(s):
            return
        time.sleep(0.05)


def _waiting_for_a_lock(site: Site) -> bool:
    with site.db.connect() as conn:
        if site.dialect == "postgresql":
            sql = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :d "
                "AND wait_event_type = 'Lock'"
            )
        else:
            sql = (
                "SELECT count(*) FROM information_schema.INNODB_TRX t JOIN "
                "information_schema.PROCESSLIST p ON t.trx_mysql_thread_id = p.ID "
                "WHERE p.DB = :d AND t.trx_state = 'LOCK WAIT'"
            )
        return bool(conn.execute(text(sql), {"d": site.database}).scalar())


# --- one archive file, one run ----------------------------------------------------------------


def killed_with_a_batch_in_doubt(s: Site) -> str:
    """A run, SIGKILLed with its second batch's COMMIT held (not let go here)."""
    proc, run_id = held(s, b"COMMIT", SECOND_BATCH, "a batch's COMMIT held")
    sigkill(proc)
    return run_id


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_second_run_on_the_archive_file_of_an_unfinished_run_is_refused(home, dialect):
    """Run A is killed with a batch in doubt; run B names A's archive file, there and
    then moved away by someone: B is refused both times with a line naming A and how to
    finish it, and writes nothing (no run, no byte: so both are tried on one killed A);
    A's resume then archives each row once. Bound: HANG s a wait."""
    with site(home, dialect, "file") as s:
        first = killed_with_a_batch_in_doubt(s)
        s.proxy.release()
        point_at(home, s.url)
        kept = s.archive_file.read_bytes()
        moved = s.archive_file.with_suffix(".moved")
        for file_left in (True, False):
            if not file_left:
                s.archive_file.rename(moved)
            code, out = run_in_process(home, *s.args())
            assert code == 2, out  # refused before anything runs
            assert f"archive file {s.archive_file} belongs to run {first} (" in out, out
            finish_it = (
                f"which has not finished: finish it first (`aishell resume {first}`), or "
                "archive to another file"
            )
            assert finish_it in " ".join(out.split()), out
            runs = commands.list_runs(load_config(home=home))
            assert [r["run_id"] for r in runs] == [first], "the refused run was recorded"
            if file_left:
                assert s.archive_file.read_bytes() == kept
            else:
                assert not s.archive_file.exists()
                moved.rename(s.archive_file)
        resumed_in_full(s, first)
        assert_exactly_once(s, first)


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
@pytest.mark.parametrize("in_doubt_bytes", [True, False])
def test_bytes_someone_appended_to_the_archive_file_are_never_cut(home, dialect, in_doubt_bytes):
    """Run A is killed with a batch in doubt (its COMMIT held, never let go), or after a
    batch committed; someone appends to its archive file. The resume refuses with one
    line naming the file, and every byte stays; with the bytes moved out, it completes,
    each row archived once. Bound: HANG s a wait."""
    with site(home, dialect, "file") as s:
        if in_doubt_bytes:
            run_id = killed_with_a_batch_in_doubt(s)
        else:
            proc, run_id = held(s, b"", (*SECOND_BATCH, b"COMMIT"), "the next batch held")
            sigkill(proc)
        theirs = b'{"id": -1, "note": "appended by someone else"}\n'
        ours = s.archive_file.read_bytes()
        with s.archive_file.open("ab") as f:
            f.write(theirs)
        point_at(home, s.url)
        code, out = run_in_process(home, "resume", run_id, "--non-interactive")
        assert code == 1, out
        said = " ".join(out.split())
        assert f"archive file {s.archive_file} holds " in said, out
        assert "aishell does not cut off what it did not write" in said, out
        assert f"then `aishell resume {run_id}`" in said, out
        assert s.archive_file.read_bytes() == ours + theirs, "bytes were cut"
        os.truncate(s.archive_file, len(ours))  # the person moves them out
        resumed_in_full(s, run_id)
        assert_exactly_once(s, run_id)


def test_an_archive_file_another_process_writes_is_refused(home):
    """A process holds the archive file's lock (as a run writing it does): the resume
    is refused with one line, and the file is untouched. Bound: HANG s a wait."""
    with site(home, "postgresql", "file") as s:
        # Key ranges: batches of the size BATCH sets, so that rows are left to archive
        # after two (a page walk's batches may take them all).
        agents = home / "config" / "agents" / "log_cleanup.yaml"
        data = yaml.safe_load(agents.read_text())
        data["log_cleanup_agent"]["purge"]["walk"] = "keys"
        agents.write_text(yaml.safe_dump(data))
        proc = aishell(home, *s.args())
        run_id = started_run(home, proc, batches=2)
        sigkill(proc)
        point_at(home, s.url)
        kept = s.archive_file.read_bytes()
        with s.archive_file.open("rb") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)
            code, out = run_in_process(home, "resume", run_id, "--non-interactive")
        assert code == 1, out
        assert f"archive file {s.archive_file} is being written by another process" in out
        assert s.archive_file.read_bytes() == kept
        resumed_in_full(s, run_id)
        assert_exactly_once(s, run_id)


# --- a session the resume may not end -------------------------------------------------------


@contextmanager
def a_role_of_its_own(s: Site) -> Iterator[str]:
    """A login role that may purge events (not a superuser: it may neither read nor end
    a superuser's session); yields the target URL that logs in as it."""
    role = f"aishell_{uuid.uuid4().hex[:10]}"
    admin = engine(s.url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT SELECT, INSERT, DELETE ON events, events_archive TO "{role}"'))
    try:
        yield str(make_url(s.url).set(username=role).render_as_string(False))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'REVOKE ALL ON events, events_archive FROM "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_a_session_the_resume_may_not_end_is_waited_for_then_named(home):
    """The killed run's session is a superuser's, its COMMIT held; the resume runs as a
    role that may neither read nor end it. It waits the lock wait (2 s; the COMMIT lands
    meanwhile, unseen by it), then stops with one line naming the session and how to end
    it, the archive untouched; ended as said, the next resume counts the batch that
    committed once. Bound: HANG s a wait."""
    with site(home, "postgresql", "file") as s, a_role_of_its_own(s) as url:
        run_id = killed_with_a_batch_in_doubt(s)
        [old] = sessions_in_transaction(s)
        kept = s.archive_file.read_bytes()
        point_at(home, url)
        data = yaml.safe_load((home / "config" / "aishell.yaml").read_text())
        data["targets"]["db"]["lock_timeout_ms"] = 2000
        (home / "config" / "aishell.yaml").write_text(yaml.safe_dump(data))
        landing = threading.Timer(0.5, s.proxy.release)
        landing.start()
        code, out = run_in_process(home, "resume", run_id, "--non-interactive")
        landing.join(HANG)
        said = " ".join(out.split())
        assert code == 1, out
        assert (
            f"the session that sent this purge's last batch (PostgreSQL backend {old}) is "
            "still in its transaction after 2 s" in said
        ), out
        assert (
            f"end that session first (SELECT pg_catalog.pg_terminate_backend({old}), as a user"
            in said
        ), out
        assert s.archive_file.read_bytes() == kept
        with s.db.connect() as conn:  # the DBA does as the line says
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": old})
        code, out = run_in_process(home, "resume", run_id, "--non-interactive")
        assert code == 0, out
        assert_exactly_once(s, run_id)
