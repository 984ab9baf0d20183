"""Is a target ready for the agents: reachable, the privileges each agent needs, the
client programs backups run, and room where its backups go. Each problem comes with
its fix, one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from aishell.agents.available import declared_privileges
from aishell.commands.clientlogins import client_logins
from aishell.config.models import Config
from aishell.errors import AishellError, ConfigError, TargetLocked, TargetUnreachable
from aishell.handlers.mysql.catalog import database_size as mysql_size
from aishell.handlers.postgresql.catalog import database_size as postgresql_size
from aishell.handlers.server import describe_server
from aishell.handlers.sqlite.catalog import database_size as sqlite_size
from aishell.targets.clientlogin import client_env
from aishell.targets.engines import open_target

# The client programs the backup agent runs, per dialect: each need is met by the first
# of its names found on PATH.
PROGRAMS: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "postgresql": (
        (("pg_dump",), "backups"),
        (("pg_restore",), "backup validation and restores"),
    ),
    "mysql": (
        (("mariadb-dump", "mysqldump"), "backups"),
        (("mariadb", "mysql"), "backup validation and restores"),
    ),
    "sqlite": (),  # SQLite's own backup API, in the process
}
INSTALL = {
    "postgresql": "install the PostgreSQL client programs (Debian/Ubuntu: apt-get install "
    "postgresql-client; RHEL/Fedora: dnf install postgresql), or add their folder to PATH",
    "mysql": "install the MariaDB client programs (Debian/Ubuntu: apt-get install "
    "mariadb-client; RHEL/Fedora: dnf install mariadb), or add their folder to PATH",
}


def target_readiness(config: Config, name: str) -> dict[str, Any]:
    """One target's readiness: what was found, and `problems`, each with its fix."""
    found: dict[str, Any] = {"target": name, "reachable": False, "problems": []}
    problems: list[dict[str, str]] = found["problems"]
    try:
        handle = open_target(config, name, read_only=True)
    except AishellError as exc:
        problems.append(_problem(name, str(exc), _unopened_fix(config, name, exc)))
        return found
    found["dialect"] = handle.dialect
    try:
        conn = handle.connect()
    except TargetLocked as exc:
        handle.close()
        problems.append(_problem(name, str(exc), "look again once the other connection ends"))
        return found
    except TargetUnreachable as exc:
        handle.close()
        fix = (
            f"start the server, or correct targets.{name}.url in {config.path} (host, port, "
            "user, database) and the password (password_env, ~/.pgpass or an option file)"
        )
        if handle.sqlite_path is not None:
            # No server and no password: the file, its folder or its journal, as said.
            fix = (
                "do what the problem says of the file, its folder or its journal, or "
                f"correct targets.{name}.url in {config.path} if {handle.sqlite_path} is "
                "not the database"
            )
        problems.append(_problem(name, str(exc), fix))
        return found
    try:
        found.update(_inspect(config, name, handle.dialect, conn))
        if handle.login is not None:
            found["login"] = handle.login.shown()
            found["client_logins"] = client_logins(handle)
            found["problems"] += _client_problems(name, found["login"], found["client_logins"])
    finally:
        conn.close()
        handle.close()
    return found


