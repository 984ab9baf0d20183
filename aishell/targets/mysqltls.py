"""PyMySQL connections that share one TLS context for the preferred mode, send their
password as the clients do, and read a URL's TLS settings as the client programs get
them (aishell/targets/clientlogin.py).

With no TLS option, PyMySQL tries TLS when the server offers it (the preferred mode)
and builds a new default context for every connection: loading the system's
certificates takes about 20 ms each time, more than a run's own statements on a small
database. The context holds no per-connection state, so one serves them all; explicit
TLS options still get a context of their own.

A URL's TLS settings (ssl_ca, ssl_capath, ssl_cert, ssl_key, ssl_cipher,
ssl_key_password, ssl_verify_cert, ssl_verify_identity, ssl_check_hostname,
ssl_disabled) are read once, by `tls_of`, into what the session does and what the
programs are told: left to SQLAlchemy and PyMySQL, a query's text "false" is true (so
`ssl_disabled=false` turned TLS off) and `ssl_verify_cert` dropped the CA file.
"""

from __future__ import annotations

import inspect
import os
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pymysql

_lock = threading.Lock()
_preferred: list[ssl.SSLContext] = []


def preferred_context(make: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """The one TLS context of the preferred mode in this process, made by `make` at the
    first connection that asks."""
    with _lock:
        if not _preferred:
            _preferred.append(make())
        return _preferred[0]


class SharedTlsConnection(pymysql.connections.Connection):  # type: ignore[misc]
    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        own = super()._create_ssl_ctx
        if sslp != {}:
            made: ssl.SSLContext = own(sslp)
            return made
        return preferred_context(lambda: own({}))


def connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> SharedTlsConnection:
    """The engine's do_connect: PyMySQL's own connection but for its TLS context, and
    the password sent as the clients send it, and the URL's TLS read by tls_of."""
    utf8_password(cparams)
    session_tls(cparams)
    return SharedTlsConnection(*cargs, **cparams)


def utf8_password(cparams: dict[str, Any]) -> None:
    """The password as UTF-8 bytes, as the mariadb and mysql clients send what a UTF-8
    terminal typed (and as a password set over a utf8mb4 session is hashed): PyMySQL
    would send a text password in latin-1, refusing one beyond it and sending `é` as a
    byte no client sends."""
    password = cparams.get("password")
    if isinstance(password, str):
        cparams["password"] = password.encode("utf-8")


def send_utf8_password(engine: Any) -> None:
    """On an engine of PyMySQL's own connections: utf8_password and session_tls before
    each connect."""
    from sqlalchemy import event

    def password(_dialect: Any, _record: Any, _cargs: Any, cparams: Any) -> None:
        utf8_password(cparams)
        session_tls(cparams)

    event.listen(engine, "do_connect", password, insert=True)


# The TLS settings a MySQL URL's query may hold: PyMySQL's, and those SQLAlchemy turns
# into PyMySQL's `ssl` dict (ssl_capath, ssl_cipher, ssl_check_hostname).
TLS_FILES = ("ssl_ca", "ssl_cert", "ssl_key")
TLS_FLAGS = ("ssl_disabled", "ssl_verify_cert", "ssl_verify_identity", "ssl_check_hostname")
TLS_KEYS = (*TLS_FILES, "ssl_capath", "ssl_cipher", "ssl_key_password", *TLS_FLAGS)
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
# Connect arguments a URL's query must not give, and why.
_IN_URL = "give it in the URL itself (mysql://USER@HOST:PORT/DATABASE)"
# The character set of every session aishell opens to a MySQL/MariaDB target. A URL's
# other one reached only the sessions opened from its URL (a validation's scratch
# copy), which then read a table named outside it as `t_?` while the step's read `t_ж`.
SESSION_CHARSET = "utf8mb4"
_REFUSED = {
    "user": _IN_URL,
    "host": _IN_URL,
    "port": _IN_URL,
    "database": _IN_URL,
    "db": _IN_URL,
    "read_default_file": "a login of PyMySQL's own that the client programs would not get",
    "read_default_group": "a login of PyMySQL's own that the client programs would not get",
    "ssl": "which takes no text; give ssl_ca, ssl_cert, ssl_key ...",
    "conv": "which takes no text",
    "cursorclass": "which takes no text",
    "auth_plugin_map": "which takes no text",
    "compress": "which PyMySQL does not support",
    "named_pipe": "which PyMySQL does not support",
}


@dataclass(frozen=True)
class Tls:
    """A MySQL connection's TLS as a URL gives it: off, preferred (neither), or
    required, with the files and checks it uses."""

    disabled: bool = False
    required: bool = False
    verify_cert: bool = False
    verify_identity: bool = False
    ca: str | None = None
    capath: str | None = None
    cert: str | None = None
    key: str | None = None
    cipher: str | None = None
    key_password: str | None = None

    def context(self) -> ssl.SSLContext:
        """The session's context for required TLS, made as PyMySQL makes one."""
        ctx = ssl.create_default_context(cafile=self.ca, capath=self.capath)
        # Servers' own self-signed certificates fail Python 3.13's strict checks.
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
        ctx.check_hostname = self.verify_identity
        ctx.verify_mode = ssl.CERT_REQUIRED if self.verify_cert else ssl.CERT_NONE
        if self.cert:
            ctx.load_cert_chain(self.cert, keyfile=self.key, password=self.key_password)
        if self.cipher:
            ctx.set_ciphers(self.cipher)
        return ctx


def flag(value: object) -> bool:
    """A query's true or false, as words or digits; ValueError otherwise."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise ValueError(value)


def tls_of(values: Mapping[str, Any]) -> Tls:
    """The TLS of a URL's query (or of PyMySQL's arguments under the same names).

    As PyMySQL reads a URL through SQLAlchemy: any file, cipher or check asked for
    requires TLS; a CA (ssl_ca or ssl_capath) checks the server's certificate and, unless
    ssl_verify_identity or ssl_check_hostname says otherwise, its name; checking the
    name checks the certificate. ssl_disabled=true turns every other setting off."""
    text = {k: str(v) for k, v in values.items() if k in TLS_KEYS and v is not None}
    flags = {k: flag(text[k]) for k in TLS_FLAGS if k in text}
    if flags.get("ssl_disabled"):
        return Tls(disabled=True)
    has_ca = "ssl_ca" in text or "ssl_capath" in text
    identity = flags.get("ssl_verify_identity", flags.get("ssl_check_hostname"))
    verify_cert = flags.get("ssl_verify_cert", has_ca)
    verify_identity = identity if identity is not None else has_ca and verify_cert
    files = ("ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_cipher", "ssl_key_password")
    required = any(k in text for k in files) or verify_cert or verify_identity
    return Tls(
        required=required,
        verify_cert=verify_cert or verify_identity,
        verify_identity=verify_identity,
        ca=text.get("ssl_ca"),
        capath=text.get("ssl_capath"),
        cert=text.get("ssl_cert"),
        key=text.get("ssl_key"),
        cipher=text.get("ssl_cipher"),
        key_password=text.get("ssl_key_password"),
    )


def known_options() -> list[str]:
    """The connect arguments a MySQL URL's query may give."""
    taken = inspect.signature(pymysql.connections.Connection.__init__).parameters
    names = {*taken, *TLS_KEYS} - {"self", *_REFUSED}
    return sorted(names)


