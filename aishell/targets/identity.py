"""Which database a connection reaches, whatever URL or path names it."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.errors import PlanError
from aishell.sqltext import text


def database_identity(conn: Connection) -> str:
    """Which database conn reaches, read-only: the same for every URL or path that names it.

    PostgreSQL: the cluster's system identifier and the database's oid (a dropped and
    re-created database gets a new oid). MariaDB/MySQL: the server (MySQL's server_uuid;
    MariaDB has none, so its hostname, port and data directory) and the schema. SQLite:
    the file's device and inode, so a symlink or another spelling of the path is the
    same database.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        name, oid = conn.execute(
            text(
                "SELECT datname, oid FROM pg_catalog.pg_database"
                " WHERE datname = pg_catalog.current_database()"
            )
        ).one()
        try:
            system = conn.execute(
                text("SELECT system_identifier FROM pg_catalog.pg_control_system()")
            ).scalar()
        except DBAPIError:
            # A server that keeps pg_control_system() from this role: the address then.
            if conn.in_transaction():
                conn.rollback()
            system = conn.execute(
                text(
                    "SELECT coalesce(pg_catalog.host(pg_catalog.inet_server_addr()), 'local') "
                    "|| ':' || coalesce(pg_catalog.inet_server_port()::pg_catalog.text, '')"
                )
            ).scalar()
        return f"postgresql:{system}/{name}/{oid}"
    if family(dialect) == "mysql":
        try:
            server = conn.execute(text("SELECT @@server_uuid")).scalar()
        except DBAPIError:
            if conn.in_transaction():
                conn.rollback()
            host, port, datadir = conn.execute(text("SELECT @@hostname, @@port, @@datadir")).one()
            server = f"{host}:{port}:{datadir}"
        name = conn.execute(text("SELECT DATABASE()")).scalar()
        return f"mysql:{server}/{name}"
    for _seq, schema_name, file in conn.execute(text("PRAGMA database_list")):
        if schema_name == "main" and file:
            status = os.stat(file)
            return f"sqlite:{status.st_dev}:{status.st_ino}"
    return "sqlite::memory:"


# --- which instance of a database a plan was made on --------------------------------------
#
# A database dropped and created again under the same name is another database. The run
# lock keys by database_identity, which must stay the same while a database lives and so
# cannot change with a rebuilt table; a saved plan records more (plan_identity): the
# identity and a fact about this instance of it that a re-creation always changes.

# How a plan's recorded identity separates the database from its instance.
INSTANCE_MARK = "#"

# The instance of a MariaDB/MySQL database without tables, or of a SQLite file on a file
# system that keeps no birth time: see database_instance.
NO_TABLES = "no-tables"
NO_BIRTH_TIME = "no-birth-time"


def plan_identity(conn: Connection) -> str:
    """What a saved plan records of the database it was made on: its identity and this
    instance of it (database_instance)."""
    return f"{database_identity(conn)}{INSTANCE_MARK}{database_instance(conn)}"


def backup_identity(conn: Connection, identity: str | None = None) -> str:
    """Which database a backup is of, read-only: its database_identity, and a SQLite
    file's instance (a file made again at its path may reuse the inode of the one a
    backup was taken of). A server database's instance is left out: it changes when a
    table is rebuilt, which leaves the database, and what its backup restores, the same.
    `identity` is the database_identity already read on this connection, if any.
    """
    if conn.dialect.name != "sqlite":
        return identity if identity is not None else database_identity(conn)
    for _seq, schema_name, file in conn.execute(text("PRAGMA database_list")):
        if schema_name == "main" and file:
            return sqlite_file_identity(file)
    return f"sqlite::memory:{INSTANCE_MARK}memory"


def sqlite_file_identity(file: str) -> str:
    """A SQLite file's backup_identity, read from the file system alone (stat and its
    birth time), without opening it: what a listing compares with the database a run
    reached, so that a file replaced at its path is seen at once. Raises OSError when
    the file is not there."""
    status = os.stat(file)
    born = birth_time_ns(file)
    instance = NO_BIRTH_TIME if born is None else f"born:{born}"
    return f"sqlite:{status.st_dev}:{status.st_ino}{INSTANCE_MARK}{instance}"


