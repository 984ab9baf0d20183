"""Validating a backup: its chain's sha256 against the manifests, then a restore into a
scratch database (or file) whose tables, rows and contents are compared with the
manifest.

Every scratch file and scratch database is recorded in the state store before it is
made (aishell/scratch/), so a killed run's leftovers are removed later. A validation
that fails because of the server (its disk, the network) says nothing about the backup:
the step fails without judging it.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.errors import StepFailed
from aishell.files import make_private_file
from aishell.handlers.backup.apply import each_file, server_apply, sqlite_apply
from aishell.handlers.backup.decode import decode_chain, decodes
from aishell.handlers.backup.disk import SERVER_NO_SPACE, disk_full, says_no_space
from aishell.handlers.backup.elsewhere import elsewhere
from aishell.handlers.backup.inert import LeftOut
from aishell.handlers.backup.manifest import Chain, chain_of, read_manifest, recorded_backups
from aishell.handlers.backup.measure import (
    DECODED_FILE,
    NOT_COUNTED,
    RESTORED_COPY,
    Measured,
    checksummed,
    compare,
    measure_server,
    sqlite_armed,
    sqlite_checksums,
    sqlite_counts,
    sqlite_integrity,
    sqlite_tables,
)
from aishell.handlers.backup.pgincrement import SCHEMA_SHA256, schema_lines
from aishell.handlers.backup.processes import ToolFailed, pg_args, run_tool, server_env
from aishell.handlers.backup.sqliteincrement import schema_problems
from aishell.scratch.leftovers import DATABASE, SCRATCH_DATABASE_PREFIX
from aishell.sqltext import quote_identifier, text
from aishell.state.backups import DECODED, RESTORED
from aishell.tool.context import ToolContext
from aishell.tool.side import Side

NOT_JUDGED = "this says nothing about the backup, which stays unverified"

# How client tools say they could not reach the server: not the backup's fault.
_UNREACHABLE = ("could not connect", "connection to server", "can't connect", "lost connection")


# What a validation's second session sends besides reads: its scratch database made
# and dropped. From template0 on PostgreSQL: what a site keeps in template1 is not the
# backup's, and would come back in the restored copy as extra tables. With the source's
# encoding and locale, so that the copy's schema and rows read as the source's do (the
# values written as quoted names: CREATE DATABASE takes no bound parameters).
SCRATCH_DATABASE_SQL = {
    "postgresql": (
        "CREATE DATABASE {database} TEMPLATE template0 "
        "ENCODING {encoding} LC_COLLATE {collate} LC_CTYPE {ctype}",
        "DROP DATABASE IF EXISTS {database} WITH (FORCE)",
        "ALTER DATABASE {database} SET {setting} FROM CURRENT",
    ),
    "mysql": ("CREATE DATABASE {database}", "DROP DATABASE IF EXISTS {database}"),
}


# The source database's encoding, collation and character classes.
_PG_DATABASE_LOCALE = """
SELECT pg_catalog.pg_encoding_to_char(encoding), datcollate, datctype
FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()
"""


# The settings the source database gives its sessions (ALTER DATABASE ... SET, and ALTER
# ROLE ... IN DATABASE ... SET for aishell's role) that any session may change: its
# search_path, whose first schema holds the tables the manifest names, and what the
# rows read as (TimeZone, DateStyle, extra_float_digits...). A role's own settings
# reach the scratch database by themselves; the database's do not.
_PG_DATABASE_SETTINGS = """
SELECT DISTINCT s.name
FROM pg_catalog.pg_db_role_setting d
CROSS JOIN LATERAL pg_catalog.unnest(d.setconfig) AS c(entry)
JOIN pg_catalog.pg_settings s
  ON pg_catalog.lower(s.name) = pg_catalog.lower(pg_catalog.split_part(c.entry, '=', 1))
WHERE d.setdatabase = (
    SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()
  )
  AND d.setrole IN (0, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user))
  AND s.context = 'user'
ORDER BY 1
"""


def _settings_carried(conn: Connection, quoted_database: str) -> tuple[str, ...]:
    """The statements that give the scratch database the source's settings, each as
    aishell's session on the source runs with it (FROM CURRENT: no value is written
    into the statement): its sessions then search and read as the source's did."""
    if conn.dialect.name != "postgresql":
        return ()
    carry = SCRATCH_DATABASE_SQL["postgresql"][2]
    return tuple(
        carry.format(database=quoted_database, setting=quote_identifier(conn.dialect, name))
        for (name,) in conn.execute(text(_PG_DATABASE_SETTINGS))
    )


def _made_like(conn: Connection) -> dict[str, str]:
    """What the scratch database is made with besides its name: on PostgreSQL the source's
    encoding and locale."""
    if conn.dialect.name != "postgresql":
        return {}
    encoding, collate, ctype = conn.execute(text(_PG_DATABASE_LOCALE)).one()
    return {"encoding": str(encoding), "collate": str(collate), "ctype": str(ctype)}


