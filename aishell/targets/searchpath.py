"""A PostgreSQL session whose names the database cannot redirect.

A database (or a role) can set a search_path that puts its own schema before
pg_catalog (`public, pg_catalog`), and then a function of the same name there, such as
`public.current_setting`, runs in place of the catalog's in every statement that names
it unqualified: aishell's own catalog queries, and the maintenance it sends
(CVE-2018-1058). PostgreSQL searches pg_catalog first unless the path names it, and
temporary objects first unless the path names pg_temp; so every session aishell opens
keeps the database's path without either, then pg_temp last, as pg_dump pins its own.
The current schema (the first of the path), which aishell's tools work in, stays the
database's.
"""

from __future__ import annotations

from typing import Any

# SQLAlchemy's psycopg dialect looks hstore up on a first connection with psycopg's query
# `t.oid = %(name)s::regtype`, an operator a database's own `=(oid, regtype)` would
# take; aishell sends no hstore value.
NATIVE_HSTORE = False
# The pinned path, in the pool record's info (the Connection's info).
SEARCH_PATH_KEY = "aishell_search_path"
# The session's role and the settings the server reports with every answer, as the
# session began: a function a read runs may change them for the steps after it
# (access.session_changed compares).
SESSION_START_KEY = "aishell_session_start"
REPORTED = ("TimeZone", "DateStyle", "IntervalStyle", "is_superuser", "session_authorization")
_SYSTEM = {"pg_catalog", "pg_temp"}


def _entries(path: str) -> list[str]:
    """The entries of a search_path setting, as written (quoted ones keep their quotes)."""
    entries: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in path:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            entries.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    entries.append("".join(current).strip())
    return [e for e in entries if e]


def _is_system(entry: str) -> bool:
    name = entry[1:-1].replace('""', '"') if entry.startswith('"') else entry.lower()
    return name in _SYSTEM or name.startswith("pg_temp_")


def pinned(path: str) -> str:
    """The database's search_path with pg_catalog and pg_temp taken out (so the server
    searches the catalog first), and pg_temp put last."""
    return ", ".join([e for e in _entries(path) if not _is_system(e)] + ["pg_temp"])


def pin_search_path(dbapi_conn: Any, record: Any) -> None:
    """Pin a new connection's search_path (see the module's docstring), and keep its
    role, reported settings, lc_monetary and extra_float_digits as it began
    (SESSION_START_KEY)."""
    cursor = dbapi_conn.cursor()
    try:
        # Functions named by schema, and CURRENT_USER, which is a keyword: nothing a
        # database could define runs.
        cursor.execute(
            "SELECT pg_catalog.current_setting('search_path'), CURRENT_USER, "
            "pg_catalog.current_setting('lc_monetary'), "
            "pg_catalog.current_setting('extra_float_digits')"
        )
        row = cursor.fetchone()
        path = pinned(str(row[0]) if row else "")
        cursor.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (path,))
    finally:
        cursor.close()
    dbapi_conn.commit()  # a setting made in a transaction rolled back would be undone
    record.info[SEARCH_PATH_KEY] = path
    status = getattr(getattr(dbapi_conn, "info", None), "parameter_status", None)
    reported = {name: status(name) for name in REPORTED} if callable(status) else {}
    # lc_monetary: what money's text in an archive file is read back in (exactread.py).
    record.info[SESSION_START_KEY] = {
        "user": row[1] if row else None,
        "reported": reported,
        "lc_monetary": row[2] if row else None,
        # How many digits a float is sent with, which the server does not report with
        # its answers: a function may change it (access.session_changed compares).
        "extra_float_digits": row[3] if row else None,
    }


def url_dialect(url: Any) -> str:
    """The dialect a URL (a string or a sqlalchemy URL) names: postgresql for postgresql+psycopg."""
    from sqlalchemy.engine import make_url

    return str(make_url(url).get_backend_name())


def pinned_engine(url: Any, **options: Any) -> Any:
    """create_engine(url, **options) whose PostgreSQL sessions are pinned (a session
    aishell opens outside a target: a restore's drops, a copy's measurements), and whose
    MySQL sessions send their password as a target's do."""
    from sqlalchemy import create_engine, event

    if url_dialect(url) == "postgresql":
        options.setdefault("use_native_hstore", NATIVE_HSTORE)
    engine = create_engine(url, **options)
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", pin_search_path, insert=True)
    elif engine.dialect.name == "mysql":
        from aishell.targets.mysqltls import send_utf8_password

        send_utf8_password(engine)
    return engine
