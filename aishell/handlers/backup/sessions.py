"""The server session of a client program aishell runs (pg_dump, pg_restore, psql,
mariadb-dump, the mariadb client), found and ended when aishell stops the program.

Killing a client does not end its session on the server: a backend waiting for a lock
does not read its socket, so a pg_restore stopped at its lock wait left its queued
`DROP` waiting, blocking every new reader of the table, and then ran it once the lock
came free, after aishell had reported the restore stopped. So each run of a program is
marked so that its session can be found, and when aishell stops the program (its lock
wait, a signal, the run's or the step's time limit, any failure) the session is ended
after the program is killed: only that program's, never another's.

How the session is found:
- PostgreSQL: an application name unique to the program's run (PGAPPNAME), ended with
  pg_terminate_backend, waited for until it is gone.
- MySQL/MariaDB, whose clients cannot be given a name the server shows (mariadb-dump
  has no --init-command, and performance_schema's connection attributes are off by
  default): the client's own TCP address and port, read from /proc while it runs,
  which the server shows as the session's HOST, of aishell's account; ended with KILL
  CONNECTION. Where the server sees another address (NAT, a proxy), nothing is ended.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from aishell.dialects import family
from aishell.risk import RiskLevel
from aishell.sqltext import text
from aishell.targets.limits import STATEMENT_LIMIT_KEY, set_statement_limit
from aishell.tool.context import ToolContext
from aishell.tool.side import Side

# How long ending a PostgreSQL backend is waited for (pg_terminate_backend's timeout).
END_WAIT_MS = 5000

_PG_END = """
SELECT a.pid, pg_catalog.pg_terminate_backend(a.pid, :wait) AS ended
FROM pg_catalog.pg_stat_activity a
WHERE a.application_name = :name AND a.pid <> pg_catalog.pg_backend_pid()
"""
_MY_SESSIONS = """
SELECT p.ID AS id, p.HOST AS host
FROM information_schema.PROCESSLIST p
WHERE p.USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND p.ID <> CONNECTION_ID()
"""
_PG_END_UNWAITED = _PG_END.replace(", :wait)", ")")  # before PostgreSQL 14
_MY_END = "KILL CONNECTION :id"
_SOCKET = re.compile(r"socket:\[(\d+)\]")


# What ending a client program's session sends, by engine family.
ENDING_SQL = {"postgresql": (_PG_END, _PG_END_UNWAITED), "mysql": (_MY_END,)}

# Ending a client program's session, aishell's own (found by its application name or its
# port): a high write by the catalog's word (pg_terminate_backend), declared exactly; sent
# after a stop too, since a stop is when a program's session is left behind.
ENDING = Side(
    "ending its client program's server session",
    writes=ENDING_SQL["postgresql"] + ENDING_SQL["mysql"],  # what tools show lists
    risk=RiskLevel.HIGH,
    isolation_level="AUTOCOMMIT",
    after_stop=True,
    limit_seconds=END_WAIT_MS / 1000 * 2,
)

# A session of its own to end the program's from (the step's may be in the middle of a
# statement, or closed to new ones after a signal).
Opener = Callable[[], AbstractContextManager[Connection]]


def engine_opener(engine: Engine) -> Opener:
    """Outside a step (a command's own check of a client program), a connection of the
    engine's, with a limit of its own."""

    @contextmanager
    def opened() -> Iterator[Connection]:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            _own_limit(conn)
            yield conn

    return opened


@dataclass
class ClientSession:
    """How one run of a client program is found on the server, and ended. `opener`: a
    session of its own to end it from; in a step, the step's second session (audited)."""

    opener: Opener | None
    dialect: str
    program: str
    name: str = ""
    # MySQL: the client's (address, port) of each of its TCP connections.
    ports: set[tuple[str, int]] = field(default_factory=set)
    record_event: Callable[[str, dict[str, object]], None] = lambda _k, _d: None

    @classmethod
    def begin(
        cls, ctx: ToolContext, program: str, env: dict[str, str]
    ) -> tuple[ClientSession, dict[str, str]]:
        """The session's marks, and the environment the program runs with: on
        PostgreSQL the application name it is given (PGAPPNAME), unless the caller gave
        one already (a dump's lock watch looks for it)."""
        opener = (lambda: ctx.side_session(ENDING)) if ctx.conn is not None else None
        session = cls(opener, ctx.dialect, program, record_event=ctx.record_event)
        if ctx.dialect == "postgresql":
            session.name = env.get("PGAPPNAME") or f"aishell {program} {secrets.token_hex(6)}"
            env = env | {"PGAPPNAME": session.name}
        return session, env

    def watching(self, also: Callable[[int], None] | None) -> Callable[[int], None] | None:
        """A `watch` for run_child that also notes the MySQL client's TCP ports."""
        if family(self.dialect) != "mysql":
            return also

        def watch(pid: int) -> None:
            self.ports |= local_ports(pid)
            if also is not None:
                also(pid)

        return watch

    def end(self) -> list[int]:
        """End the program's session if it is still on the server (after the program is
        killed); the ids of those ended. A session that cannot be ended is recorded as
        an event, with how to end it by hand."""
        if self.opener is None or not (self.name or self.ports):
            return []
        try:
            with self.opener() as conn:
                if self.dialect == "postgresql":
                    # Waiting for the backend to be gone needs PostgreSQL 14.
                    waits = (conn.dialect.server_version_info or (0,)) >= (14,)
                    end = _PG_END if waits else _PG_END_UNWAITED
                    found = conn.execute(text(end), {"name": self.name, "wait": END_WAIT_MS})
                    return [int(r.pid) for r in found if r.ended]
                ended = []
                for row in conn.execute(text(_MY_SESSIONS)):
                    if _is_ours(str(row.host), self.ports):
                        with suppress(SQLAlchemyError):  # it may have ended meanwhile
                            conn.execute(text(_MY_END), {"id": int(row.id)})
                            ended.append(int(row.id))
                _wait_gone(conn, ended)
                return ended
        except SQLAlchemyError as exc:
            how = (
                f"application_name {self.name!r}"
                if self.name
                else f"client port(s) {sorted(self.ports)}"
            )
            self.record_event(
                "client_session_left",
                {"program": self.program, "session": how, "error": str(exc).splitlines()[0]},
            )
            return []


def _wait_gone(conn: Connection, ids: list[int]) -> None:
    """Wait, up to END_WAIT_MS, until the sessions KILL ended have left the server: a
    KILL only marks a session, which leaves once its thread wakes (a lock wait's within
    moments), as pg_terminate_backend's wait does on PostgreSQL."""
    if not ids:
        return
    left = text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID IN :ids")
    left = left.bindparams(bindparam("ids", expanding=True))
    until = time.monotonic() + END_WAIT_MS / 1000
    while conn.execute(left, {"ids": ids}).scalar() and time.monotonic() < until:
        time.sleep(0.02)


def _own_limit(conn: Connection) -> None:
    """A limit of its own: a connection opened while a step runs inherits what is left
    of the step's, nothing when the step's time ran out (which is why it stops)."""
    statement = set_statement_limit(conn, END_WAIT_MS / 1000 * 2)
    if statement is not None:
        # The pool's next user sets the limit it needs, knowing this one is set.
        conn.info[STATEMENT_LIMIT_KEY] = statement


def _is_ours(host: str, ports: set[tuple[str, int]]) -> bool:
    """Whether a session's HOST ('address:port', or 'name:port' where the server
    resolves names) is one of the client's connections: its port, from its address."""
    name, _, port = host.rpartition(":")
    if not port.isdigit():
        return False
    for address, ours in ports:
        if int(port) != ours:
            continue
        loopback = ipaddress.ip_address(address).is_loopback
        if name in (address, socket.gethostname(), socket.getfqdn()) or (
            loopback and name == "localhost"
        ):
            return True
    return False


def local_ports(pid: int) -> set[tuple[str, int]]:
    """The local (address, port) of process `pid`'s TCP connections (Linux /proc; empty
    where that cannot be read)."""
    inodes: set[str] = set()
    with suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with suppress(OSError):
                found = _SOCKET.fullmatch(os.readlink(f"/proc/{pid}/fd/{fd}"))
                if found:
                    inodes.add(found.group(1))
    ports: set[tuple[str, int]] = set()
    if not inodes:
        return ports
    for table in ("tcp", "tcp6"):
        with suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    address, port = fields[1].rsplit(":", 1)
                    ports.add((_address(address), int(port, 16)))
    return ports


def _address(hexed: str) -> str:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host order, which is
    little-endian here), as the server shows it (an IPv4-mapped one as IPv4)."""
    raw = bytes.fromhex(hexed)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    found = ipaddress.ip_address(raw)
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return str(found.ipv4_mapped)
    return str(found)
