"""PyMySQL connections that share one TLS context for the preferred mode.

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
    """The engine's do_connect: PyMySQL's own connection but for its TLS context."""
    return SharedTlsConnection(*cargs, **cparams)
