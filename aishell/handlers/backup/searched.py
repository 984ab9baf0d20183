"""The schema a PostgreSQL session searches first (its current schema) once a restore has
made the schema a backup's tables live in: read from the session's search_path as the
server reads it, since current_schema() passes over a schema not made yet.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from aishell.sqltext import text

# The path, and the role its "$user" entry stands for.
_PATH = "SELECT pg_catalog.current_setting('search_path'), current_user"
_EXISTING = "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(:names)"


def path_entries(setting: str) -> list[str]:
    """The schema names of a search_path setting, as the server splits it: entries
    separated by commas, a double-quoted one taken as written ("" a quote), any other
    with its ASCII letters in lower case."""
    entries: list[str] = []
    rest = setting.strip()
    while rest:
        if rest.startswith('"'):
            end = 1
            while (end := rest.find('"', end)) >= 0 and rest[end + 1 : end + 2] == '"':
                end += 2
            if end < 0:
                break  # an unclosed quote: the server never shows one
            entries.append(rest[1:end].replace('""', '"'))
            rest = rest[end + 1 :]
        else:
            entry = rest.split(",", 1)[0]
            entries.append("".join(c.lower() if c.isascii() else c for c in entry.strip()))
            rest = rest[len(entry) :]
        rest = rest.strip().removeprefix(",").strip()
    return entries


def first_searched(conn: Connection, made: str) -> str | None:
    """The first schema of the session's search_path that exists or is `made` (which the
    restore makes); None when there is none. A temporary schema holds no restored table
    and is passed over."""
    setting, user = conn.execute(text(_PATH)).one()
    names = [str(user) if e == "$user" else e for e in path_entries(str(setting))]
    names = [n for n in names if n != "pg_temp"]
    existing = {r[0] for r in conn.execute(text(_EXISTING), {"names": names})}
    return next((n for n in names if n == made or n in existing), None)