@contextmanager
def scratch_server_database(
    conn: Connection, ctx: ToolContext, restoring: bool = False
) -> Iterator[tuple[str, Callable[[], None]]]:
    """A scratch database on the same server, made like the source (its encoding and
    locale), recorded before it is created, dropped afterwards; both by a second
    session of the step's, which may send nothing else. Its name, and what gives it the
    source's settings once restored into (a restore must not run under them: a
    database's default_transaction_read_only would refuse it). `restoring`: for a
    restore into the target (swap.py), not a validation."""
    name = f"{SCRATCH_DATABASE_PREFIX}{uuid.uuid4().hex[:10]}"
    dialect = conn.dialect.name
    create, drop = SCRATCH_DATABASE_SQL[family(dialect)][:2]
    like = _made_like(conn)
    quoted = quote_identifier(conn.dialect, name)
    carried = _settings_carried(conn, quoted)
    entry = ctx.scratch.record(DATABASE, name, dialect=dialect)
    side = Side(
        "its scratch database",
        writes=(create, drop),
        names={"database": name, **like},
        isolation_level="AUTOCOMMIT",
        after_stop=True,  # a stopped validation drops what it made
        exact=carried,
    )
    settings = {key: quote_identifier(conn.dialect, value) for key, value in like.items()}
    with ctx.side_session(side) as admin:

        def carry_settings() -> None:
            for sql in carried:
                admin.execute(text(sql))

        failed = False
        try:
            try:
                admin.execute(text(create.format(database=quoted, **settings)))
            except DBAPIError as exc:
                refused = _may_not_create(exc, conn, ctx, restoring)
                if refused is None:
                    raise
                raise refused from None
            yield name, carry_settings
        except BaseException:
            failed = True
            raise
        finally:
            try:
                admin.execute(text(drop.format(database=quoted)))
            except DBAPIError as exc:
                # A server whose disk is full may fail any statement, DROP included (it
                # must evict a page of the scratch database it cannot write): the ledger
                # keeps the name, and the next run on this target drops it.
                ctx.scratch.abandon(entry)
                ctx.record_event("scratch_kept", {"database": name, "why": str(exc.orig)[:300]})
                if not failed:
                    raise
            else:
                ctx.scratch.forget(entry)


def _may_not_create(
    exc: DBAPIError, conn: Connection, ctx: ToolContext, restoring: bool = False
) -> StepFailed | None:
    """The step's failure when aishell's login may not make the scratch database: the
    privilege it lacks and the statement that grants it, in one line; None for any
    other error. It says nothing about the backup."""
    orig = exc.orig
    if conn.dialect.name == "postgresql":
        if getattr(orig, "sqlstate", None) != "42501":
            return None
        role = str(conn.execute(text("SELECT current_user")).scalar())
        lacks = f"role {role} lacks CREATEDB"
        grant = f"ALTER ROLE {quote_identifier(conn.dialect, role)} CREATEDB"
    else:
        code = orig.args[0] if orig is not None and orig.args else None
        if code not in _MY_DENIED:
            return None
        lacks = f"the login of target '{ctx.target}' may not create databases {_MY_SCRATCH_PATTERN}"
        grant = (
            f"GRANT CREATE, DROP ON {quote_identifier(conn.dialect, _MY_SCRATCH_PATTERN)}.* TO it"
        )
    if restoring:
        return StepFailed(
            f"Cannot restore: {lacks}, which a restore needs to load the backup into a "
            f"scratch database on the server of target '{ctx.target}' before it swaps it "
            f"in; {grant}"
        )
    return StepFailed(
        f"Cannot validate by restoring: {lacks}, which a validation needs to restore the "
        f"backup into a scratch database on the server of target '{ctx.target}'; {grant}, or "
        f"validate with --quick (decoded, not restored); {NOT_JUDGED}"
    )


# MySQL's refusals of a CREATE DATABASE to a login without the right: access denied to
# the database, a privilege the operation needs.
_MY_DENIED = (1044, 1227)
# The scratch databases' names as a GRANT's pattern (an underscore matches any one
# character unless escaped).
_MY_SCRATCH_PATTERN = SCRATCH_DATABASE_PREFIX.replace("_", "\\_") + "%"


