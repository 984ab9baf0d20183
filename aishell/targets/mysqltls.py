"""PyMySQL connections that share one TLS context for the preferred mode, and send
their password as the clients do.

With no TLS option, PyMySQL tries TLS when the server offers it (the preferred mode)
and builds a new default context for every connection: loading the system's
certificates takes about 20 ms each time, more than a run's own statements on a small
database. The context holds no per-connection state, so one serves them all; explicit
TLS options still get a context of their own.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

import pymysql

_lock = threading.Lock()
_preferred: list[ssl.SSLContext] = []


class SharedTlsConnection(pymysql.connections.Connection):  # type: ignore[misc]
    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        if sslp != {}:
            made: ssl.SSLContext = super()._create_ssl_ctx(sslp)
            return made
        with _lock:
            if not _preferred:
                _preferred.append(super()._create_ssl_ctx({}))
            return _preferred[0]


def connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> SharedTlsConnection:
    """The engine's do_connect: PyMySQL's own connection but for its TLS context, and
    the password sent as the clients send it."""
    utf8_password(cparams)
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
    """On an engine of PyMySQL's own connections: utf8_password before each connect."""
    from sqlalchemy import event

    def password(_dialect: Any, _record: Any, _cargs: Any, cparams: Any) -> None:
        utf8_password(cparams)

    event.listen(engine, "do_connect", password, insert=True)
