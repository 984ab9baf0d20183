"""Slots per database server: at most `fleet.per_server_limit` runs on one server at
once, across every worker on every machine.

A slot is a lock the state store's own server keeps for a session: PostgreSQL's
advisory lock on (the server's key, slot number), MySQL's GET_LOCK; a SQLite state
store (one machine) uses a lock file per slot beside it. The server (or the kernel)
frees a slot when its holder dies, so a killed worker never keeps one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from aishell.sqltext import text
from aishell.state.faults import sqlite_path

_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def server_of(url: str) -> str:
    """The database server a target's URL reaches (dialect, host, port), or for SQLite
    the file itself: what the per-server limit counts runs of."""
    parsed = make_url(url)
    dialect = parsed.get_backend_name()
    if dialect == "sqlite":
        return f"sqlite:{Path(parsed.database or '').resolve()}"
    host = parsed.host or parsed.query.get("host") or "localhost"
    port = parsed.port or _DEFAULT_PORTS.get(dialect, 0)
    return f"{dialect}:{host}:{port}"


@contextmanager
def server_slot(state_url: str, server: str, limit: int) -> Iterator[bool]:
    """Hold one of the server's `limit` slots while the block runs (True), or none when
    all are taken (False: the caller asks again later)."""
    digest = hashlib.sha256(server.encode()).hexdigest()
    folder = sqlite_path(state_url)
    if folder is not None:
        with _file_slot(folder.parent / "fleet-slots", digest, limit) as held:
            yield held
        return
    engine = _slot_engine(state_url)
    try:
        conn = engine.connect()
        try:
            slot = _server_lock(conn, digest, limit)
            if slot is None:
                yield False
                return
            try:
                yield True
            finally:
                with suppress(SQLAlchemyError):
                    slot()
        finally:
            with suppress(SQLAlchemyError):
                conn.close()
    finally:
        engine.dispose()


def _slot_engine(state_url: str) -> Engine:
    """An engine on the state store's server as the store makes one: the timeouts the
    URL carries taken out of it (the driver knows no read_timeout) and put to work, so a
    server that stopped answering ends the slot's take instead of holding the worker."""
    from aishell.config.stateurl import display_url
    from aishell.state.serverstore import Silenced, server_engine, without_timeouts

    return server_engine(state_url, display_url(without_timeouts(state_url)), Silenced())


# Named in pg_catalog and bound as int4: a number binds as the smallest integer type that
# holds it, and a database's own function taking exactly that type would be chosen.
_PG_TAKE = (
    "SELECT pg_catalog.pg_try_advisory_lock("
    "CAST(:k AS pg_catalog.int4), CAST(:s AS pg_catalog.int4))"
)
_PG_RELEASE = (
    "SELECT pg_catalog.pg_advisory_unlock(CAST(:k AS pg_catalog.int4), CAST(:s AS pg_catalog.int4))"
)


def _server_lock(conn: Connection, digest: str, limit: int) -> Callable[[], None] | None:
    """Take the first free slot on the state store's server; its release, or None."""
    postgres = conn.dialect.name == "postgresql"
    key = int(digest[:8], 16) - 2**31  # a signed 32-bit key, as the two-key form takes
    for slot in range(limit):
        params: dict[str, object]
        if postgres:
            params = {"k": key, "s": slot}
            taken = conn.execute(text(_PG_TAKE), params).scalar()
            release = _PG_RELEASE
        else:
            params = {"k": f"aishell-slot:{digest[:40]}:{slot}"}
            taken = conn.execute(text("SELECT GET_LOCK(:k, 0)"), params).scalar()
            release = "SELECT RELEASE_LOCK(:k)"
        conn.commit()
        if taken:
            return partial(_released, conn, release, params)
    return None


def _released(conn: Connection, sql: str, params: dict[str, object]) -> None:
    conn.execute(text(sql), params)
    conn.commit()


@contextmanager
def _file_slot(folder: Path, digest: str, limit: int) -> Iterator[bool]:
    folder.mkdir(mode=0o700, exist_ok=True)
    for slot in range(limit):
        fd = os.open(folder / f"{digest[:24]}-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield True
        finally:
            os.close(fd)  # closing lets go of the lock
        return
    yield False