def _pg_schema_problems(
    path: Path, url: URL, database: str, ctx: ToolContext, left: LeftOut
) -> list[str]:
    """The archive's schema, less what the validation left out (the same TOC list),
    against the schema of what it restored into."""
    env = server_env(url)
    archived = run_tool(
        [
            "pg_restore",
            "--schema-only",
            "--no-owner",
            "-L",
            str(left.list_file),
            "-f",
            "-",
            str(path),
        ],
        env,
        ctx,
    )
    restored = run_tool(
        ["pg_dump", "--schema-only", "--no-owner", *pg_args(url), database], env, ctx
    )
    expected = schema_lines(archived.stdout.decode(errors="replace"))
    actual = schema_lines(restored.stdout.decode(errors="replace"))
    if expected != actual:
        missing = [line for line in expected if line not in actual][:3]
        return [f"the restored schema differs from the archive's: {missing or 'order'}"]
    return []


def _pg_chain_schema_problems(
    chain: Chain, url: URL, database: str, ctx: ToolContext, left: LeftOut
) -> list[str]:
    """The restored schema against the one the chain's newest backup was taken with. An
    increment holds the schema of its parent (the run takes a whole backup when it
    changed: pgincrement.py), so the chain's must be its full backup's: each manifest
    must say so, and the copy must hold the full backup's schema."""
    base = chain[0][0]
    if len(chain) > 1:
        digests = [manifest.get(SCHEMA_SHA256) for _, manifest in chain]
        if None in digests:
            return [
                "the chain's manifests do not record the schema each backup was taken with "
                "(taken before aishell compared it), so the chain's schema cannot be proven; "
                "take a full backup"
            ]
        if len(set(digests)) > 1:
            changed = next(link.name for link, m in chain if m[SCHEMA_SHA256] != digests[0])
            return [
                f"the schema {changed} was taken with differs from that of {base.name}, "
                "which the chain restores: the chain does not restore the database as it "
                "was; take a full backup"
            ]
        left.pg_list(base)  # the full backup's TOC, less what the validation left out
    return _pg_schema_problems(base, url, database, ctx, left)


def _validate_sqlite(
    path: Path, chain: Chain, problems: list[str], ctx: ToolContext
) -> Measured | None:
    """Apply the chain to a scratch copy beside the backup and measure the copy."""
    manifest = chain[-1][1]
    scratch = path.with_name(path.name + f".verify-{uuid.uuid4().hex[:6]}")
    with ctx.scratch.file(scratch):
        try:
            copy = sqlite3.connect(make_private_file(scratch))
        except (sqlite3.Error, OSError) as exc:
            raise StepFailed(
                f"Cannot make the scratch copy {scratch}: {exc}; {NOT_JUDGED}"
            ) from None
        try:
            for link, link_manifest, progress, before in each_file(chain, ctx):
                sqlite_apply(copy, link, link_manifest, progress, before)
            code, tripped = sqlite_armed(copy)
            check = sqlite_integrity(copy, code)
            if check != "ok":
                problems.append(f"integrity_check: {check}")
                return None
            problems += schema_problems(copy, chain)
            present = sqlite_tables(copy)
            counts = sqlite_counts(copy, [t for t in manifest["tables"] if t in present])
            sums = sqlite_checksums(copy, checksummed(manifest, present), code)
            tripped()
            return Measured(set(present), counts, sums)
        except (sqlite3.Error, OSError) as exc:
            if says_no_space(exc):
                raise disk_full(scratch, "writing the scratch copy", NOT_JUDGED) from None
            problems.append(f"the backup cannot be read: {exc}")
            return None
        finally:
            copy.close()


def _server_at_fault(exc: ToolFailed, ctx: ToolContext, name: str) -> StepFailed | None:
    """The step's failure when a restore into the scratch database failed because of the
    server (its disk, the network); None when the backup itself does not restore."""
    if says_no_space(exc, SERVER_NO_SPACE):
        return StepFailed(
            f"The server of target '{ctx.target}' ran out of disk space restoring "
            f"into the scratch database {name} ({exc.program}: {exc.cause}); "
            f"free space on the server and retry; {NOT_JUDGED}"
        )
    if any(phrase in exc.stderr.lower() for phrase in _UNREACHABLE):
        return StepFailed(
            f"The server of target '{ctx.target}' could not be reached while "
            f"restoring into the scratch database {name} ({exc.program}: "
            f"{exc.cause}); {NOT_JUDGED}"
        )
    return None


