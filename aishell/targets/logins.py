"""A server target's login, found the way its clients find it, once per target.

aishell's own connection and the client programs it starts (pg_dump, pg_restore,
mariadb-dump, mariadb) use the one login resolved here (aishell/targets/clientlogin.py
hands it to the programs), so a backup never logs in as someone else than maintenance.

The order is the clients' own, as their manuals give it:
- PostgreSQL (libpq): the URL; the target's password_env; the service (the URL's
  `?service=NAME`, else PGSERVICE) in PGSERVICEFILE or ~/.pg_service.conf, then
  PGSYSCONFDIR/pg_service.conf; the PGHOST, PGPORT, PGUSER, PGDATABASE and PGPASSWORD
  variables; then the password file (the URL's passfile, the service's, PGPASSFILE, or
  ~/.pgpass, read only when no other group or other user may read it, as libpq does;
  each host of a list matched in turn: targets/pgpass.py).
- MySQL/MariaDB: the URL (its user part, else its query's `password`, else `passwd`,
  as PyMySQL takes them); password_env; ~/.my.cnf, its [client], [client-server] and
  [client-mariadb] groups (the groups every client reads; a program's own group such
  as [mysqldump] is not read, so every program logs in alike),
  read as the clients read it with the files it includes (targets/optionfiles.py)
  and ignored, as they ignore it, when others may write to it; then MYSQL_PWD.
  MySQL's encrypted login paths (~/.mylogin.cnf) are not read.

aishell reads these files itself rather than leaving them to the driver: PyMySQL reads
no option file unless told to (its read_default_file reads one group of one file and
knows no MYSQL_PWD), and knowing where the password came from is what `doctor` says.
"""

from __future__ import annotations

import getpass
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL

from aishell.config.checks import env_password, environment_text
from aishell.config.models import TargetConfig
from aishell.errors import ConfigError
from aishell.targets.optionfiles import SPACE as _SPACE
from aishell.targets.optionfiles import read_option_groups
from aishell.targets.optionfiles import text_lines as _text_lines
from aishell.targets.pgpass import pgpass_ignored, pgpass_keys, pgpass_password

MY_CNF = "~/.my.cnf"
MY_CNF_GROUPS = ("client", "client-server", "client-mariadb")
# A MySQL URL's query keys that hold its password (PyMySQL's `passwd` is an old name).
PASSWORD_KEYS = ("password", "passwd")
PGPASS = "~/.pgpass"
PG_SERVICE_FILE = "~/.pg_service.conf"
# What a service may set besides the login; the driver gets them as connection keywords.
_PG_LOGIN_KEYS = {"host", "port", "user", "dbname", "password", "passfile", "service"}
# A URL's query keywords that say where and as whom to log in (the Login holds them).
_PG_QUERY_LOGIN = ("host", "port", "user", "dbname")
# Why session options from outside the target are refused, as the URL's are
# (config/checks.py): aishell's own sessions set theirs and override these, while its
# second sessions and client programs took them, so a run searched one schema (or ran
# under one setting) where it checked and another where it worked.
_OUTSIDE_OPTIONS = (
    "aishell's sessions set their own, and settings some of them took and others not "
    "would check one schema (or setting) and work under another"
)


