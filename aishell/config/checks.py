"""Config values that are parsed again later, checked when the config is read: database
URLs, server addresses, command lines, variable names and the limits of numbers. Each
check raises ValueError in words that never repeat the value (it may hold a password);
pydantic turns that into the config's one-line error."""

from __future__ import annotations

import os
import re

from aishell.config.dburl import parse_url, with_driver
from aishell.config.options import MAX_RETENTION_DAYS
from aishell.errors import ConfigError
from aishell.terminal import printable

# Past this an age is a typo, and turned into a timedelta it would overflow.
MAX_HOURS = MAX_RETENTION_DAYS * 24
# An environment variable's name as a shell can export it.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A target's tag as a person types it in a selector (`tag:prod`): short, lower case.
TAG = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# The databases aishell opens, by the URL's backend name.
DATABASE_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")
# A target's name: a person types it on every command line, and it becomes part of the
# paths of its backups (`backups/<target>/<target>-full-...`), so it holds nothing that
# a path or a shell reads: no separator, no leading dot, no space, no line break.
TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
TARGET_NAME_RULE = (
    "may hold letters, digits, '_', '.' and '-' only (at most 63), and starts with a "
    "letter or digit"
)


def database_url_problem(url: str) -> str | None:
    """Why url is no database URL aishell can open, in words that never repeat the URL
    (it may hold a password); None when it is one."""
    from sqlalchemy.engine import make_url  # late: most commands never need it
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(with_driver(url))
    except ArgumentError:
        return "not a valid database URL; expected dialect://user@host:port/database"
    except ValueError:  # SQLAlchemy reads the port with int()
        return "the URL's port is not a number"
    if parsed.port is not None and parse_url(url) is None:
        return "the URL's port is not a number in the digits 0-9"
    if "@" in (parsed.host or ""):
        # A password's own "@" written as it is: the URL's parser ends the password at the
        # first "@" and takes the rest of it for the host, which every error and listing
        # would show. No host holds one.
        return (
            "the URL's host holds '@': write an '@' of the user or password as %40 "
            "(user:pa%40ss@host)"
        )
    backend = parsed.get_backend_name()
    if backend not in DATABASE_BACKENDS:
        return f"unsupported database '{backend[:40]}'; use sqlite, postgresql or mysql"
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        return f"the URL's port {parsed.port} is not between 1 and 65535"
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        return f"unknown driver '{parsed.get_driver_name()[:40]}' for {backend}"
    return None


def check_env_name(value: str | None) -> str | None:
    if value is not None and not ENV_NAME.fullmatch(value):
        raise ValueError("not an environment variable's name (letters, digits and _)")
    return value


# Every variable a setting of the config read names as holding a secret (password_env,
# token_env). A client program aishell starts is given none of them: one started for a
# target needs no password through its environment (its login comes in a private file),
# and must not hold another target's, nor the state store's.
SECRET_VARIABLES: set[str] = set()


def check_secret_env_name(value: str | None) -> str | None:
    """check_env_name, the variable then kept among SECRET_VARIABLES."""
    value = check_env_name(value)
    if value is not None:
        SECRET_VARIABLES.add(value)
    return value


def check_tag(value: str) -> str:
    if not TAG.fullmatch(value):
        raise ValueError(
            "a tag holds lower-case letters, digits, '-' and '_' (at most 32, the first a "
            "letter or digit)"
        )
    return value


def check_target_name(value: str) -> str:
    """A target's name as every config file and `targets add` must give it."""
    if not TARGET_NAME.fullmatch(value):
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise ValueError(f"target name {printable(repr(shown))} {TARGET_NAME_RULE}")
    return value


def check_one_line(value: str) -> str:
    """Text a person reads in a listing, a table or a shell's completion: one line, with
    no control character (an escape sequence, a bidi override) that would redraw or
    reorder what is shown around it."""
    if printable(value) != value:
        shown = printable(value if len(value) <= 60 else value[:60] + "...")
        raise ValueError(
            f"one line of text without control characters (got '{shown}'); write it on "
            "one line of plain characters"
        )
    return value


