"""`aishell serve --http`: the web view on uvicorn, in the foreground until SIGINT or
SIGTERM. The socket is bound here, before uvicorn starts, so that a port in use or a
host refused is one line; uvicorn's own access log stays off (a query may hold the
token): web.Guard logs each request without it."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.state.store import StateStore
from aishell.view.access import check_binding, configured_token
from aishell.view.web import make_app

logger = logging.getLogger(__name__)


def listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"Cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"Cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve_http(
    config: Config, host: str, port: int, listening: Callable[[str], None] | None = None
) -> None:
    """Serve until stopped. `listening` is told the URL once the socket is bound (with
    the port the system chose for port 0)."""
    token = configured_token(config)
    check_binding(host, token)
    StateStore(config.state_url).close()  # a store that does not open is said now, once
    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}/"
    settings = uvicorn.Config(
        make_app(config, token),
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    if listening is not None:
        listening(url)
    logger.info("serving the read-only web view at %s", url)
    try:
        with _stops_end_serving():
            uvicorn.Server(settings).run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        sock.close()
    logger.info("stopped serving the web view")


class _Stopped(Exception):
    """SIGINT or SIGTERM ended serving."""


@contextmanager
def _stops_end_serving() -> Iterator[None]:
    """SIGINT and SIGTERM end serving as its normal end (exit 0). uvicorn takes them
    while it serves and, once it has shut down, raises them again for the handlers it
    found: these, which end the serving (as one before uvicorn took them does)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def served(_signum: int, _frame: Any) -> None:
        raise _Stopped

    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, served) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