@dataclass(frozen=True)
class Login:
    """Who aishell logs in as, where, and where each part came from (no secret shown)."""

    dialect: str
    user: str | None
    host: str | None
    port: int | None
    database: str | None
    password: str | None = field(repr=False)
    # Where the password came from: "URL", "password_env NAME", "~/.my.cnf [client]",
    # "MYSQL_PWD", "PGPASSWORD", "service NAME", "~/.pgpass" (or the password file named:
    # "PGPASSFILE PATH", "passfile PATH", "URL passfile PATH"), or "none"; the mode of an
    # ignored ~/.my.cnf or password file follows in brackets ("none (~/.my.cnf is mode
    # ...)").
    password_from: str = "none"
    # A PostgreSQL service's name and its other keywords (sslmode, ...), or {}.
    service: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    # Hosts tried in turn (libpq's list: host "a,b"): their ports, one or one each.
    ports: str | None = None

    def applied(self, url: URL) -> URL:
        """url with this login in it: what the driver connects with. A query's password
        is this login's, so the query holds it no more."""
        dropped = (
            {"service", "password", "passfile", *_PG_QUERY_LOGIN}
            if self.dialect == "postgresql"
            else set(PASSWORD_KEYS)
        )
        query = {k: v for k, v in url.query.items() if k not in dropped} | self.settings
        if self.dialect == "postgresql" and ("," in (self.host or "") or self.ports):
            # Several hosts: SQLAlchemy hands the query's lists to libpq, which tries
            # each in turn (the URL's own host and port hold one each).
            # SQLAlchemy takes one port per host (libpq's one for all, repeated).
            hosts = (self.host or "").split(",")
            port = ",".join([str(self.port)] * len(hosts)) if self.port else ""
            where = {"host": self.host or "", "port": self.ports or port}
            query |= {key: value for key, value in where.items() if value}
            # (URL.set takes None for "unchanged": _replace empties them.)
            return url._replace(host=None, port=None).set(
                username=self.user, password=self.password, database=self.database, query=query
            )
        return url.set(
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
            query=query,
        )

    def shown(self) -> dict[str, object]:
        return {
            "user": self.user,
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "service": self.service,
            "password_from": self.password_from,
        }


def resolve_login(
    url: URL, target: TargetConfig, name: str, config_file: Path | None = None
) -> Login:
    """The login of a PostgreSQL or MySQL/MariaDB target, as its clients would find it;
    `config_file`: the file the target is in, named when its password_env is unset."""
    postgresql = url.get_backend_name() == "postgresql"
    if not postgresql:
        from aishell.targets.mysqltls import query_problem  # PyMySQL: MySQL targets only

        problem = query_problem(url.query)
        if problem is not None:
            raise ConfigError(f"Target '{name}': url: {problem}")
    given: tuple[str, str] | None = None
    password = _pg_url_password(url) if postgresql else _mysql_url_password(url)
    if password is not None:
        given = (str(password), "URL")
    elif target.password_env:
        setting = f"targets.{name}.password_env"
        value = env_password(target.password_env, f"Target '{name}'", setting, config_file)
        given = (value, f"password_env {target.password_env}")
    login = _postgresql(url, given, name) if postgresql else _mysql(url, given)
    return _utf8(login, name)


def _last(value: object) -> str | None:
    """A query keyword's value as the driver takes it: the last, if given twice."""
    if isinstance(value, tuple):
        value = value[-1] if value else None
    return None if value is None else str(value)


def _pg_url_password(url: URL) -> str | None:
    """A PostgreSQL URL's password as the driver takes it: its query's `password` (the
    last, if given twice), which SQLAlchemy lets override the user part's; else the
    user part's; else None."""
    query = url.query.get("password")
    if isinstance(query, tuple):
        query = query[-1] if query else None
    if query is not None:
        return str(query)
    return None if url.password is None else str(url.password)


def _mysql_url_password(url: URL) -> str | None:
    """A MySQL URL's password as the driver took it: the first one not empty of its
    query's `password` (SQLAlchemy lets it override the user part's), its user part's
    and its query's `passwd` (PyMySQL's, taken when `password` is empty); else an empty
    one given; else None."""
    given = [url.query.get("password"), url.password, url.query.get("passwd")]
    found = [str(value) for value in given if value is not None]
    return next((value for value in found if value), found[0] if found else None)


# --- MySQL / MariaDB ----------------------------------------------------------------------


def _mysql(url: URL, given: tuple[str, str] | None) -> Login:
    options, ignored = _my_cnf()
    port = url.port or _number(options.get("port"), f"{MY_CNF} port")
    password, source = given or (None, "none")
    if password is None and "password" in options:
        password, source = options["password"], f"{MY_CNF} [{options['password@']}]"
    if password is None:
        password, source = _from_environment("MYSQL_PWD", source)
    return Login(
        "mysql",
        url.username or options.get("user"),
        url.host or options.get("host"),
        port,
        url.database,
        password,
        source + ignored,
    )


