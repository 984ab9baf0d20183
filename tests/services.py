"""Scratch databases on the local PostgreSQL and MariaDB servers.

A test that needs a server skips with a one-line reason when none answers, except
under AISHELL_REQUIRE_SERVICES=1 (set by .ci/run), where it fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MYSQL_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/test"


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable on 127.0.0.1: {str(exc).strip().splitlines()[0]}"
    if os.environ.get("AISHELL_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def scratch_postgresql() -> Iterator[str]:
    """A new database on the local PostgreSQL, dropped afterwards; yields its URL."""
    name = f"aishell_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server: skip or fail, as the environment says
        _unavailable("PostgreSQL", exc)
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def scratch_mysql() -> Iterator[str]:
    """A new database on the local MariaDB, dropped afterwards; yields its URL."""
    name = f"aishell_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(MYSQL_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except Exception as exc:
        _unavailable("MariaDB", exc)
    url = f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def engine(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT")