def database_instance(conn: Connection) -> str:
    """A fact about this instance of the database that dropping and creating it again
    under the same name changes, read-only.

    PostgreSQL: the oid already in its identity. SQLite: the file's birth time (statx),
    which a new file never shares with a deleted one whose inode it reuses. MariaDB/MySQL
    have no database oid: each table's InnoDB table id (never reused; needs the PROCESS
    privilege) or, without that privilege, its creation time, hashed over the tables. A
    database without tables has the instance NO_TABLES: a plan made on it applies to a
    database of that name that has no tables either, since there is no table whose rows
    the plan could reach and the re-created database is, for every step, the same.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return "oid"
    if family(dialect) == "mysql":
        return _mysql_instance(conn)
    for _seq, schema_name, file in conn.execute(text("PRAGMA database_list")):
        if schema_name == "main" and file:
            born = birth_time_ns(file)
            return NO_BIRTH_TIME if born is None else f"born:{born}"
    return "memory"


# information_schema shows its times in the session's time_zone, which a target's URL
# (init_command) or the server's default may set otherwise from one session to the next.
# Every such time aishell compares (here and in fingerprints.py) is read through
# mysql_instant, as the instant it names, so the same table or routine reads the same in
# any session zone, and a re-created one differently.
def mysql_instant(column: str) -> str:
    """SQL reading an information_schema time column as seconds since the epoch:
    UNIX_TIMESTAMP converts the session zone's reading back (NULL stays NULL). Only in
    the hour a daylight-saving zone repeats is the reading ambiguous; the server then
    takes one of the two instants, always the same one, so a session in such a zone may
    read a time of that hour an hour off another zone's reading (a plan refused once:
    the safe side)."""
    return f"UNIX_TIMESTAMP({column})"


def _mysql_instance(conn: Connection) -> str:
    tables = conn.execute(
        text(
            f"SELECT TABLE_NAME, TABLE_TYPE, ENGINE, {mysql_instant('CREATE_TIME')} "
            "FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE <> 'VIEW'"
        )
    ).all()
    if not tables:
        return NO_TABLES
    ids = _innodb_table_ids(conn)
    facts = sorted(
        [
            str(name),
            str(kind),
            str(engine),
            str(created),
            (ids or {}).get(_innodb_file_name(str(name)), []),
        ]
        for name, kind, engine, created in tables
    )
    digest = hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:32]
    return f"{'table-ids' if ids is not None else 'created'}:{digest}"


def _innodb_table_ids(conn: Connection) -> dict[str, list[int]] | None:
    """The InnoDB table ids of each table (one per partition) by the table's name as
    InnoDB spells it, or None when the role may not read them."""
    name = str(conn.execute(text("SELECT DATABASE()")).scalar())
    prefix = _innodb_file_name(name) + "/"
    pattern = prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
    try:
        rows = conn.execute(
            text(
                "SELECT NAME, TABLE_ID FROM information_schema.INNODB_SYS_TABLES "
                "WHERE NAME LIKE :pattern ESCAPE '!'"
            ),
            {"pattern": pattern},
        ).all()
    except DBAPIError:
        # Without PROCESS: the tables' creation times stand alone.
        if conn.in_transaction():
            conn.rollback()
        return None
    ids: dict[str, list[int]] = {}
    for row_name, table_id in rows:
        # LIKE folds case; the file name does not.
        if str(row_name).startswith(prefix):
            table = str(row_name)[len(prefix) :].split("#P#")[0]
            ids.setdefault(table, []).append(int(table_id))
    return {table: sorted(found) for table, found in ids.items()}


def _innodb_file_name(name: str) -> str:
    """How InnoDB spells a database name in its dictionary: letters, digits and _ as they
    are, any other ASCII character as @ and its four hex digits. (Non-ASCII characters
    have their own table; a name with them matches no id, and creation times remain.)"""
    return "".join(
        c if c.isascii() and (c.isalnum() or c == "_") else f"@{ord(c):04x}" for c in name
    )


def check_plan_identity(conn: Connection, target: str, recorded: str) -> None:
    """Refuse, in one line, a plan made on another database than the one conn reaches, or
    on another instance of it (dropped and created again under the same name)."""
    identity, mark, instance = recorded.partition(INSTANCE_MARK)
    now = database_identity(conn)
    if now != identity:
        raise PlanError(
            f"Target '{target}' now points at another database ({now}) than the plan was "
            f"made on ({recorded}); make a new plan"
        )
    if not mark:
        raise PlanError(
            f"The plan records database {identity} but not which instance of it (a plan "
            "saved before aishell recorded it); make a new plan"
        )
    current = database_instance(conn)
    if current != instance:
        raise PlanError(
            f"Target '{target}' reaches a database of the same name ({identity}) that is "
            f"not the one the plan was made on: {_what_changed(conn, instance, current)}; "
            "make a new plan"
        )


def _what_changed(conn: Connection, recorded: str, current: str) -> str:
    if conn.dialect.name == "sqlite":
        return "its file was created again since"
    if NO_TABLES in (recorded, current):
        had = "no tables" if recorded == NO_TABLES else "tables"
        has = "no tables" if current == NO_TABLES else "tables"
        return f"it had {had} then and has {has} now"
    if recorded.split(":")[0] != current.split(":")[0]:
        return (
            "the plan's account could read InnoDB table ids and this one cannot, or the "
            "other way round"
        )
    return (
        "its tables were created since the plan was made (the database dropped and "
        "created again, or a table added, rebuilt or dropped)"
    )


# statx(2): the only way Linux tells a file's birth time (Python 3.11's os.stat does not).
_AT_FDCWD = -100
_STATX_BTIME = 0x800


class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("_pad", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    # struct statx is 256 bytes (0x100) on every architecture; the kernel fills all of it.
    _fields_ = [
        ("stx_mask", ctypes.c_uint32),
        ("stx_blksize", ctypes.c_uint32),
        ("stx_attributes", ctypes.c_uint64),
        ("stx_nlink", ctypes.c_uint32),
        ("stx_uid", ctypes.c_uint32),
        ("stx_gid", ctypes.c_uint32),
        ("stx_mode", ctypes.c_uint16),
        ("_spare0", ctypes.c_uint16),
        ("stx_ino", ctypes.c_uint64),
        ("stx_size", ctypes.c_uint64),
        ("stx_blocks", ctypes.c_uint64),
        ("stx_attributes_mask", ctypes.c_uint64),
        ("stx_atime", _StatxTimestamp),
        ("stx_btime", _StatxTimestamp),
        ("stx_ctime", _StatxTimestamp),
        ("stx_mtime", _StatxTimestamp),
        ("_rest", ctypes.c_uint64 * 16),  # device numbers, mount id, alignments, spare
    ]


def birth_time_ns(path: str) -> int | None:
    """When the file at path was created, in nanoseconds since the epoch; None where the
    system or the file system does not keep or tell it."""
    birth = getattr(os.stat(path), "st_birthtime_ns", None)  # BSD, macOS, Windows
    if isinstance(birth, int):
        return birth
    try:
        statx = ctypes.CDLL(None, use_errno=True).statx
    except (AttributeError, OSError):
        return None  # a C library without statx (glibc before 2.28, musl before 1.2.5)
    found = _Statx()
    assert ctypes.sizeof(found) == 256
    if statx(_AT_FDCWD, os.fsencode(path), 0, _STATX_BTIME, ctypes.byref(found)) != 0:
        return None
    if not found.stx_mask & _STATX_BTIME or not found.stx_btime.tv_sec:
        return None  # not kept, or zero as some file systems report it
    return int(found.stx_btime.tv_sec) * 1_000_000_000 + int(found.stx_btime.tv_nsec)
