"""A stop that comes just after a statement or a client program reached the server
still ends it there.

A stop (a signal, the run-time limit, a lost run lock) may come after a step's last
look at it and before its statement reaches the server: the cancel then finds the
session idle and cancels nothing, and the statement ran to its end (27 s of a read
after a lost run lock). The stop sends its cancel again while the statement waits.

Each test makes the stop land first: the cancel is sent and answered while the session
is idle, then the long statement starts. The read_timeout_seconds is long, so that
closing the socket at that bound is not what ends it.

Likewise a client program (mariadb-dump) whose connection opened after the last look
at its ports, with the stop before the next: its ports are looked at once more before
it is killed, and its session is ended on the server.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from aishell.config.models import load_config
from aishell.errors import StepInterrupted
from aishell.handlers.backup.sessions import ClientSession, engine_opener
from aishell.scratch.children import run_child
from aishell.scratch.ledger import Ledger
from aishell.targets.deadlines import RECANCEL_SECONDS, cancel_then_sever
from aishell.targets.engines import open_target
from tests.helpers import SLOW_READ, use_target
from tests.services import engine

# From the statement's start to its end, cancelled: the cancel's next round, its round
# trip and a loaded two-core machine's delays; the read itself lasts far longer.
BOUND_SECONDS = RECANCEL_SECONDS + 6.0


def _long_wait(home: Path) -> None:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["read_timeout_seconds"] = 600
    path.write_text(yaml.safe_dump(data))


def _read(url: str) -> str:
    sql = SLOW_READ["postgresql" if url.startswith("postgresql") else "mysql"]
    # Ten times the helpers' read: a minute or more, were it not cancelled.
    return sql.replace("40000", "400000").replace(":floor", "0")


def test_a_cancel_that_lands_before_its_statement_is_sent_again(home: Path, server_url: str):
    use_target(home, server_url)
    _long_wait(home)
    handle = open_target(load_config(home=home), "db")
    try:
        with handle.connect() as conn:
            conn.execute(text("SELECT 1")).scalar()
            done = threading.Event()
            stopping = threading.Thread(
                target=cancel_then_sever,
                args=(conn, done.wait, time.monotonic(), lambda _limits: "silent"),
                daemon=True,
            )
            stopping.start()
            # The first cancel goes to an idle session.
            time.sleep(0.3)
            started = time.monotonic()
            with pytest.raises(DBAPIError) as raised:
                conn.execute(text(_read(server_url))).scalar()
            took = time.monotonic() - started
            done.set()
            stopping.join(30)
            assert not stopping.is_alive()
            assert took < BOUND_SECONDS, took
            message = str(raised.value).lower()
            assert "cancel" in message or "interrupted" in message, message
            # Cancelled, not cut off: the connection still answers.
            conn.rollback()
            assert conn.execute(text("SELECT 2")).scalar() == 2
    finally:
        handle.close()


def _sessions(url: str, marker: str) -> list[int]:
    """The ids of the sessions on url's database running a statement with `marker`."""
    admin = engine(url)
    try:
        with admin.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT ID FROM information_schema.PROCESSLIST "
                    "WHERE DB = DATABASE() AND INFO LIKE :m AND ID <> CONNECTION_ID()"
                ),
                {"m": f"%{marker}%"},
            )
            return [int(r[0]) for r in rows]
    finally:
        admin.dispose()


def test_a_client_stopped_just_after_it_connected_has_its_session_ended(mysql_url: str):
    """The client connects after its last poll and the stop comes before the next: the
    session it opened is still found (by its port) and ended."""
    marker = f"aishell_race_{uuid.uuid4().hex[:8]}"
    address = make_url(mysql_url)
    # Connects a little after it starts, between two polls, then waits on the server.
    argv = [
        "sh",
        "-c",
        'sleep 0.4; exec mariadb --no-defaults -h "$1" -P "$2" -u "$3" "$4" -e "$5"',
        "client",
        str(address.host),
        str(address.port or 3306),
        str(address.username),
        str(address.database),
        f"SELECT SLEEP(60) AS {marker}",
    ]
    admin = create_engine(mysql_url)
    session = ClientSession(engine_opener(admin), "mysql", "mariadb")
    try:
        started = time.monotonic()
        # The stop comes as soon as the session is on the server.
        with pytest.raises(StepInterrupted):
            run_child(
                argv,
                env=dict(os.environ),
                ledger=Ledger(),
                should_stop=lambda: bool(_sessions(mysql_url, marker)),
                watch=session.watching(None),
            )
        assert session.end(), "the client's session was not found"
        assert _sessions(mysql_url, marker) == []
        assert time.monotonic() - started < 30
    finally:
        for left in _sessions(mysql_url, marker):
            with engine(mysql_url).connect() as conn:
                conn.execute(text(f"KILL {left}"))
        admin.dispose()
