"""A MySQL state store whose making or upgrade was cut short opens, and is then what an
uncut upgrade makes. MySQL commits each DDL statement by itself and alembic_version
moves only after a revision's last one, so a revision cut short runs again from its
start: every operation of the revisions does only what is not there yet
(state/revision_ops.py). Cut after each DDL statement in turn, from an empty database;
and a process killed (SIGKILL) while its upgrade waits on a lock.

Also: the store's session still tells a fault in one line after an upgrade read its
tables (inspection.py); openers of one store at once take turns under a named lock of
its database (history.lock_schema); a lock another session holds is waited for, then
said."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine

from aishell.config.stateurl import display_url
from aishell.errors import StateError
from aishell.state import history
from aishell.state.faults import DEFAULT_BUSY_TIMEOUT
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from tests.helpers import at_once
from tests.services import scratch_mysql
from tests.state.store_shape import made_at, store_shape

DDL = ("ALTER", "CREATE", "DROP")


class Cut(Exception):
    """Where the upgrade stopped, as a kill there would have stopped it."""


def _upgrade_cut_after_one_statement(engine: Engine) -> str | None:
    """One opening's upgrade, stopped before its second DDL statement: the statement it
    was stopped at, or None when it came to the end."""
    sent: list[str] = []

    def count(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().split()[0].upper() in DDL:
            sent.append(statement)
            if len(sent) == 2:
                raise Cut(" ".join(statement.split())[:80])

    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as conn:
            history.upgrade(conn, history.read_schema(conn), "the cut store", None)
        return None
    except Cut as cut:
        return str(cut)
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_mysql_store_cut_after_any_ddl_statement_opens_as_an_uncut_one() -> None:
    with scratch_mysql() as cut_url, scratch_mysql() as whole_url:
        engine = create_engine(cut_url)
        cuts: list[str] = []
        try:
            while (cut := _upgrade_cut_after_one_statement(engine)) is not None:
                cuts.append(cut)
                assert len(cuts) < 200, "the upgrade never ends"
        finally:
            engine.dispose()
        # Each table, index and column the revisions add was a place it was cut.
        assert any(c.startswith("CREATE INDEX") for c in cuts), cuts
        assert any(c.startswith("ALTER TABLE runs ADD COLUMN pid_started") for c in cuts)
        assert any(c.startswith("CREATE TABLE fleet_runs") for c in cuts), cuts
        with StateStore(cut_url) as store:
            assert store.schema_revision == history.HEAD_REVISION
        with StateStore(whole_url) as store:
            assert store.schema_revision == history.HEAD_REVISION
        cut_shape, whole_shape = store_shape(cut_url), store_shape(whole_url)
        assert "fleet_runs" in cut_shape
        assert cut_shape == whole_shape


OPEN_STORE = """
import sys
from aishell.state.signing import load_key
from aishell.state.store import StateStore
with StateStore(sys.argv[1]):
    pass
