"""The state store's schema history: the Alembic revisions in migrations/, applied when
a store is opened (StateStore._migrate).

What opening finds, and what it does:
- alembic_version at HEAD_REVISION: nothing; this path reads two rows and does not
  import Alembic (an import that would cost every command a noticeable moment);
- no tables: a new store. On SQLite and PostgreSQL it is made at HEAD_REVISION at once
  (`create_current`): schema.py's tables, the baseline's schema_version row and
  alembic_version, without importing Alembic; a test keeps what it makes equal to what
  `upgrade head` makes of an empty store. On MySQL, by `upgrade head`;
- no alembic_version and meta.schema_version 6 (LEGACY_SCHEMA_VERSION): a store made
  before the history moved to Alembic, with the baseline's schema: stamped as the
  baseline, then `upgrade head`;
- no alembic_version and an older schema_version (1 to 5): `upgrade head`, whose
  baseline creates the tables missing, as the steps of that time did (each only added
  tables);
- an older revision this code knows: `upgrade head`;
- a revision it does not know, or a schema_version above 6: refused, since a newer
  aishell made it.
An existing SQLite file with tables in it is first copied aside as
<file>.before-<HEAD_REVISION> (mode 0600), through SQLite's backup API (which reads what
the -wal file holds too), and then upgraded in place: the copy a refused store's message
names (identity.py), beside those of `aishell doctor --backup-state`. Alembic runs on
the store's own connection, inside the store's transaction: on SQLite and PostgreSQL,
whose DDL is transactional, a failed upgrade leaves the store as it was.

A change of schema.py goes with a new revision, made with
`command.revision(alembic_config(), "what it does", rev_id="0002_...")` (from
alembic import command) and written by hand; HEAD_REVISION then names it.
"""

from __future__ import annotations

import errno
import importlib
import io
import logging
import math
import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aishell.dialects import family
from aishell.diskfaults import at_size_limit, size_limit_line
from aishell.errors import StateError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

    from aishell.state.signing import SigningKey

# The newest revision in migrations/versions (a test keeps the two equal).
HEAD_REVISION = "0012_runs_newest"
# The revision that holds the whole schema of the history before Alembic.
BASELINE_REVISION = "0001_baseline"
# The last meta.schema_version of the history before Alembic; the baseline keeps it
# there, so that an aishell of that time still opens the store.
LEGACY_SCHEMA_VERSION = 6
MIGRATIONS_FOLDER = Path(__file__).with_name("migrations")
# The key of the PostgreSQL advisory lock that openers of one store take while they
# upgrade it: the others wait, then find it upgraded.
_POSTGRESQL_LOCK = 0x61697368656C6C  # "aishell"
# MySQL's named locks are the server's: one per database, so that the openers of one
# store take turns and those of others do not wait.
_MYSQL_LOCK = "CONCAT('aishell-state-', MD5(DATABASE()))"


@dataclass(frozen=True)
class FoundSchema:
    """What a store's own tables say about its schema."""

    revision: str | None  # alembic_version's row; None before Alembic
    legacy_version: int  # meta.schema_version; 0 where there is none
    has_tables: bool

    @property
    def current(self) -> bool:
        return self.revision == HEAD_REVISION

    def described(self) -> str | None:
        """The schema as its history names it; None for a new store."""
        if self.revision is not None:
            return self.revision
        return f"schema_version {self.legacy_version}" if self.legacy_version else None


def read_schema(conn: Connection) -> FoundSchema:
    # Here, not at the top: the runs list reads HEAD_REVISION without SQLAlchemy.
    from sqlalchemy import inspect, select, text

    from aishell.state.schema import meta

    names = set(inspect(conn).get_table_names())
    revision = None
    if "alembic_version" in names:
        found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        revision = ", ".join(sorted(found)) or None
    legacy = None
    if meta.name in names:
        legacy = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    return FoundSchema(revision, int(legacy or 0), bool(names))


def refuse_newer(found: FoundSchema, location: str) -> None:
    """A schema_version newer than the history before Alembic came from an aishell
    newer than this one (the test of that history, kept word for word)."""
    if found.legacy_version > LEGACY_SCHEMA_VERSION:
        raise StateError(
            f"The state store {location} has schema version {found.legacy_version}, newer "
            f"than this aishell knows ({LEGACY_SCHEMA_VERSION}); upgrade aishell"
        )


def refuse_unknown(found: FoundSchema, location: str) -> None:
    """A revision that is not in migrations/ came from a newer aishell."""
    if found.revision is None or found.current:
        return
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    known = {revision.revision for revision in script.walk_revisions()}
    if found.revision not in known:
        raise StateError(
            f"The state store {location} is at schema revision {found.revision}, which this "
            f"aishell does not know (its newest is {HEAD_REVISION}): a newer aishell made it; "
            "upgrade aishell, or point state.url at another store"
        )


def prepare() -> None:
    """Import Alembic before taking the lock: on a busy machine the import alone can
    outlast the busy timeout of other processes waiting for the lock."""
    importlib.import_module("alembic.command")