def environment_text(variable: str) -> str | None:
    """A variable's value as UTF-8 text whatever the locale (None: unset). A password is
    sent as UTF-8, and under an ASCII locale os.environ holds each byte beyond ASCII as a
    surrogate, which no driver can send; bytes that are no UTF-8 stay surrogates, for
    the login to refuse in one line."""
    raw = os.environb.get(os.fsencode(variable))
    return None if raw is None else raw.decode("utf-8", "surrogateescape")


def env_password(
    variable: str, whose: str, setting: str, file: os.PathLike[str] | str | None = None
) -> str:
    """The password a `password_env` names, read when it is used (never at load: the
    variable may be set only for the command that needs it); unset, a ConfigError that
    begins with `whose`, names the setting and the file it is in, and says what to do."""
    value = environment_text(variable)
    if value is None:
        where = setting if file is None else f"{setting} in {file}"
        raise ConfigError(
            f"{whose}: the environment variable {variable} ({where}) is not set; export "
            f"{variable} where aishell runs (the scheduler's service too), or change {setting}"
        )
    return value


def check_http_url(value: str | None) -> str | None:
    """A server's address as Ollama or a webhook takes it: host[:port], or an http(s)
    URL; refused in words that never repeat it (it may carry a token)."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value if "://" in value else f"http://{value}")
        port = parts.port  # read here: a port that is not a number raises only now
    except ValueError:
        raise ValueError("not a valid URL (expected http://host:port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http or https URL with a host")
    if port == 0:
        raise ValueError("the URL's port 0 is not between 1 and 65535")
    return value


def check_command(value: str | None) -> str | None:
    if value is not None:
        import shlex

        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"not a command line: {exc}") from None
        if not words:
            raise ValueError("an empty command")
    return value


def check_url(value: str) -> str:
    problem = database_url_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# A PostgreSQL target's sessions set their own settings, and every one of them (the
# catalog reads that check a step, the step's statements, a second session, pg_dump)
# must search the schemas the catalog was read in: a URL's `options` (-c search_path=...)
# that some sessions took and others not would check one schema and work on another.
PG_OPTIONS_REFUSED = (
    "a PostgreSQL target's URL may not set options (-c search_path=... or any server "
    "setting): aishell's sessions set their own, and a search_path some of them took and "
    "others not would check one schema and work on another; remove options from the URL"
)


def check_target_url(value: str) -> str:
    """check_url, no session settings in a PostgreSQL target's URL, and nothing but a
    path in a SQLite target's."""
    value = check_url(value)
    parsed = parse_url(value)
    if parsed is not None and parsed.backend == "postgresql" and "options" in parsed.query:
        raise ValueError(PG_OPTIONS_REFUSED)
    if parsed is not None and parsed.backend == "sqlite":
        _check_sqlite_url(value, parsed.query, parsed.database or "")
    return value


def _check_sqlite_url(value: str, query: dict[str, list[str]], database: str) -> None:
    """aishell opens a SQLite file itself, by its path: read-write for a run, `mode=ro`
    for a dry run, with its own busy timeout. So a parameter in the URL (`?mode=ro`,
    `?immutable=1`, `?cache=shared`, a driver's `?timeout=`) would be ignored, and a
    person who wrote `mode=ro` would have a target written to; refused, naming it. A
    SQLite URI filename (`file:...`) is refused too: its path is not the home's."""
    if "?" in value:  # a '?' in the file's name is written %3F
        key = next(iter(query), "")
        shown = printable(repr(key if len(key) <= 40 else key[:40] + "..."))
        got = f" (got {shown})" if key else ""
        raise ValueError(
            f"a SQLite target's URL takes no parameters{got}: aishell opens "
            "the file itself, read-write for a run and read-only for --dry-run; remove "
            "everything from the '?' on"
        )
    if database.startswith("file:"):
        raise ValueError(
            "a SQLite target's URL names its file by path (sqlite:///path.db), not as a "
            "SQLite URI (file:...)"
        )
