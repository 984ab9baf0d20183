"""Do the client programs a backup runs log in: each is started as a backup starts it
(aishell/targets/clientlogin.py: the login of aishell's own connection, nothing else)
and asked for as little as makes it log in. What it said is kept when it fails.

A check only looks: nothing it asks of the server writes or waits for a lock another
session holds. Each program runs as a backup's do (aishell/scratch/children.py): in a
process group of its own that dies with aishell and is killed at its time limit, and
then its session on the server is ended (handlers/backup/sessions.py), so neither the
program nor a backend of its outlives the check.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from typing import Any

from aishell.errors import StepFailed, StepTimeout
from aishell.handlers.backup.sessions import ClientSession, engine_opener
from aishell.scratch.children import run_child
from aishell.scratch.ledger import Ledger
from aishell.targets.clientlogin import client_env, client_login
from aishell.targets.engines import Target
from aishell.units import took

# What each program is asked: the least that makes it connect and read nothing of note.
# pg_dump writes an archive of no table (it still lists the database's extensions), in
# a read-only transaction of its own. pg_restore is given that archive and a list of
# what to restore that is empty (-L): it logs in, sets its session's settings and
# restores nothing, in a session made read-only besides, so that nothing it could send
# writes. (A restore of the archive itself would run CREATE EXTENSION and COMMENT ON
# EXTENSION: catalog writes that wait for another session's lock on the extension and
# fail for a role that does not own it.)
_PG_DUMP = ["pg_dump", "-Fc", "--schema-only", "--exclude-schema=*"]
_PG_RESTORE = ["pg_restore", "--schema-only", f"--use-list={os.devnull}"]
_PG_READ_ONLY = "-c default_transaction_read_only=on"
_MY_CHECKS = (
    # --skip-lock-tables: by default it would LOCK TABLES ... READ every table, data or not.
    (
        ("mariadb-dump", "mysqldump"),
        ["--skip-lock-tables", "--no-data", "--no-create-info", "--skip-triggers"],
    ),
    (("mariadb", "mysql"), ["--batch", "-e", "SELECT 1"]),
)


def client_logins(handle: Target) -> list[dict[str, Any]]:
    """For each client program on PATH: whether it logged in, and what it said if not."""
    results = []
    output: bytes | None = None
    for argv in _checks(handle):
        try:
            failed, output = _run(argv, output, handle)
        except StepFailed as exc:
            failed, output = str(exc), None
        results.append({"program": argv[0], "logged_in": failed is None, "error": failed})
        if failed is not None and argv[0] == "pg_dump":
            break  # pg_restore has no archive to read
    return results


def _checks(handle: Target) -> list[list[str]]:
    """The command line of each check whose program is on PATH."""
    database = str(handle.engine.url.database or "")
    checks: list[list[str]] = []
    if handle.dialect == "postgresql":
        if shutil.which("pg_dump"):
            # Its lock wait bounded too, should it ever lock a table.
            wait = f"--lock-wait-timeout={handle.config.lock_timeout_ms}"
            checks.append([*_PG_DUMP, wait, database])
            if shutil.which("pg_restore"):
                checks.append([*_PG_RESTORE, "-d", database])
        return checks
    for names, options in _MY_CHECKS:
        found = next((n for n in names if shutil.which(n)), None)
        if found:
            checks.append([found, *options, "--", database])
    return checks


def _run(argv: list[str], stdin: bytes | None, handle: Target) -> tuple[str | None, bytes]:
    """What the program said when it failed (None when it logged in and ended well),
    and what it wrote. It has the target's own bounds: connect_timeout_seconds to log
    in, then read_timeout_seconds for what it asks (the least that makes it log in)."""
    config = handle.config
    limit = config.connect_timeout_seconds + config.read_timeout_seconds
    with client_login(
        argv,
        client_env(),
        handle.engine.url,
        handle.config.connect_timeout_seconds,
        handle.config.write_timeout_seconds,
    ) as (started, env):
        session = ClientSession(engine_opener(handle.engine), handle.dialect, argv[0])
        if handle.dialect == "postgresql":
            session.name = f"aishell doctor {argv[0]} {secrets.token_hex(6)}"
            given = env.get("PGOPTIONS", "")
            env = env | {"PGAPPNAME": session.name, "PGOPTIONS": f"{given} {_PG_READ_ONLY}"}
        try:
            done = _started(started, env, stdin, limit, session)
        except StepTimeout:
            return (
                f"the server stopped answering: {argv[0]} did not end within {took(limit, None)} "
                f"(targets.{handle.name}.connect_timeout_seconds + read_timeout_seconds)"
            ), b""
    said = done.stderr.decode(errors="replace").strip().splitlines()
    if done.returncode == 0:
        return None, done.stdout
    return (said[-1] if said else f"exit code {done.returncode}"), b""


def _started(
    argv: list[str], env: dict[str, str], stdin: bytes | None, limit: float, session: ClientSession
) -> subprocess.CompletedProcess[bytes]:
    """The program run to its end, reading `stdin` (a file with no name, gone when
    closed); killed with its group, and its server session ended, if it fails or runs
    past `limit`."""
    with tempfile.TemporaryFile() as given:
        given.write(stdin or b"")
        given.seek(0)
        try:
            return run_child(
                argv,
                env=env,
                ledger=Ledger(),
                stdin=given,
                deadline=time.monotonic() + limit,
                watch=session.watching(None),
            )
        except BaseException:
            session.end()
            raise