def lock_schema(conn: Connection, wait_seconds: float, location: str) -> None:
    """Begin the upgrade's transaction holding the lock that other openers of the store
    wait for: SQLite's write lock, PostgreSQL's advisory lock of the transaction, and
    on MySQL a named lock of the session (each DDL statement there commits by itself),
    which unlock_schema lets go; one not had within `wait_seconds` is a StateError."""
    from sqlalchemy import text

    dialect = family(conn.dialect.name)
    if dialect == "sqlite":
        # The write lock up front: the busy timeout then covers the wait.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        conn.execute(
            text("SELECT pg_catalog.pg_advisory_xact_lock(:key)"), {"key": _POSTGRESQL_LOCK}
        )
    elif dialect == "mysql":
        wait = max(1, math.ceil(wait_seconds))
        got = conn.execute(text(f"SELECT GET_LOCK({_MYSQL_LOCK}, :wait)"), {"wait": wait})
        if got.scalar() != 1:
            raise StateError(
                f"The state store {location} is being made or upgraded by another process "
                f"(waited {wait} s for it); try again once it is done"
            )


def unlock_schema(conn: Connection) -> None:
    """Let go of MySQL's named lock (lock_schema); the others' end with their
    transaction."""
    if family(conn.dialect.name) == "mysql":
        from sqlalchemy import text

        conn.execute(text(f"SELECT RELEASE_LOCK({_MYSQL_LOCK})"))


def upgrade(
    conn: Connection,
    found: FoundSchema,
    location: str,
    path: Path | None,
    signing_key: SigningKey | None = None,
) -> None:
    """Bring the store to HEAD_REVISION inside the caller's transaction (lock_schema
    taken), first copying a SQLite file with tables in it aside. `signing_key`: the
    home's key, with which a revision signs what it finds (0002_signed_runs)."""
    refuse_newer(found, location)
    refuse_unknown(found, location)
    if path is not None and found.has_tables:
        copy_aside(path, location)
    from alembic import command

    config = alembic_config(conn)
    config.attributes["signing_key"] = signing_key
    if found.revision is None and found.legacy_version == LEGACY_SCHEMA_VERSION:
        command.stamp(config, BASELINE_REVISION)
    command.upgrade(config, "head")


def upgraded_by_revisions(url: str, location: str) -> None:
    """The store at `url` brought to head by the revisions alone, as an opener did before
    create_current: from an empty database, every revision in turn. What a store made
    at once is held against (its test, bench/new_store.py)."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            lock_schema(conn, 10, location)
            upgrade(conn, read_schema(conn), location, None)
    finally:
        engine.dispose()  # its session's end lets MySQL's schema lock go


def made_at_once(conn: Connection, found: FoundSchema) -> bool:
    """Is this a new store that create_current makes? One with no table at all, on an
    engine whose DDL is transactional (SQLite, PostgreSQL); MySQL commits each CREATE,
    so a store cut short there is left to the revisions, each of whose operations does
    only what is not there yet (revision_ops.py)."""
    return not found.has_tables and conn.dialect.name in ("sqlite", "postgresql")


def create_current(conn: Connection) -> None:
    """A new store (no table in its database) made at HEAD_REVISION inside the caller's
    transaction (lock_schema taken), as `upgrade head` would make it, without Alembic's
    import and in about half the time on SQLite (bench/new_store.py): schema.py's
    tables, the baseline's schema_version row, and alembic_version as Alembic keeps it."""
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, insert

    from aishell.state.schema import meta, metadata

    metadata.create_all(conn, checkfirst=False)
    conn.execute(insert(meta).values(key="schema_version", value=LEGACY_SCHEMA_VERSION))
    version = Table(
        "alembic_version",
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )
    version.create(conn, checkfirst=False)
    conn.execute(insert(version).values(version_num=HEAD_REVISION))


def copy_aside(path: Path, location: str) -> Path:
    """Copy the store to <file>.before-<HEAD_REVISION> next to it, replacing an older
    copy of that name (a failed upgrade left the file as that copy has it)."""
    copy = path.with_name(f"{path.name}.before-{HEAD_REVISION}")
    partial = copy.with_name(f"{copy.name}.partial")
    try:
        partial.unlink(missing_ok=True)
        # Private, as `doctor --backup-state` copies are: the store holds the runs' SQL.
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        with closing(sqlite3.connect(path)) as source, closing(sqlite3.connect(partial)) as target:
            source.backup(target)
        os.replace(partial, copy)
    except (OSError, sqlite3.Error) as exc:
        # The copy is as large as the store: a store past the limit is a copy past it.
        limited = at_size_limit(partial, path) or getattr(exc, "errno", None) == errno.EFBIG
        partial.unlink(missing_ok=True)
        if limited:
            doing = "copying the state store aside before upgrading its schema, to"
            raise StateError(size_limit_line(copy, doing)) from None
        raise StateError(
            f"Cannot copy the state store {location} aside to {copy} before upgrading its "
            f"schema ({exc}); make room or make its folder writable, and try again"
        ) from None
    return copy


def alembic_config(conn: Connection | None = None) -> Config:
    from alembic.config import Config

    # Quiet: Alembic tells which revisions it runs through logging, which is not for the
    # user's terminal (as sqlcheck.py does for sqlglot).
    logging.getLogger("alembic").setLevel(logging.ERROR)
    config = Config(stdout=io.StringIO())
    # The options are read through configparser, which treats % specially.
    config.set_main_option("script_location", str(MIGRATIONS_FOLDER).replace("%", "%%"))
    config.attributes["connection"] = conn
    return config