def _my_cnf() -> tuple[dict[str, str], str]:
    """~/.my.cnf's options in the clients' groups, and the note that follows where the
    password came from when the file is ignored (else ""). The clients
    (mysys/my_default.c) ignore a regular file others may write to ("Warning:
    World-writable config file '...' is ignored"), since anyone could have put a login
    of their own in it; that bit alone counts, so one its group may write to is read."""
    path = Path(MY_CNF).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError:
        return {}, ""
    if not stat.S_ISREG(mode):
        return {}, ""
    if mode & stat.S_IWOTH:
        return {}, (
            f" ({MY_CNF} is mode {stat.S_IMODE(mode):04o}, world-writable: ignored, as the "
            f"clients ignore it; chmod o-w {MY_CNF})"
        )
    return read_option_groups(path, MY_CNF_GROUPS), ""


def _from_environment(variable: str, source: str) -> tuple[str | None, str]:
    """The password a client's own variable holds, and where it came from; else None
    and `source` as it was."""
    value = environment_text(variable)
    return (None, source) if value is None else (value, variable)


def _utf8(login: Login, name: str) -> Login:
    """The login, unless its password is no UTF-8 text (a file's bytes, an environment
    variable's), which no driver could send as the clients send it: one line naming
    where it came from, never the password."""
    password = login.password
    if password is None or not any("\udc80" <= char <= "\udcff" for char in password):
        return login
    raise ConfigError(
        f"Target '{name}': the password from {login.password_from} is not UTF-8 text, "
        "which aishell sends a password as; write it in UTF-8"
    )


