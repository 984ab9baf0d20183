"""A server target's login, found the way its clients find it, once per target.

aishell's own connection and the client programs it starts (pg_dump, pg_restore,
mariadb-dump, mariadb) use the one login resolved here (aishell/targets/clientlogin.py
hands it to the programs), so a backup never logs in as someone else than maintenance.

The order is the clients' own, as their manuals give it:
- PostgreSQL (libpq): the URL; the target's password_env; the service (the URL's
  `?service=NAME`, else PGSERVICE) in PGSERVICEFILE or ~/.pg_service.conf, then
  PGSYSCONFDIR/pg_service.conf; the PGHOST, PGPORT, PGUSER, PGDATABASE and PGPASSWORD
  variables; then the password file (the URL's passfile, the service's, PGPASSFILE, or
  ~/.pgpass, read only when no other group or other user may read it, as libpq does).
- MySQL/MariaDB: the URL (its user part, else its query's `password`, else `passwd`,
  as PyMySQL takes them); password_env; ~/.my.cnf, its [client], [client-server] and
  [client-mariadb] groups (the groups every client reads; a program's own group such
  as [mysqldump] is not read, so every program logs in alike), read as the clients
  read it and ignored, as they ignore it, when others may write to it; then MYSQL_PWD.
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

    def applied(self, url: URL) -> URL:
        """url with this login in it: what the driver connects with. A query's password
        is this login's, so the query holds it no more."""
        dropped = (
            {"service", "password", "passfile", *_PG_QUERY_LOGIN}
            if self.dialect == "postgresql"
            else set(PASSWORD_KEYS)
        )
        query = {k: v for k, v in url.query.items() if k not in dropped} | self.settings
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


# What the clients take for white space around names and values (my_isspace, latin1;
# libpq's isspace() in the C locale): never a non-ASCII space a password may end with.
_SPACE = " \t\n\v\f\r"


def _text_lines(path: Path) -> list[str]:
    """A login file's lines as the clients read them: its bytes, lines ended by "\n"
    alone, as fgets() ends them (splitlines() also breaks at \v, \f, U+0085, U+2028
    and others a password may hold). UTF-8, as the drivers send a password; bytes that
    are not stay apart (surrogates), so that _utf8 refuses a password holding them
    rather than another password being sent in its place."""
    return path.read_bytes().decode("utf-8", "surrogateescape").split("\n")


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


def read_option_groups(path: Path, groups: tuple[str, ...]) -> dict[str, str]:
    """The options of a MySQL option file's groups, read line by line as the clients
    read them (mysys/my_default.c), a later line winning; `KEY@` names the group a key
    came from. !include lines are not followed."""
    found: dict[str, str] = {}
    group = None
    for raw in _text_lines(path):
        line = raw.lstrip(_SPACE)
        if not line or line[0] in "#;!":
            continue
        if line.startswith("["):
            # The name's trailing spaces go, its leading ones stay: "[ client]" is not
            # [client] to the clients. Group names match whatever their case.
            group = line[1 : line.find("]")].rstrip(_SPACE).lower() if "]" in line else None
            continue
        if group not in groups:
            continue
        key, _, value = line[: _comment_start(line)].partition("=")
        key = key.rstrip(_SPACE).replace("_", "-").lower()
        found[key] = _option_value(value.strip(_SPACE))
        found[f"{key}@"] = group
    return found


def _comment_start(line: str) -> int:
    """Where a line's comment starts (its length if none): at the first `#` outside
    single or double quotes, wherever in the line it is, as remove_end_comment() finds
    it. A backslash keeps a quote from closing only inside quotes."""
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if char in "'\"" and not escaped:
            if not quote:
                quote = char
            elif quote == char:
                quote = ""
        if not quote and char == "#":
            return i
        escaped = bool(quote) and char == "\\" and not escaped
    return len(line)


_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "r": "\r", "s": " ", "\\": "\\", '"': '"', "'": "'"}


def _option_value(value: str) -> str:
    """A value, its comment and surrounding spaces gone, as the clients take it: one
    pair of the same quotes around all of it removed, then its escapes replaced; an
    unknown escape and a last lone backslash are kept as they are."""
    if len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]:
        value = value[1:-1]
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            pair = value[i : i + 2]
            out.append(_ESCAPES.get(value[i + 1], pair))
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


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
    asked = {key: _last(url.query.get(key)) for key in _PG_QUERY_LOGIN}
    host = asked["host"] or url.host or service.get("host") or env.get("PGHOST") or None
    port = _number(asked["port"], "the URL's ?port=") or url.port
    port = port or _number(service.get("port") or env.get("PGPORT"), "port")
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
        passfile, named = _password_file(url, service)
        found = pgpass_lookup(passfile, host, port, database or user, user)
        if found is not None:
            password, source = found, named
        else:
            source += _pgpass_ignored(passfile, named)
    settings = {k: v for k, v in service.items() if k not in _PG_LOGIN_KEYS}
    return Login("postgresql", user, host, port, database, password, source, service_name, settings)


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


def _pgpass_ignored(path: Path, named: str) -> str:
    """The note that follows "none" where the password file is there but libpq ignores it
    for its mode (else ""): without it, a login with no password would not say why."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return ""
    if not stat.S_ISREG(mode) or not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return ""
    return (
        f" ({named} is mode {stat.S_IMODE(mode):04o}, which others may use: ignored, as "
        f"libpq ignores it; chmod 600 {path})"
    )


def pgpass_lookup(
    path: Path, host: str | None, port: int | None, database: str, user: str
) -> str | None:
    """The password of the first matching line of a password file, as libpq matches
    them; None when the file is missing or others may read it (libpq ignores it then)."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode) or mode & (stat.S_IRWXG | stat.S_IRWXO):
            return None
        lines = [line.rstrip("\r") for line in _text_lines(path)]
    except OSError:
        return None
    wanted = [_pgpass_host(host), str(port or 5432), database, user]
    for line in lines:
        if not line or line.startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) == 5 and all(f in ("*", w) for f, w in zip(fields, wanted, strict=False)):
            return fields[4]
    return None


def _pgpass_host(host: str | None) -> str:
    """The host a password file's line must name, as libpq matches it: "localhost" for
    none and for a Unix socket in libpq's own socket folder; any other folder as it is
    written (`/tmp:*:*:*:pw` is the password of sockets in /tmp alone)."""
    if not host:
        return "localhost"
    if host.startswith("/") and host == _default_socket_folder():
        return "localhost"
    return host


def _default_socket_folder() -> str:
    """The folder libpq looks for a server's socket in when given no host (built into
    it: /var/run/postgresql on Debian, /tmp upstream), as libpq itself names it; the
    attempt is to a port no server has, never a connection."""
    import psycopg  # PostgreSQL targets alone load the driver

    attempt = psycopg.pq.PGconn.connect_start(b"host='' hostaddr='' port=1 connect_timeout=1")
    try:
        return (attempt.host or b"").decode(errors="replace")
    finally:
        attempt.finish()


def _pgpass_fields(line: str) -> list[str]:
    """A password file line's fields, unescaped. As in libpq, the password too ends at
    its first unescaped colon: `*:*:*:*:a:b` logs in with `a` there, and so here."""
    fields: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            current.append(line[i + 1])
            i += 2
            continue
        if line[i] == ":":
            fields.append("".join(current))
            current = []
            if len(fields) == 5:
                return fields
        else:
            current.append(line[i])
        i += 1
    fields.append("".join(current))
    return fields