"""


def _waits_on_the_lock(admin: Engine, database: str) -> bool:
    with admin.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE db = :db "
                    "AND state LIKE 'Waiting for table metadata lock%' "
                    "AND info LIKE 'ALTER TABLE steps%'"
                ),
                {"db": database},
            ).scalar()
        )


def test_a_mysql_store_whose_upgrade_was_killed_midway_opens() -> None:
    """At revision 0001, with `steps` held by another session's transaction: the opener
    adds runs.seal, waits to alter steps, and is killed there."""
    with scratch_mysql() as url:
        made_at(url, "0001_baseline")
        engine = create_engine(url)
        holder = engine.connect()
        try:
            holder.execute(text("SELECT COUNT(*) FROM steps"))  # its transaction holds steps
            opener = subprocess.Popen(
                [sys.executable, "-c", OPEN_STORE, url],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            database = str(engine.url.database)
            deadline = time.monotonic() + 60
            while not _waits_on_the_lock(engine, database):
                assert opener.poll() is None, opener.stderr.read() if opener.stderr else ""
                assert time.monotonic() < deadline, "the upgrade never reached steps"
                time.sleep(0.05)
            os.kill(opener.pid, signal.SIGKILL)
            opener.wait(timeout=30)
            holder.rollback()
            columns = {c["name"] for c in inspect(engine).get_columns("runs")}
            assert "seal" in columns  # the cut left part of 0002 done
            with engine.connect() as conn:
                assert history.read_schema(conn).revision == "0001_baseline"
            with StateStore(url) as store:
                assert store.schema_revision == history.HEAD_REVISION
            steps = {c["name"] for c in inspect(engine).get_columns("steps")}
            assert {"status_seal", "output_seal"} <= steps
        finally:
            holder.close()
            engine.dispose()


@pytest.mark.parametrize(
    ("revision", "signed"),
    [(None, False), ("0001_baseline", False), ("0001_baseline", True)],
    ids=["new", "upgraded", "upgraded-and-signed"],
)
def test_a_mysql_store_tells_a_fault_in_one_line_after_its_upgrade(
    revision: str | None, signed: bool, tmp_path: Path
) -> None:
    """The upgrade reads the tables through SQLAlchemy's inspector, which on MySQL would
    leave the store's session deaf to the engine's error hook (inspection.py): its
    session killed afterwards is still a StateError naming the store. `signed`: opened
    with the home's key, with which revision 0002 signs what it finds."""
    with scratch_mysql() as url:
        if revision is not None:
            made_at(url, revision)
        engine = create_engine(url)
        try:
            key = load_key(tmp_path) if signed else None
            with StateStore(url, key) as store:
                store.list_runs()
                database = str(engine.url.database)
                with engine.connect() as admin:
                    sessions = admin.execute(
                        text(
                            "SELECT id FROM information_schema.PROCESSLIST "
                            "WHERE db = :db AND id <> CONNECTION_ID()"
                        ),
                        {"db": database},
                    ).scalars()
                    for session in list(sessions):
                        admin.execute(text(f"KILL CONNECTION {int(session)}"))
                with pytest.raises(StateError, match="Cannot use the state store"):
                    store.list_runs()
        finally:
            engine.dispose()


def _opened(url: str) -> str:
    """The revision a store opened at, or the error that kept it from opening."""
    try:
        with StateStore(url) as store:
            return str(store.schema_revision)
    except StateError as exc:
        return str(exc)


def test_processes_opening_one_mysql_store_at_once_all_open_it() -> None:
    """A new store, then one an older aishell made (revision 0001): each CREATE and
    ALTER commits alone, so the openers take turns under a named lock of the database
    (history.lock_schema), and each after the first finds the store done."""
    with scratch_mysql() as new, scratch_mysql() as old:
        made_at(old, "0001_baseline")
        opened = at_once(3, _opened, [(new,), (old,)])
        assert opened == [[history.HEAD_REVISION] * 3] * 2


def test_a_mysql_store_another_session_holds_the_schema_lock_of_is_one_line() -> None:
    """An opener waits for the lock its store's openers take turns under, for the
    store's busy timeout; then says so, and opens the store once the lock is free."""
    with scratch_mysql() as url:
        engine = create_engine(url)
        holder = engine.connect()
        try:
            name = "CONCAT('aishell-state-', MD5(DATABASE()))"
            assert holder.execute(text(f"SELECT GET_LOCK({name}, 0)")).scalar() == 1
            started = time.monotonic()
            with pytest.raises(StateError, match="being made or upgraded by another process") as e:
                StateStore(url)
            assert str(e.value).startswith(f"The state store {display_url(url)} ")
            assert time.monotonic() - started >= DEFAULT_BUSY_TIMEOUT - 1
            holder.execute(text(f"SELECT RELEASE_LOCK({name})"))
            with StateStore(url) as store:
                assert store.schema_revision == history.HEAD_REVISION
        finally:
            holder.close()
            engine.dispose()
