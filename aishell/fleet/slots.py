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
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from aishell.dialects import family
from aishell.sqltext import text
from aishell.state.faults import sqlite_path

_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def server_of(url: str) -> str:
    """The database server a target's URL reaches (dialect, host, port), or for SQLite
    the file itself: what the per-server limit counts runs of. Two names of one server
    (localhost and 127.0.0.1, a name and its address) count as one (_host_address)."""
    parsed = make_url(url)
    dialect = family(parsed.get_backend_name())  # mariadb:// and mysql:// alike
    if dialect == "sqlite":
        return f"sqlite:{Path(parsed.database or '').resolve()}"
    host = parsed.host or parsed.query.get("host")
    port = parsed.port or _DEFAULT_PORTS.get(dialect, 0)
    return f"{dialect}:{_host_address(host if isinstance(host, str) else None)}:{port}"


def _host_address(host: str | None) -> str:
    """The address a host name reaches (the lowest, when it has several), as the slot's
    key. This machine's own server (a loopback address, a Unix socket's folder, no host)
    is named by this machine: localhost on another worker's machine is another server. A
    name that does not resolve is kept as written (lower case): its runs fail to connect
    anyway."""
    if host is None or host.startswith("/"):
        return f"loopback@{socket.gethostname()}"
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        addresses = sorted(
            {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found},
            key=lambda a: (a.version, int(a)),
        )
    except (OSError, UnicodeError, ValueError):
        return host.lower()
    if not addresses:
        return host.lower()
    if any(a.is_loopback for a in addresses):
        return f"loopback@{socket.gethostname()}"
    return str(addresses[0])


# How often a slot held on a server is looked at: its session may be cut (a terminated
# backend, an idle timeout, a restart of the state store's server), and the server then
# let go of the slot, which another worker may take.
WATCH_SECONDS = 5.0


@contextmanager
def server_slot(
    state_url: str,
    server: str,
    limit: int,
    on_lost: Callable[[], None] | None = None,
    every: float = WATCH_SECONDS,
) -> Iterator[bool]:
    """Hold one of the server's `limit` slots while the block runs (True), or none when
    all are taken (False: the caller asks again later). A slot whose session is found
    gone while the block runs calls `on_lost` once (from a thread of its own): the slot
    is no longer held, and the work it was for should stop."""
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
            watch = _Watch(conn, on_lost, every)
            try:
                yield True
            finally:
                if watch.stop():
                    with suppress(SQLAlchemyError):
                        slot()
        finally:
            with suppress(SQLAlchemyError):
                conn.close()
    finally:
        engine.dispose()


class _Watch:
    """A round trip on the slot's session every `every` seconds while it is held; the
    session gone, `on_lost` is called and the watch ends. One at a time with the slot's
    release (the connection is not shared between threads at once)."""

    def __init__(self, conn: Connection, on_lost: Callable[[], None] | None, every: float):
        self.conn, self.on_lost, self.every = conn, on_lost, every
        self.ended = threading.Event()
        self.using = threading.Lock()
        self.lost = False
        self.thread = threading.Thread(target=self._run, name="aishell-slot-watch", daemon=True)
        if on_lost is not None:
            self.thread.start()

    def _run(self) -> None:
        while not self.ended.wait(self.every):
            with self.using:
                if self.ended.is_set():
                    return
                try:
                    self.conn.execute(text("SELECT 1")).scalar()
                    self.conn.commit()
                    continue
                except SQLAlchemyError:
                    self.lost = True
            if self.on_lost is not None:
                self.on_lost()
            return

    def stop(self) -> bool:
        """Ends the watch; whether the slot is still held (to be let go)."""
        self.ended.set()
        with self.using:
            pass
        if self.thread.is_alive():
            self.thread.join(timeout=self.every + 1)
        return not self.lost


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
