"""Which database a connection reaches, whatever URL or path names it."""

from __future__ import annotations

import os

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

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
            text("SELECT datname, oid FROM pg_database WHERE datname = current_database()")
        ).one()
        try:
            system = conn.execute(
                text("SELECT system_identifier FROM pg_control_system()")
            ).scalar()
        except DBAPIError:
            # A server that keeps pg_control_system() from this role: the address then.
            if conn.in_transaction():
                conn.rollback()
            system = conn.execute(
                text(
                    "SELECT coalesce(host(inet_server_addr()), 'local') || ':' || "
                    "coalesce(inet_server_port()::text, '')"
                )
            ).scalar()
        return f"postgresql:{system}/{name}/{oid}"
    if dialect in ("mysql", "mariadb"):
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