def _client_problems(
    name: str, login: dict[str, Any], clients: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """A client program that cannot log in with the login aishell's connection used."""
    return [
        _problem(
            name,
            f"{client['program']} cannot log in as {login['user']} with the password from "
            f"{login['password_from']}, which aishell's own connection used: {client['error']}",
            f"check that {client['program']} reaches {login['host'] or 'localhost'} as aishell "
            "does, and that the login has the rights the client needs",
        )
        for client in clients
        if not client["logged_in"]
    ]


def _inspect(config: Config, name: str, dialect: str, conn: Connection) -> dict[str, Any]:
    info = describe_server(conn, declared_privileges(conn.dialect.name))
    problems = [
        _problem(
            name,
            f"{need['agent']} lacks {need['privilege']}, needed for {need['needed_for']}: "
            f"{need['missing']}",
            need.get("fix") or f"grant it to {need['role']}",
        )
        for need in info["needs"]
        if need["missing"] and not need.get("optional")
    ]
    server_major = _major(str(info["server_version"]))
    programs = [_program(dialect, names, needed_for) for names, needed_for in PROGRAMS[dialect]]
    for program in programs:
        found = _program_problems(dialect, program, server_major)
        problems += [_problem(name, p, f) for p, f in found]
    backups = _backup_room(config, name, _database_size(dialect, conn))
    problems += [_problem(name, p, f) for p, f in backups.pop("problems")]
    return {
        "reachable": True,
        "server_version": info["server_version"],
        "needs": info["needs"],
        "warnings": info["warnings"],
        "programs": programs,
        "backups": backups,
        "problems": problems,
    }


def _problem(target: str, problem: str, fix: str) -> dict[str, str]:
    return {"target": target, "problem": problem, "fix": fix}


def _unopened_fix(config: Config, name: str, exc: AishellError) -> str:
    target = config.main.targets.get(name)
    if target is not None and target.password_env and target.password_env in str(exc):
        return f"export {target.password_env} with the password of targets.{name}"
    if isinstance(exc, ConfigError):
        return f"correct targets.{name} in {config.path}"
    # A SQLite file that is not there: the demo makes one, or the URL is wrong.
    return (
        f"`aishell demo --target {name}` makes a demo database there, or correct "
        f"targets.{name}.url in {config.path}"
    )


def _program(dialect: str, names: tuple[str, ...], needed_for: str) -> dict[str, Any]:
    """The first of names on PATH, with its version."""
    for candidate in names:
        path = shutil.which(candidate)
        if path is None:
            continue
        try:
            done = subprocess.run(
                [path, "--version"],
                env=client_env(),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            version = (done.stdout.strip().splitlines() or [""])[0]
        except (OSError, subprocess.TimeoutExpired) as exc:
            version = f"(--version failed: {exc})"
        return {"name": candidate, "path": path, "version": version, "needed_for": needed_for}
    return {"name": " or ".join(names), "path": None, "version": None, "needed_for": needed_for}


def _program_problems(
    dialect: str, program: dict[str, Any], server_major: int | None
) -> list[tuple[str, str]]:
    if program["path"] is None:
        return [
            (
                f"{program['name']} is not on PATH ({os.environ.get('PATH', '')}); "
                f"{program['needed_for']} need it",
                INSTALL[dialect],
            )
        ]
    too_old = _TOO_OLD.get(dialect)
    return too_old(program, server_major) if too_old else []


def _postgresql_too_old(program: dict[str, Any], server_major: int | None) -> list[tuple[str, str]]:
    client = _major(program["version"])
    # pg_dump refuses a server newer than itself; pg_restore may not read its archives.
    if client and server_major and client < server_major:
        return [
            (
                f"{program['name']} {client} ({program['path']}) is older than the server "
                f"(PostgreSQL {server_major}) and refuses it",
                f"install the PostgreSQL {server_major} client programs "
                f"(postgresql-client-{server_major}) and put them first on PATH",
            )
        ]
    return []


# What is wrong with a client program older than the server, by dialect; a dialect not
# named here has no such rule.
_TOO_OLD: dict[str, Callable[[dict[str, Any], int | None], list[tuple[str, str]]]] = {
    "postgresql": _postgresql_too_old,
}


def _major(version: str) -> int | None:
    """The major version in a version line: 15 of "pg_dump (PostgreSQL) 15.5 (Debian)"."""
    match = re.search(r"(\d+)\.\d+", version)
    return int(match.group(1)) if match else None


# How big the database is, by the target's dialect.
_DATABASE_SIZE: dict[str, Callable[[Connection], dict[str, Any]]] = {
    "postgresql": postgresql_size,
    "mysql": mysql_size,
    "sqlite": sqlite_size,
}


def _database_size(dialect: str, conn: Connection) -> int | None:
    size_of = _DATABASE_SIZE[dialect]
    try:
        return int(size_of(conn)["size_bytes"])
    except Exception:  # a size only sharpens the disk check; its absence is said
        return None


def _backup_room(config: Config, name: str, size: int | None) -> dict[str, Any]:
    """Where the target's backups go, the free space there, and what is wrong with it."""
    folder = config.backup_dir / name
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(existing)
    problems: list[tuple[str, str]] = []
    setting = f"or set backup_dir in {config.path} to another folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        problems.append(
            (
                f"backups go to {folder}, and {existing} is not writable",
                f"make it writable, {setting}",
            )
        )
    if size is not None and usage.free < size:
        problems.append(
            (
                f"backups go to {folder}: {usage.free:,} bytes free there, the database is "
                f"{size:,} bytes",
                f"free space on that file system, {setting} on a larger disk",
            )
        )
    return {
        "folder": str(folder),
        "free_bytes": usage.free,
        "database_bytes": size,
        "problems": problems,
    }