def query_problem(query: Mapping[str, Any]) -> str | None:
    """Why a MySQL URL's query cannot be used, in one line that names the key (never a
    value: it may be a password); None when it can."""
    known = known_options()
    for key, value in query.items():
        if isinstance(value, tuple):
            return f"the URL's query gives {key!r} more than once"
        if key in _REFUSED:
            return f"the URL's query sets {key!r}, {_REFUSED[key]}"
        if key == "charset" and str(value).lower() != SESSION_CHARSET:
            return (
                f"the URL's query sets 'charset' to other than {SESSION_CHARSET}, which "
                "every session of aishell's uses; remove it"
            )
        if key not in known:
            return (
                f"the URL's query has {key!r}, which is no PyMySQL connect argument "
                f"(known: {', '.join(known)})"
            )
        if key in TLS_FLAGS:
            try:
                flag(value)
            except ValueError:
                return f"the URL's query {key}={value} is neither true nor false"
    return _tls_file_problem(query)


def _tls_file_problem(query: Mapping[str, Any]) -> str | None:
    for key in TLS_FILES:
        path = query.get(key)
        if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            return f"the URL's query {key} {path}: no file aishell can read"
    capath = query.get("ssl_capath")
    if capath is not None and not os.path.isdir(capath):
        return f"the URL's query ssl_capath {capath}: no folder"
    return None


def session_tls(cparams: dict[str, Any]) -> None:
    """PyMySQL's arguments with the URL's TLS settings read by tls_of: required TLS as a
    context of its own, ssl_disabled as True, neither left to the preferred mode."""
    given = cparams.pop("ssl", None)
    values: dict[str, Any] = {}
    if isinstance(given, dict):  # SQLAlchemy's: ssl_ca as "ca", ...
        values |= {f"ssl_{k}": v for k, v in given.items()}
    elif given is not None:
        cparams["ssl"] = given
    values |= {k: cparams.pop(k) for k in TLS_KEYS if k in cparams}
    tls = tls_of(values)
    if tls.disabled:
        cparams["ssl_disabled"] = True
    elif tls.required:
        cparams["ssl"] = tls.context()
