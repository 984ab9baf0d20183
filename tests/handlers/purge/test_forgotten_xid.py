"""A batch's transaction id is the server's word on whether it committed only while the
server still knows that id for the batch's own. A crash (a backend killed, or the whole
server stopped at once) forgets the ids of transactions none of whose WAL reached the
disk: such an id is in the future at first, then given to whoever asks next. Its word
then is another transaction's: the batch is judged by its own rows instead."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine

from aishell.handlers.purge.indoubt import server_word, transaction_of
from tests.private_servers import private_postgresql

_STATS_BEGAN = "SELECT pg_stat_get_bgwriter_stat_reset_time()"


def _connect(engine: Engine) -> Connection:
    """A connection once the server accepts them again (it is recovering)."""
    for _ in range(150):
        try:
            return engine.connect()
        except Exception:
            time.sleep(0.1)
    raise AssertionError("the server did not come back")


def _kill_backend(conn: Connection, stop: Callable[[], None], start: Callable[[], None]) -> None:
    """SIGKILL the connection's backend: the postmaster ends every session, recovers
    from the WAL and lives on. Returns once the recovery is over (the statistics are
    begun anew then)."""
    engine = conn.engine
    with engine.connect() as other:
        began = other.execute(text(_STATS_BEGAN)).scalar()
    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    os.kill(int(pid), signal.SIGKILL)
    for _ in range(300):
        time.sleep(0.05)
        try:
            with engine.connect() as other:
                if other.execute(text(_STATS_BEGAN)).scalar() != began:
                    return
        except Exception:  # the server is recovering: look again
            continue
    raise AssertionError("the server did not recover")


def _stop_at_once(conn: Connection, stop: Callable[[], None], start: Callable[[], None]) -> None:
    stop()
    start()


@pytest.fixture
def server() -> Iterator[tuple[Engine, Callable[[], None], Callable[[], None]]]:
    with private_postgresql() as (url, stop, start):
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE logs (id int PRIMARY KEY, at date)"))
                conn.execute(
                    text("INSERT INTO logs SELECT g, '2000-01-01' FROM generate_series(1, 100) g")
                )
            yield engine, stop, start
        finally:
            engine.dispose()


def _batch_in_doubt(engine: Engine) -> tuple[dict[str, Any], Connection]:
    """A batch that deleted rows and checkpointed its transaction, its COMMIT never sent."""
    conn = engine.connect()
    conn.execute(text("DELETE FROM logs WHERE id <= 10"))
    return {"rows": 10, **transaction_of(conn)}, conn


@pytest.mark.parametrize("crash", [_kill_backend, _stop_at_once])
def test_an_id_the_crash_forgot_is_never_taken_for_the_batch_s(server, crash) -> None:
    engine, stop, start = server
    pending, sending = _batch_in_doubt(engine)
    crash(sending, stop, start)
    sending.invalidate()
    engine.dispose()
    with _connect(engine) as conn:
        # In the future: nothing of it reached the disk, its COMMIT neither.
        assert server_word(conn, pending) is False
        conn.rollback()
    # Other sessions take ids again, the forgotten one among them, and commit.
    for _ in range(3):
        with _connect(engine) as conn, conn.begin():
            conn.execute(text("INSERT INTO logs VALUES (1000 + txid_current() % 1000, now())"))
    with _connect(engine) as conn:
        status = conn.execute(
            text("SELECT pg_xact_status(CAST(:xid AS xid8))"), {"xid": pending["xid"]}
        ).scalar()
        assert status == "committed"  # the id is another transaction's now
        assert server_word(conn, pending) is None
        assert conn.execute(text("SELECT count(*) FROM logs WHERE id <= 10")).scalar() == 10


def test_without_a_crash_the_server_s_word_stands(server) -> None:
    engine, _stop, _start = server
    pending, sending = _batch_in_doubt(engine)
    sending.commit()
    sending.close()
    aborted, dropped = _batch_in_doubt(engine)
    dropped.rollback()
    dropped.close()
    with _connect(engine) as conn:
        assert server_word(conn, pending) is True
        assert server_word(conn, aborted) is False
        assert server_word(conn, {"rows": 10}) is None


@pytest.mark.parametrize("crash", [_kill_backend, _stop_at_once])
def test_after_a_crash_a_durable_id_keeps_its_word_as_far_as_it_can(server, crash) -> None:
    """A batch that committed before the crash: "committed" may be another transaction's
    once the server has recovered, so it is what the caller's `unsure` says; one that
    never committed but whose id reached the disk is aborted, which holds either way."""
    engine, stop, start = server
    landed, sending = _batch_in_doubt(engine)
    sending.commit()
    # Written to the WAL, then cut off: its id is durable, its COMMIT never sent.
    lost, cut = _batch_in_doubt(engine)
    cut.execute(text("DELETE FROM logs WHERE id BETWEEN 50 AND 60"))
    cut.execute(text("SELECT pg_switch_wal()"))
    crash(cut, stop, start)
    cut.invalidate()
    engine.dispose()
    with _connect(engine) as conn:
        assert server_word(conn, landed) is None
        assert server_word(conn, landed, unsure=True) is True
        assert server_word(conn, lost) is False
        assert conn.execute(text("SELECT count(*) FROM logs WHERE id <= 60")).scalar() == 50