def _number(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise ConfigError(f"{what} is not a port number: {value!r}")
    return int(value)


# --- PostgreSQL ---------------------------------------------------------------------------


def _postgresql(url: URL, given: tuple[str, str] | None, name: str) -> Login:
    service_name = _last(url.query.get("service")) or os.environ.get("PGSERVICE")
    service = _service(service_name, name) if service_name else {}
    env = os.environ
    if service.get("options", "").strip():
        raise ConfigError(
            f"Target '{name}': PostgreSQL service '{service_name}' sets options: "
            f"{_OUTSIDE_OPTIONS}; remove options from the service"
        )
    if env.get("PGOPTIONS", "").strip():
        raise ConfigError(
            f"Target '{name}': PGOPTIONS is set in the environment: {_OUTSIDE_OPTIONS}; "
            "unset PGOPTIONS for aishell"
        )
    # The query's keywords are the driver's last word (SQLAlchemy hands them to psycopg
    # over the URL's own parts): `?host=/var/run/postgresql` for a socket, say. The
    # programs aishell starts must log in where and as whom its own connection does.
    asked = {key: _last(url.query.get(key)) for key in ("user", "dbname")}
    hosts, ports = _pg_hosts(url, service, name)
    user = asked["user"] or url.username or service.get("user") or env.get("PGUSER")
    user = user or getpass.getuser()
    database = asked["dbname"] or url.database or service.get("dbname") or env.get("PGDATABASE")
    database = database or None
    password, source = given or (None, "none")
    if password is None and "password" in service:
        password, source = service["password"], f"service {service_name}"
    if password is None:
        password, source = _from_environment("PGPASSWORD", source)
    if password is None:
        addresses = _last(url.query.get("hostaddr")) or service.get("hostaddr")
        addresses = addresses or env.get("PGHOSTADDR") or ""
        where = pgpass_keys(hosts, ports, addresses.split(",") if addresses else [], name)
        passfile, named = _password_file(url, service)
        found = pgpass_password(passfile, where, database or user, user, name)
        if found is not None:
            password, source = found, named
        else:
            source += pgpass_ignored(passfile, named)
    host = ",".join(hosts) or None
    port = _number(ports[0], "port") if len(ports) == 1 else None
    several = ",".join(ports) if len(ports) > 1 else None
    settings = {k: v for k, v in service.items() if k not in _PG_LOGIN_KEYS}
    return Login(
        "postgresql", user, host, port, database, password, source, service_name, settings, several
    )


def _password_file(url: URL, service: dict[str, str]) -> tuple[Path, str]:
    """The password file libpq reads, first given first: the URL's `?passfile=`, the
    service's passfile, PGPASSFILE, else ~/.pgpass; and how the login names it."""
    given = (
        (_last(url.query.get("passfile")), "URL passfile"),
        (service.get("passfile"), "passfile"),
        (os.environ.get("PGPASSFILE"), "PGPASSFILE"),
    )
    for value, shown in given:
        if value:
            path = Path(value).expanduser()
            return path, f"{shown} {path}"
    return Path(PGPASS).expanduser(), PGPASS


def _pg_hosts(url: URL, service: dict[str, str], name: str) -> tuple[list[str], list[str]]:
    """The hosts libpq tries, in order, and their ports (one for all, one each, or
    none), first given first: the URL's query (`host=a,b&port=1,2`, or SQLAlchemy's
    `host=a:1&host=b:2`), the URL's own, the service's, PGHOST and PGPORT."""
    given = url.query.get("host")
    env = os.environ
    ports = _last(url.query.get("port"))
    if (isinstance(given, tuple) and len(given) > 1) or (
        isinstance(given, str) and not ports and _host_port(given)[1]
    ):
        if isinstance(given, tuple) and ports:
            # As SQLAlchemy refuses it: which port would be whose?
            raise ConfigError(
                f"Target '{name}': url: give the ports of several hosts as host=a:1&host=b:2 "
                "or as host=a,b&port=1,2, not both"
            )
        pairs = [
            _host_port(str(value)) for value in (given if isinstance(given, tuple) else [given])
        ]
        hosts, ports = [host for host, _ in pairs], ",".join(port for _, port in pairs)
    else:
        named = _last(given) or url.host or service.get("host") or env.get("PGHOST")
        hosts = (named or "").split(",")
    ports = ports or str(url.port or "") or service.get("port") or env.get("PGPORT") or ""
    listed = [port.strip(_SPACE) for port in ports.split(",")] if ports else []
    listed = listed if any(listed) else []  # `host=a&host=b`: no port, libpq's default
    for port in listed:
        _number(port or None, f"Target '{name}': port")
    hosts = [] if hosts == [""] else hosts
    if len(listed) > 1 and len(listed) != max(1, len(hosts)):
        raise ConfigError(f"Target '{name}': {len(hosts)} host(s) and {len(listed)} ports")
    return hosts, listed


def _host_port(value: str) -> tuple[str, str]:
    """`host:port` in SQLAlchemy's form of a host list; a socket's folder as it is."""
    host, colon, port = value.rpartition(":")
    if not colon or value.startswith("/") or not port.isdigit():
        return value, ""
    return host, port


def _service(service: str, target: str) -> dict[str, str]:
    """The keywords of a pg_service.conf service: the user's file, else the system's."""
    files = [Path(os.environ.get("PGSERVICEFILE") or PG_SERVICE_FILE).expanduser()]
    sysconf = os.environ.get("PGSYSCONFDIR") or "/etc/postgresql-common"
    files.append(Path(sysconf) / "pg_service.conf")
    for path in files:
        if path.is_file():
            found = _service_in(path, service)
            if found is not None:
                return found
    raise ConfigError(
        f"Target '{target}': PostgreSQL service '{service}' is in no service file "
        f"({', '.join(str(p) for p in files)})"
    )


def _service_in(path: Path, service: str) -> dict[str, str] | None:
    found: dict[str, str] | None = None
    for raw in _text_lines(path):
        line = raw.strip(_SPACE)
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if found is not None:
                return found
            found = {} if line[1 : line.find("]")] == service else None
        elif found is not None and "=" in line:
            # As libpq: the line's own ends are trimmed, not the value's (a password may
            # begin with a space); a keyword given twice keeps its first value.
            key, _, value = line.partition("=")
            found.setdefault(key.strip(_SPACE), value)
    return found
