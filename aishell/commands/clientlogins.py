"""Do the client programs a backup runs log in: each is started as a backup starts it
(aishell/targets/clientlogin.py: the login of aishell's own connection, nothing else)
and asked for as little as makes it log in. What it said is kept when it fails."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from aishell.errors import StepFailed
from aishell.targets.clientlogin import client_env, client_login
from aishell.targets.engines import Target

# What each program is asked: the least that makes it connect and read nothing of note.
# pg_dump writes an archive of no object, which pg_restore then loads (in a read-only
# session): both log in, neither changes anything.
_PG_DUMP = ["pg_dump", "-Fc", "--schema-only", "--exclude-schema=*"]
_PG_RESTORE = ["pg_restore", "--schema-only"]
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
    url = handle.engine.url
    database = str(url.database or "")
    limit = handle.config.connect_timeout_seconds + 30
    checks: list[list[str]] = []
    if handle.dialect == "postgresql":
        if shutil.which("pg_dump"):
            checks.append([*_PG_DUMP, database])
            if shutil.which("pg_restore"):
                checks.append([*_PG_RESTORE, "-d", database])
    else:
        for names, options in _MY_CHECKS:
            found = next((n for n in names if shutil.which(n)), None)
            if found:
                checks.append([found, *options, "--", database])
    results = []
    output: bytes | None = None
    for argv in checks:
        try:
            failed, output = _run(argv, output, handle, limit)
        except StepFailed as exc:
            failed, output = str(exc), None
        results.append({"program": argv[0], "logged_in": failed is None, "error": failed})
        if failed is not None and argv[0] == "pg_dump":
            break  # pg_restore has no archive to load
    return results


def _run(
    argv: list[str], stdin: bytes | None, handle: Target, limit: float
) -> tuple[str | None, bytes]:
    """What the program said when it failed (None when it logged in and ended well),
    and what it wrote."""
    with client_login(
        argv,
        client_env(),
        handle.engine.url,
        handle.config.connect_timeout_seconds,
        handle.config.write_timeout_seconds,
    ) as (started, env):
        try:
            done = subprocess.run(started, env=env, input=stdin, capture_output=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return f"did not end within {limit}s", b""
    said = done.stderr.decode(errors="replace").strip().splitlines()
    if done.returncode == 0:
        return None, done.stdout
    return (said[-1] if said else f"exit code {done.returncode}"), b""
