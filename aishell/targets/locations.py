"""Where a new target is, as a DBA writes it, turned into the URL a target keeps.

Taken: a URL (`postgresql://app@db1/shop`, `mysql://app@db2/orders`, `sqlite:///x.db`,
with or without a driver), a libpq keyword DSN (`host=db1 port=5432 dbname=shop
user=app sslmode=require`), or a pg_service.conf service. The URL gets aishell's
driver for its engine (psycopg, PyMySQL). A password is never taken: a config file is
read by whoever may read it, so the password stays in password_env, ~/.pgpass, the
service file or ~/.my.cnf, where the clients find it too (targets/logins.py).
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from aishell.config.dburl import DRIVERS, is_secret_key, parse_url
from aishell.errors import UsageError
from aishell.terminal import printable

# libpq's keywords for the login; the others (sslmode, ...) ride in the URL's query.
_LOGIN = {"host", "port", "dbname", "user"}
_NO_PASSWORD = (
    "a target's file never holds a password: give --password-env NAME (an environment "
    "variable), or put it in ~/.pgpass, the service file or ~/.my.cnf, where the clients "
    "find it too"
)


def target_url(location: str | None, service: str | None) -> str:
    """The URL of a target at `location` (a URL or a libpq DSN) or of a PostgreSQL
    `service`; a UsageError naming what is wrong otherwise."""
    if service is not None:
        if location:
            raise UsageError("Give either a URL or DSN, or --service, not both")
        if not service.strip() or any(c.isspace() or c in "=[]" for c in service):
            raise UsageError(f"--service {service!r} is not a service name")
        return _render(URL.create(DRIVERS["postgresql"], query={"service": service}))
    if not location or not location.strip():
        raise UsageError("Give where the target is: a URL, a libpq DSN, or --service NAME")
    if "://" in location or location.startswith("sqlite:"):
        return _from_url(location)
    if "=" in location:
        return _from_dsn(location)
    # Never repeated: what was typed may hold a password (app:secret@db1/shop).
    raise UsageError(
        "The location is neither a URL (postgresql://user@host/db, mysql://user@host/db, "
        "sqlite:///path.db) nor a libpq DSN (host=... dbname=... user=...)"
    )


def driver_replaced(location: str | None) -> str | None:
    """What a URL that names another driver for its engine (`postgresql+psycopg2://`,
    `mysql+mysqldb://`) is written with instead, in words; None for any other location.
    aishell's drivers take the same URLs, so it is said, not refused."""
    scheme, found, _ = (location or "").partition("://")
    engine, plus, driver = scheme.partition("+")
    if not found or not plus or engine not in DRIVERS or DRIVERS[engine] == scheme:
        return None
    ours = DRIVERS[engine]
    return (
        f"the URL names the driver {printable(repr(driver[:40]))}; aishell connects with "
        f"its own, {ours.partition('+')[2] or ours}, which takes the same URL: written as "
        f"{ours}://"
    )


def _from_url(location: str) -> str:
    try:
        url = make_url(location)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # Not repeated: the URL may hold a password.
        raise UsageError("The location is not a database URL (is its port a number?)") from None
    if url.port is not None and parse_url(location) is None:
        # make_url reads the port with int(), which takes fullwidth digits and "5_432".
        raise UsageError("The location's port is not a number in the digits 0-9")
    engine = url.get_backend_name()
    if engine not in DRIVERS:
        known = ", ".join(sorted({"postgresql", "mysql", "mariadb", "sqlite"}))
        raise UsageError(f"Unknown engine {engine!r} in the URL; aishell knows {known}")
    if url.password is not None or any(is_secret_key(key) for key in url.query):
        raise UsageError(f"The URL has a password: {_NO_PASSWORD}")
    if DRIVERS[engine] == DRIVERS["mysql"]:
        from aishell.targets.mysqltls import query_problem  # PyMySQL: MySQL URLs only

        problem = query_problem(url.query)
        if problem is not None:
            raise UsageError(f"The location is not one aishell can use: {problem}")
    return _render(url.set(drivername=DRIVERS[engine]))


def _from_dsn(location: str) -> str:
    from psycopg import conninfo

    try:
        words = conninfo.conninfo_to_dict(location)
    except Exception as exc:  # psycopg.ProgrammingError: libpq's own words on the DSN
        said = str(exc).strip().splitlines()
        # libpq's words quote what it stumbled on, which may be the password: kept only
        # when they quote nothing; the DSN itself is never repeated.
        first = said[0] if said and '"' not in said[0] else "libpq cannot read it"
        raise UsageError(f"The DSN is not one libpq reads: {first}") from None
    if any(is_secret_key(key) for key in words):
        raise UsageError(f"The DSN has a password: {_NO_PASSWORD}")
    port = str(words.get("port") or "")
    if port and not port.isdigit():
        raise UsageError(f"The DSN's port {port!r} is not a number")
    query = {k: str(v) for k, v in sorted(words.items()) if k not in _LOGIN}
    url = URL.create(
        DRIVERS["postgresql"],
        username=_text(words.get("user")),
        host=_text(words.get("host")),
        port=int(port) if port else None,
        database=_text(words.get("dbname")),
        query=query,
    )
    return _render(url)


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)
