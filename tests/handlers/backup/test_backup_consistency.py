"""Backups whose manifest describes exactly the rows they hold: validation holds, ten
runs in ten, while the application writes (pgbench on PostgreSQL, a writer thread on
MariaDB and SQLite); and the deeper checks catch a file whose sha256 was made to fit:
a valid dump of other content, with its manifest's and the catalog's sha256 rewritten."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, inspect, text

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.handlers.backup.manifest import sha256_of
from aishell.policy.approvers import Prompting
from tests.handlers.backup.recorded import record_as_on_disk
from tests.helpers import one_step_plan, use_target
from tests.services import engine, scratch_mysql, scratch_postgresql

# Started first in a worker's share (tests/conftest.py): it runs for a long while.
pytestmark = pytest.mark.slow

PGBENCH = Path("/usr/lib/postgresql/15/bin/pgbench")
RUNS = 10


def make_tables(url: str) -> None:
    """Three small tables the application writes to."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.executescript(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(40));"
            "CREATE TABLE b (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
            "CREATE TABLE c (id INTEGER PRIMARY KEY, v VARCHAR(40));"
        )
        conn.executemany("INSERT INTO b VALUES (?, 0)", [(i,) for i in range(50)])
        conn.commit()
        conn.close()
        return
    serial = "SERIAL" if url.startswith("postgresql") else "INTEGER AUTO_INCREMENT"
    with engine(url).connect() as conn:
        conn.execute(text(f"CREATE TABLE a (id {serial} PRIMARY KEY, v VARCHAR(40))"))
        conn.execute(text("CREATE TABLE b (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
        conn.execute(text(f"CREATE TABLE c (id {serial} PRIMARY KEY, v VARCHAR(40))"))
        # One executemany for the 50 rows, not 50 round trips.
        conn.execute(text("INSERT INTO b VALUES (:i, 0)"), [{"i": i} for i in range(50)])


def write_once(conn: Any, i: int) -> None:
    """One of the application's transactions: an insert, an update, a delete."""
    conn.execute(text("INSERT INTO a (v) VALUES (:v)"), {"v": f"row {i}"})
    conn.execute(text("UPDATE b SET n = n + 1 WHERE id = :id"), {"id": i % 50})
    conn.execute(text("INSERT INTO c (v) VALUES (:v)"), {"v": f"row {i}"})
    conn.execute(text("DELETE FROM c WHERE id = (SELECT min(id) FROM (SELECT id FROM c) k)"))


@contextlib.contextmanager
def writer_thread(url: str) -> Iterator[None]:
    """Writes until the block ends."""
    done = [0]
    stop = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        if url.startswith("sqlite"):
            eng = create_engine(url, connect_args={"timeout": 30})
        else:
            eng = engine(url).execution_options(isolation_level="READ COMMITTED")
        try:
            with eng.connect() as conn:
                while not stop.is_set():
                    with conn.begin():
                        write_once(conn, done[0])
                    done[0] += 1
                    stop.wait(0.01)  # about pgbench's pace; the tests share the machine
        except BaseException as exc:  # reported by the test, after the block
            failures.append(exc)
        finally:
            eng.dispose()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert not failures, failures


@contextlib.contextmanager
def pgbench(url: str) -> Iterator[None]:
    """pgbench running the application's transaction, at 100 a second (the machine
    running the tests has other work)."""
    if not PGBENCH.exists():
        pytest.skip(f"pgbench is not at {PGBENCH}")
    workdir = Path(tempfile.mkdtemp())
    script = workdir / "app.sql"
    script.write_text(
        "\\set i random(0, 49)\n"
        "BEGIN;\n"
        "INSERT INTO a (v) VALUES ('row ' || :i);\n"
        "UPDATE b SET n = n + 1 WHERE id = :i;\n"
        "INSERT INTO c (v) VALUES ('row ' || :i);\n"
        "DELETE FROM c WHERE id = (SELECT min(id) FROM c);\n"
        "END;\n"
    )
    server = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres", url.rsplit("/", 1)[1]]
    proc = subprocess.Popen(
        [str(PGBENCH), "-n", "-c", "1", "-R", "100", "-T", "600", "-f", str(script), *server],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its commits are seen by every snapshot taken after them all the same; they
        # only do not wait for the WAL to reach the disk (100 flushes a second less on
        # the disk the other tests share).
        env={**os.environ, "PGOPTIONS": "-c synchronous_commit=off"},
    )
    try:
        yield
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def target(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[str, Config]]:
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'app.db'}"
        sqlite3.connect(home / "app.db").execute("PRAGMA journal_mode = WAL").fetchone()
        make_tables(url)
        yield url, use_target(home, url)
        return
    scratch = scratch_postgresql if request.param == "postgresql" else scratch_mysql
    with scratch() as url:
        make_tables(url)
        yield url, use_target(home, url)


def test_validation_holds_while_the_application_writes(target):
    url, config = target
    load = pgbench if url.startswith("postgresql") else writer_thread
    totals = []
    with load(url):
        for run in range(RUNS):
            # Fulls and incrementals; each increment chains from the last verified one.
            kind = "incremental" if run % 3 == 2 else "full"
            result = commands.run_job(config, "backup", {"type": kind})
            assert result.status == "completed", (run, kind, result.error)
            validation = result.steps[2].output
            assert validation["ok"] and validation["tables_compared"] == 3, validation
            assert validation["checksums_compared"] == 3, validation
            manifest = json.loads(
                Path(result.steps[1].output["backup_path"] + ".manifest.json").read_text()
            )
            totals.append(manifest["tables"]["a"])
    # The application did write while the backups ran: every backup saw other rows.
    assert len(set(totals)) == RUNS, totals


BOTH = "SELECT (SELECT count(*) FROM a), (SELECT sum(n) FROM b)"
CLIENT = {
    "postgresql": ["pg_restore", "--no-owner", "-h", "127.0.0.1", "-U", "postgres", "-d"],
    "mysql": ["mariadb", "-h", "127.0.0.1", "-P", "3306", "--protocol=TCP", "-u", "root"],
}


@contextlib.contextmanager
def restore_space(url: str) -> Iterator[str]:
    """One scratch database on url's server for all of a test's restores (one made and
    dropped per restore cost a PostgreSQL checkpoint each); empty before each restore,
    as restored_rows drops what it restored. "" on SQLite, whose backup is read as is."""
    if url.startswith("sqlite"):
        yield ""
        return
    with (scratch_postgresql if url.startswith("postgresql") else scratch_mysql)() as other:
        yield other


def restored_rows(url: str, path: Path, other: str) -> tuple[int, int]:
    """Rows of a and the sum of b.n in what the backup file holds, restored by the
    database's own client into the empty scratch database `other` (restore_space),
    which is left empty again."""
    if url.startswith("sqlite"):
        copy = sqlite3.connect(path)
        try:
            a, n = copy.execute(BOTH).fetchone()
        finally:
            copy.close()
        return a, n
    kind = "postgresql" if url.startswith("postgresql") else "mysql"
    database = other.rsplit("/", 1)[1]
    with path.open("rb") as dump:
        argv = [*CLIENT[kind], database]
        if kind == "postgresql":
            argv.append(str(path))
        subprocess.run(argv, stdin=dump, check=True, capture_output=True)
    eng = engine(other)
    try:
        with eng.connect() as conn:
            a, n = conn.execute(text(BOTH)).one()
            # The next restore goes into an empty database again (a SERIAL's sequence
            # goes with its table).
            conn.execute(text("DROP TABLE a, b, c"))
            assert inspect(conn).get_table_names() == []
    finally:
        eng.dispose()
    return int(a), int(n)


def test_the_counts_are_those_of_the_dumps_snapshot_while_the_application_writes(target):
    """Each of the application's transactions adds a row to a and 1 to a row of b: in any
    one snapshot, a's rows equal the sum of b.n. A count taken at another moment than the
    dump's would not."""
    url, config = target
    load = pgbench if url.startswith("postgresql") else writer_thread
    seen = []
    with restore_space(url) as other, load(url):
        for _run in range(3):
            path = backup(config)
            manifest = json.loads(Path(f"{path}.manifest.json").read_text())
            a, n = restored_rows(url, path, other)
            assert manifest["tables"]["a"] == a == n, (manifest["tables"], a, n)
            seen.append(a)
    assert len(set(seen)) == 3, seen  # the application did write between the backups


# --- a valid dump of other content, its sha256 made to fit ---------------------------------


def change(url: str, sql: str) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.executescript(sql)
        conn.commit()
        conn.close()
        return
    with engine(url).connect() as conn:
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(text(statement))


def swap(home: Path, good: Path, other: Path) -> None:
    """Put other's bytes in good's place, and make good's manifest and catalog entry
    agree with them: the sha256 check passes, only deeper checks can tell."""
    shutil.copyfile(other, good)
    sha = sha256_of(good)
    manifest_path = good.with_name(good.name + ".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest.update(sha256=sha, size_bytes=good.stat().st_size)
    manifest_path.write_text(json.dumps(manifest))
    record_as_on_disk(home, good)


def backup(config: Config, verify: bool = False) -> Path:
    result = commands.run_job(config, "backup", {"type": "full", "verify": verify})
    assert result.status == "completed", result.error
    return Path(result.steps[1].output["backup_path"])


def validate(config: Config, dialect: str, path: Path) -> Any:
    plan = one_step_plan("backup", "db", dialect, "validate_backup", {"backup_path": str(path)})
    return commands.apply_plan(config, plan)


# What each swap changes, and the reason validation must give.
OTHER_CONTENTS = [
    ("DELETE FROM a WHERE id > 2", "a: 2 rows restored, 5 expected"),
    ("UPDATE a SET v = 'changed' WHERE id = 3", "a: restored contents differ from the backup's"),
    (
        "DROP TABLE c; CREATE TABLE d (id INTEGER PRIMARY KEY)",
        "tables the manifest lists did not come back: c; tables the backup does not hold "
        "came back: d",
    ),
]


def test_a_valid_dump_of_other_content_fails_validation_by_its_rows(target, home):
    url, config = target
    dialect = "sqlite" if url.startswith("sqlite") else url.split(":")[0].split("+")[0]
    change(url, "; ".join(f"INSERT INTO a (id, v) VALUES ({i}, 'v{i}')" for i in range(1, 6)))
    good = backup(config)
    pristine = good.read_bytes(), Path(str(good) + ".manifest.json").read_text()
    for sql, reason in OTHER_CONTENTS:
        change(url, sql)
        other = backup(config)
        swap(home, good, other)
        checked = validate(config, dialect, good)
        assert checked.status == "failed", sql
        assert checked.steps[0].error.startswith(f"Backup {good.name} failed validation: "), (
            checked.steps[0].error
        )
        assert reason in checked.steps[0].error, (sql, checked.steps[0].error)
        [judged] = [b for b in commands.list_backups(config) if b["path"] == str(good)]
        assert judged["verified_at"] is None and reason in "; ".join(
            judged["verification"]["problems"]
        )
        # Back to the pristine backup and the pristine data for the next swap.
        good.write_bytes(pristine[0])
        Path(str(good) + ".manifest.json").write_text(pristine[1])
        record_as_on_disk(home, good)
        undo(url, sql)


def undo(url: str, sql: str) -> None:
    if sql.startswith("DELETE"):
        change(url, "; ".join(f"INSERT INTO a (id, v) VALUES ({i}, 'v{i}')" for i in (3, 4, 5)))
    elif sql.startswith("UPDATE"):
        change(url, "UPDATE a SET v = 'v3' WHERE id = 3")
    else:
        change(url, "DROP TABLE d; CREATE TABLE c (id INTEGER PRIMARY KEY, v VARCHAR(40))")


@contextlib.contextmanager
def empty_target(home: Path, url: str) -> Iterator[Config]:
    """Another, empty target named `copy` of the same kind."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    if url.startswith("sqlite"):
        sqlite3.connect(home / "copy.db").close()
        data["targets"]["copy"] = {"url": f"sqlite:///{home / 'copy.db'}"}
        path.write_text(yaml.safe_dump(data))
        yield load_config(home=home)
        return
    scratch = scratch_postgresql if url.startswith("postgresql") else scratch_mysql
    with scratch() as other:
        data["targets"]["copy"] = {"url": other}
        path.write_text(yaml.safe_dump(data))
        yield load_config(home=home)


def test_a_restore_of_a_swapped_file_says_what_does_not_match(target, home):
    url, config = target
    change(url, "; ".join(f"INSERT INTO a (id, v) VALUES ({i}, 'v{i}')" for i in range(1, 6)))
    good = backup(config, verify=True)
    change(url, "UPDATE a SET v = 'changed' WHERE id = 3")
    swap(home, good, backup(config))
    [listed] = [b for b in commands.list_backups(config) if b["path"] == str(good)]
    assert listed["verified_at"]  # it was verified before the swap
    with empty_target(home, url) as config:
        restored = commands.restore(
            config, listed["id"], "copy", approver=Prompting(ask=lambda _r: "yes")
        )
    assert restored.status == "failed"
    error = restored.steps[0].error
    assert error.startswith(f"The restore of {good.name} does not match its manifest: "), error
    assert "a: restored contents differ from the backup's checksum" in error