def _validate_server(
    path: Path, chain: Chain, problems: list[str], ctx: ToolContext, left: LeftOut
) -> Measured | None:
    """Restore the chain into a scratch database on the target's server, inert (what
    would run the database's code is left out and noted in `left`), and measure it. A
    restore that fails because of the server (its disk, the network) says nothing
    about the backup: the step fails without judging it."""
    conn = ctx.connection
    dialect = chain[-1][1]["dialect"]
    url = conn.engine.url
    try:
        with scratch_server_database(conn, ctx) as (name, carry_settings):
            try:
                for link, link_manifest, progress, before in each_file(chain, ctx):
                    server_apply(
                        dialect,
                        url,
                        name,
                        link,
                        link_manifest,
                        False,
                        ctx,
                        progress,
                        before,
                        inert=left,
                    )
            except ToolFailed as exc:
                failure = _server_at_fault(exc, ctx, name)
                if failure is not None:
                    raise failure from None
                problems.append(f"the backup does not restore: {exc}")
                return None
            carry_settings()
            measured = measure_server(url, name, comparable(chain[-1][1], left), ctx)
            measured.tables -= left.tables
            if dialect == "postgresql":
                problems += _pg_chain_schema_problems(chain, url, name, ctx, left)
            return measured
    except DBAPIError as exc:
        if not says_no_space(exc, SERVER_NO_SPACE):
            raise
        said = str(exc.orig).strip().splitlines()
        raise StepFailed(
            f"The server of target '{ctx.target}' ran out of disk space during the validation "
            f"({said[0] if said else exc}); free space on the server and retry; {NOT_JUDGED}"
        ) from None


def comparable(manifest: Mapping[str, Any], left: LeftOut) -> dict[str, Any]:
    """The manifest without the tables whose data the validation left out: those are
    neither measured (their stored values would run user code) nor compared."""
    trimmed = dict(manifest)
    trimmed["tables"] = {t: n for t, n in manifest["tables"].items() if t not in left.tables}
    if manifest.get("checksums"):
        trimmed["checksums"] = {
            t: c for t, c in manifest["checksums"].items() if t not in left.tables
        }
    return trimmed


def _recorded(path: Path, catalog: list[dict[str, Any]], ctx: ToolContext) -> dict[str, Any]:
    """The catalog's row of each backup by its real path; refuses a file the catalog
    did not record (nothing about it could be kept), or one another host took that this
    machine cannot read."""
    if not path.is_file():
        raise StepFailed(elsewhere(str(path), catalog) or f"Backup file {path} does not exist")
    recorded = recorded_backups(catalog)
    if os.path.realpath(path) not in recorded:
        raise StepFailed(
            f"Backup file {path} is not in the backup catalog of target '{ctx.target}': "
            "aishell validates only the backups it recorded (`aishell backups list`)"
        )
    return recorded


def _measure(
    path: Path, chain: Chain, quick: bool, problems: list[str], ctx: ToolContext, left: LeftOut
) -> Measured | None:
    """The chain measured: restored into a scratch copy (a scratch file, or a scratch
    database on the server), or with `quick` decoded whole without a restore."""
    if not chain:
        return None
    if chain[-1][1]["dialect"] == "sqlite":
        return _validate_sqlite(path, chain, problems, ctx)
    if quick:
        return decode_chain(chain, problems, ctx)
    with ctx.scratch.file(left.list_file):
        return _validate_server(path, chain, problems, ctx, left)


def validate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    path = Path(params["backup_path"])
    recorded = _recorded(path, ctx.backup_catalog(), ctx)
    manifest = read_manifest(path)
    # What a quick validation can do without a restore: decode a server's dump. SQLite's
    # copy is the database itself, restored and measured quick or not.
    quick = bool(params.get("quick")) and decodes(manifest["dialect"])
    proof = DECODED if quick else RESTORED
    result: dict[str, Any] = {"backup_path": str(path), "quick": quick, "proof": proof}
    problems: list[str] = []
    try:
        chain = chain_of(path, recorded)
    except StepFailed as exc:
        chain = []
        problems.append(str(exc))
    left = LeftOut(path.with_name(path.name + f".verify-{uuid.uuid4().hex[:6]}.list"))
    measured = _measure(path, chain, quick, problems, ctx, left)
    if measured is not None:
        said = DECODED_FILE if quick else RESTORED_COPY
        problems += compare(comparable(manifest, left), measured, said)
    ok = not problems
    result.update(
        {
            "ok": ok,
            "problems": problems,
            "chain": [link.name for link, _ in chain],
            "tables_compared": len(measured.counts) if measured else 0,
            "checksums_compared": len(measured.checksums) if measured else 0,
            # What the scratch copy left out so as to run none of the database's code.
            "not_restored": left.not_restored,
            "not_validated": sorted(left.tables),
            # What no read of aishell's can open: checked present, never counted.
            **({NOT_COUNTED: manifest[NOT_COUNTED]} if manifest.get(NOT_COUNTED) else {}),
        }
    )
    # Only a restore marks the backup verified; a quick one's proof says what it checked.
    # What the scratch copy left out goes with it: a restore into a target runs it, and
    # the proof does not cover it (`aishell backups show` says so).
    result["verified_backup"] = {
        "path": str(path),
        "ok": ok,
        "problems": problems,
        "proof": proof,
        "not_restored": left.not_restored,
    }
    if not ok:
        raise StepFailed(
            f"Backup {path.name} failed validation: {'; '.join(problems[:3])}", details=result
        )
    return result
