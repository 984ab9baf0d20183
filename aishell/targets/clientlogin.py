"""The login aishell uses, handed to a client program it starts, and nothing else.

A child (pg_dump, pg_restore, mariadb-dump, mariadb) gets the login of aishell's own
connection (aishell/targets/logins.py, already in the engine's URL) through a private
file, mode 0600 in a folder of mode 0700, removed when the child ends; never through its
command line. The program reads no login of its own on top:
- MariaDB/MySQL programs get `--defaults-file=FILE` as their first option, so they read
  that file alone (not ~/.my.cnf, not /etc/mysql); MYSQL_PWD and friends are removed
  from their environment, and MySQL's login-path file pointed at nothing. The file
  connects as PyMySQL does: through the URL's unix_socket, else by TCP (to the server,
  'app'@'localhost' and 'app'@'127.0.0.1' are two accounts). It holds the URL's TLS
  as aishell's session reads it (mysqltls.tls_of): `skip-ssl` when it is off; when it
  is required, its files and `ssl-verify-server-cert`, the one way
  these programs refuse a server without TLS (it checks the server's certificate and
  name too); a key's passphrase, which no program takes, is refused. The mariadb
  client also gets the target's connect timeout (mariadb-dump has no such option, and
  neither has a read timeout: the run's deadline and the dump's silence watch bound them).
- libpq programs get a service file of their own (PGSERVICEFILE, PGSERVICE) holding
  host, port, user, database, the service's other keywords, connect_timeout (and
  PGCONNECT_TIMEOUT), and keepalives with tcp_user_timeout (libpq has no read timeout;
  these notice a lost network), and a password file of their own holding the password
  alone (PGPASSFILE); PGHOST, PGUSER, PGPASSWORD and the like are removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from sqlalchemy.engine import URL

from aishell.config.checks import SECRET_VARIABLES
from aishell.errors import StepFailed

MYSQL_PROGRAMS = {"mariadb", "mysql", "mariadb-dump", "mysqldump"}
PG_PROGRAMS = {"pg_dump", "pg_restore", "psql", "pg_dumpall"}
_MYSQL_CONNECTING = {"mariadb", "mysql"}  # the programs that take --connect-timeout
SERVICE = "aishell_login"
# The private folder each client program's login files are in (mode 0700).
LOGIN_FOLDER_PREFIX = "aishell-login-"
# Set by the caller through the environment (PGAPPNAME names the session aishell
# watches; PGOPTIONS a session's settings): a service file would win over it.
_FROM_ENVIRONMENT = {"application_name", "fallback_application_name", "options"}
_LINE_BREAK = (
    "the target's login holds a line break, which no client program's login file can "
    "carry; change the password (or user name) to one without"
)

# The environment through which a client would find a login of its own.
_MYSQL_ENV = ("MYSQL_PWD", "MYSQL_HOST", "MYSQL_TCP_PORT", "MYSQL_UNIX_PORT")
_PG_ENV = (
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGCONNECT_TIMEOUT",
)


def client_env() -> dict[str, str]:
    """The environment every client program starts from: aishell's, without the
    variables through which it would find a login aishell did not use, nor those the
    config names as holding a secret."""
    return _without_logins(os.environ)


def _without_logins(env: Mapping[str, str]) -> dict[str, str]:
    left_out = {*_MYSQL_ENV, *_PG_ENV, *SECRET_VARIABLES}
    return {k: v for k, v in env.items() if k not in left_out}


@contextmanager
def client_login(
    argv: list[str],
    env: dict[str, str],
    url: URL,
    connect_timeout: float,
    write_timeout: float,
    record: Callable[[Path], AbstractContextManager[Path]] | None = None,
) -> Iterator[tuple[list[str], dict[str, str]]]:
    """argv and env of a client program, given the login of url (the engine's) through
    a private file that is removed when the block ends. Other programs pass unchanged.
    `record` (the run's scratch ledger's file()) records each file before it is made,
    so that one a killed run leaves is removed by the next run or `doctor --clean`."""
    program = os.path.basename(argv[0])
    if program not in MYSQL_PROGRAMS | PG_PROGRAMS:
        yield argv, env
        return
    folder = Path(tempfile.mkdtemp(prefix=LOGIN_FOLDER_PREFIX))  # mode 0700
    try:
        with ExitStack() as files:

            def write(path: Path, lines: list[str]) -> Path:
                if record is not None:
                    files.enter_context(record(path))
                return _write(path, lines)

            yield from _handed(
                program, argv, env, url, folder, write, (connect_timeout, write_timeout)
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _handed(
    program: str,
    argv: list[str],
    env: dict[str, str],
    url: URL,
    folder: Path,
    write: Callable[[Path, list[str]], Path],
    timeouts: tuple[float, float],
) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The program's argv and env, its login written into folder by `write`."""
    connect_timeout, write_timeout = timeouts
    env = _without_logins(env)
    if program in MYSQL_PROGRAMS:
        options = write(folder / "my.cnf", _my_cnf(url, program, connect_timeout))
        env["MYSQL_TEST_LOGIN_FILE"] = str(folder / "no-login-path")
        yield [argv[0], f"--defaults-file={options}", *argv[1:]], env
        return
    lines = _pg_service(url, connect_timeout, write_timeout)
    env["PGSERVICEFILE"] = str(write(folder / "pg_service.conf", lines))
    env["PGSERVICE"] = SERVICE
    # A file of one line, or none (libpq reads no password from a missing file).
    passfile = folder / "pgpass"
    if url.password:
        write(passfile, ["*:*:*:*:" + _pgpass_escaped(str(url.password))])
    env["PGPASSFILE"] = str(passfile)
    env["PGCONNECT_TIMEOUT"] = str(max(2, round(connect_timeout)))
    yield argv, env


def _write(path: Path, lines: list[str]) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    # UTF-8 whatever the locale, as aishell's own sessions send the login: under an
    # ASCII locale a password beyond it could not be written at all.
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return path


def _my_cnf(url: URL, program: str, connect_timeout: float) -> list[str]:
    lines = ["[client]"]
    if url.username:
        lines.append(f"user={_my_quoted(url.username)}")
    if url.password is not None:
        lines.append(f"password={_my_quoted(str(url.password))}")
    lines += [f"host={_my_quoted(url.host or 'localhost')}", f"port={url.port or 3306}"]
    socket = url.query.get("unix_socket")
    if isinstance(socket, str):
        # PyMySQL connects through the socket whatever the host says; the clients do
        # so only when told.
        lines += [f"socket={_my_quoted(socket)}", "protocol=socket"]
    else:
        # And by TCP without one, where the clients take "localhost" for their socket:
        # another account to the server ('app'@'localhost', not 'app'@'127.0.0.1').
        lines.append("protocol=tcp")
    lines += _my_tls(url)
    if program in _MYSQL_CONNECTING:
        # [mysql]: the group both the mariadb and the mysql client read.
        lines += ["[mysql]", f"connect-timeout={max(1, round(connect_timeout))}"]
    return lines


def _my_tls(url: URL) -> list[str]:
    """The client options of the URL's TLS, as aishell's session reads it."""
    from aishell.targets.mysqltls import tls_of  # PyMySQL: MySQL programs only

    try:
        tls = tls_of(url.query)
    except ValueError:
        raise StepFailed(
            "the target's URL gives a TLS setting that is neither true nor false"
        ) from None
    if tls.disabled:
        return ["skip-ssl"]
    if not tls.required:
        return []  # the programs' default, as the session's: TLS when the server offers it
    if tls.key_password is not None:
        raise StepFailed(
            "the target's URL gives ssl_key_password, which no MariaDB client program "
            "takes: give them a client key without a passphrase"
        )
    files = {"ssl-ca": tls.ca, "ssl-capath": tls.capath, "ssl-cert": tls.cert}
    files |= {"ssl-key": tls.key, "ssl-cipher": tls.cipher}
    given = [f"{key}={_my_quoted(value)}" for key, value in files.items() if value]
    return [*given, "ssl-verify-server-cert"]


def _my_quoted(value: str) -> str:
    """A value of a MySQL option file, read back exactly (quotes, #, spaces, backslashes)."""
    if "\n" in value or "\r" in value:
        raise StepFailed(_LINE_BREAK)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pgpass_escaped(password: str) -> str:
    if "\n" in password or "\r" in password:
        raise StepFailed(_LINE_BREAK)
    return password.replace("\\", "\\\\").replace(":", "\\:")


def _pg_service(url: URL, connect_timeout: float, write_timeout: float) -> list[str]:
    keywords: dict[str, str] = {
        str(k): str(v if not isinstance(v, tuple) else v[-1])
        for k, v in url.query.items()
        if k not in _FROM_ENVIRONMENT
    }
    keywords |= {
        # A host list is in the query (Login.applied), as libpq takes it: "a,b".
        "host": url.host or keywords.get("host", ""),
        "port": str(url.port or keywords.get("port", "")),
        "user": url.username or "",
        "dbname": url.database or "",
        "connect_timeout": str(max(2, round(connect_timeout))),
        "keepalives": "1",
        "keepalives_idle": "30",
        "keepalives_interval": "10",
        "keepalives_count": "3",
        "tcp_user_timeout": str(int(write_timeout * 1000)),
    }
    if any("\n" in value or "\r" in value for value in keywords.values()):
        raise StepFailed(_LINE_BREAK)
    return [f"[{SERVICE}]", *(f"{k}={v}" for k, v in keywords.items() if v)]
