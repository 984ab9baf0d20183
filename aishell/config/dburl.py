"""A database URL as text: read exactly as SQLAlchemy's `make_url` reads it (its
pattern, its unquoting), without importing SQLAlchemy, for the commands that only show
a URL (`targets list`) or find a SQLite file in it (`runs list`). Shown, a password is
`***`, as SQLAlchemy's `render_as_string(hide_password=True)` shows it
(tests/config/test_dburl.py holds the two to the same text)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus

# sqlalchemy.engine.url._parse_url's pattern, as it is.
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
        """,
    re.X,
)
HIDDEN = "***"
# Query keys a driver takes a secret from: libpq's password and sslpassword (the client
# key's passphrase), PyMySQL's password, passwd and ssl_key_password (its client key's
# passphrase). Shown and kept as ***, like the password before the @.
SECRET_KEYS = frozenset({"password", "passwd", "sslpassword", "ssl_key_password"})


def is_secret_key(key: str) -> bool:
    return key.lower() in SECRET_KEYS


@dataclass(frozen=True)
class DatabaseUrl:
    """The parts of a database URL, as SQLAlchemy's URL holds them."""

    drivername: str
    username: str | None
    password: str | None
    host: str | None
    port: int | None
    database: str | None
    query: dict[str, list[str]]

    @property
    def backend(self) -> str:
        """The engine: the drivername left of any `+driver`."""
        return self.drivername.split("+")[0]

    def shown(self) -> str:
        """The URL fit to print: its password as ***."""
        text = self.drivername + "://"
        if self.username is not None:
            text += quote(self.username, safe=" +")
            if self.password is not None:
                text += ":" + HIDDEN
            text += "@"
        if self.host is not None:
            text += f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None:
            text += ":" + str(self.port)
        if self.database is not None:
            text += "/" + quote(self.database, safe=" +/")
        if self.query:
            text += "?" + "&".join(
                f"{quote_plus(key)}={HIDDEN if is_secret_key(key) else quote_plus(value)}"
                for key in sorted(self.query)
                for value in self.query[key]
            )
        return text


def parse_url(url: str) -> DatabaseUrl | None:
    """The URL's parts; None where make_url would refuse it."""
    found = _URL.match(url)
    if found is None:
        return None
    parts = found.groupdict()
    query: dict[str, list[str]] = {}
    if parts["query"] is not None:
        for key, value in parse_qsl(parts["query"]):
            query.setdefault(key, []).append(value)
    port = None
    if parts["port"]:
        # ASCII digits only: int() (and so make_url) also reads fullwidth digits and "5_432".
        if not (parts["port"].isascii() and parts["port"].isdigit()):
            return None
        port = int(parts["port"])
    elif parts["port"] is not None:
        return None  # `host:` with no number: int("") fails in SQLAlchemy too
    text = {k: None if parts[k] is None else unquote(parts[k]) for k in ("username", "password")}
    return DatabaseUrl(
        drivername=parts["name"],
        username=text["username"],
        password=text["password"],
        host=parts["ipv4host"] or parts["ipv6host"],
        port=port,
        database=None if parts["database"] is None else unquote(parts["database"]),
        query=query,
    )


def url_secrets(url: str) -> list[str]:
    """The secrets a URL holds (its password, a secret key's value in its query), each as
    typed and as unquoted, to find where it is written; [] for none."""
    found = _URL.match(url)
    if found is None:
        return []
    typed = [found.group("password")] if found.group("password") else []
    for pair in (found.group("query") or "").split("&"):
        key, equals, value = pair.partition("=")
        if equals and value and is_secret_key(unquote_plus(key)):
            typed.append(value)
    unquoted = [unquote(v) for v in typed] + [unquote_plus(v) for v in typed]
    return list(dict.fromkeys(v for v in typed + unquoted if v))


def without_password(url: str) -> str:
    """The URL's text with its password's characters replaced by ***: what is kept where
    a password must not be (the listings' cache); every other character as it was, so it
    parses to the same parts but the password."""
    found = _URL.match(url)
    if found is None:
        return url
    if found.group("query") is not None:
        start, end = found.span("query")
        url = url[:start] + _query_without_secrets(found.group("query")) + url[end:]
    if found.group("password") is None:
        return url
    start, end = found.span("password")
    return url[:start] + HIDDEN + url[end:]


# A URL written inside a line of text: its scheme, and everything up to a space or quote.
_URL_IN_TEXT = re.compile(r"[\w+]+://[^\s'\"]+")


def passwords_hidden(text: str) -> str:
    """A line with each URL in it shown without its password or secret query values (as
    without_password shows one): an error may echo what a person typed, and a URL
    pasted where a name belongs holds a password."""
    return _URL_IN_TEXT.sub(lambda m: without_password(m.group()), text)


def url_fingerprint(url: str) -> str:
    """What picks a target's database in its URL (resolved: resolve_url), as a digest
    that holds no secret: sha256 of the URL without its password or secret query values.
    A URL edited to name another host, port, database or file has another; a password
    changed keeps it."""
    return hashlib.sha256(without_password(url).encode()).hexdigest()


def _query_without_secrets(query: str) -> str:
    """The query's text with each secret key's value as ***, every other pair as it was."""
    pairs = query.split("&")
    for at, pair in enumerate(pairs):
        key, equals, _ = pair.partition("=")
        if equals and is_secret_key(unquote_plus(key)):
            pairs[at] = f"{key}={HIDDEN}"
    return "&".join(pairs)


# Each engine's driver, by the names a URL may give the engine.
DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "sqlite": "sqlite",
}


def resolve_url(url: str, home: Path) -> str:
    """Make a relative SQLite path absolute under the home, and give a server's URL that
    names no driver aishell's (`mysql://` would be SQLAlchemy's MySQLdb, not installed;
    `targets add` writes the driver, a URL written by hand may not); others pass
    through."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        rest = url[len(prefix) :]
        if rest and not rest.startswith(":memory:") and not rest.startswith("file:"):
            return prefix + str((home / rest).resolve())
    return with_driver(url)


def with_driver(url: str) -> str:
    """A server's URL that names its engine alone (`mysql://`, `postgres://`) with
    aishell's driver for it; any other URL as it is."""
    scheme, found, rest = url.partition("://")
    if found and scheme in DRIVERS and scheme != "sqlite":
        return f"{DRIVERS[scheme]}://{rest}"
    return url
