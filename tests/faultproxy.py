"""A TCP proxy a test owns, in front of a real server, to cause network faults for real.

- freeze(): from then on it swallows every byte both ways and answers no new connection
  (a cancel request included), like a hung host;
- cut(): every connection is closed at once, both sides, like a dropped network;
- hold(marker): the next client message that holds `marker` (b"COMMIT") is kept from
  the server, with everything its client sends after it, until release(); the server
  side stays open when the client dies, so a COMMIT can land after its sender is gone,
  as a synchronous standby or a pooler makes it land; hold(marker, after=(b"DELETE",))
  keeps the next such message on a link that has sent messages holding each of `after`
  first, in that order (a batch's COMMIT, not a read's);
- Silent: a listener that accepts every connection and never sends a byte.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class Silent:
    """A TCP listener that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(client)
            self._accepted(client)

    def _accepted(self, client: socket.socket) -> None:
        """Nothing: the connection is held open and never answered."""

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            # Shut down first: a close alone leaves the connection open while a thread
            # of the proxy still waits in recv() on it, and the server's session (in a
            # transaction, holding back every VACUUM of the server) lives on.
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                conn.close()


class _Link:
    """One client connection and its server connection."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.lock = threading.Lock()
        # Bytes kept from the server while a hold is on this link; None: none held.
        self.kept: bytearray | None = None
        # How many of the hold's `after` markers this link has sent, in order.
        self.passed = 0


class Proxy(Silent):
    """Forwards to a real server until told to fault (see the module's docstring)."""

    def __init__(self, port: int) -> None:
        self.upstream = ("127.0.0.1", port)
        self.silent = threading.Event()
        self.links: list[_Link] = []
        self._hold_marker: bytes | None = None
        self._hold_after: tuple[bytes, ...] = ()
        self._holding: _Link | None = None
        self.held_once = threading.Event()
        super().__init__()

    # --- faults -----------------------------------------------------------------------

    def freeze(self) -> None:
        self.silent.set()

    def cut(self) -> None:
        for link in list(self.links):
            for sock in (link.client, link.server):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def hold(self, marker: bytes = b"COMMIT", after: tuple[bytes, ...] = ()) -> None:
        """Keep the next client message holding marker from the server (see release);
        with `after`, only on a link that sent messages holding each of them first."""
        for link in list(self.links):
            link.passed = 0
        self._hold_after = after
        self._hold_marker = marker

    def release(self) -> None:
        """Send what a hold kept on to the server; the link then forwards as before."""
        link = self._holding
        if link is None:
            return
        with link.lock:
            kept, link.kept = link.kept, None
            self._holding = None
            if kept:
                with suppress(OSError):
                    link.server.sendall(bytes(kept))

    def freeze_once_held(
        self, marker: bytes, after: tuple[bytes, ...] = (), wait: float = 60
    ) -> threading.Thread:
        """Hold the next message holding marker (see hold), and freeze the proxy once it
        is held: the server never gets it, and nothing more reaches either side."""
        self.hold(marker, after=after)

        def freeze() -> None:
            if self.held_once.wait(wait):
                self.freeze()

        freezer = threading.Thread(target=freeze, name="freezer", daemon=True)
        freezer.start()
        return freezer

    @contextmanager
    def holding(self, marker: bytes = b"COMMIT") -> Iterator[Proxy]:
        self.hold(marker)
        try:
            yield self
        finally:
            self.release()

    # --- forwarding ---------------------------------------------------------------------

    def _accepted(self, client: socket.socket) -> None:
        if self.silent.is_set():
            return
        server = socket.create_connection(self.upstream)
        self.held.append(server)
        link = _Link(client, server)
        self.links.append(link)
        threading.Thread(target=self._upstream, args=(link,), daemon=True).start()
        threading.Thread(target=self._downstream, args=(link,), daemon=True).start()

    def _upstream(self, link: _Link) -> None:
        while True:
            try:
                data = link.client.recv(65536)
            except OSError:
                data = b""
            if not data:
                # The client is gone: a held message keeps the server side open for its
                # release; otherwise the server sees the client leave.
                if self._holding is not link:
                    with suppress(OSError):
                        link.server.shutdown(socket.SHUT_WR)
                return
            if self.silent.is_set():
                continue
            with link.lock:
                marker, after = self._hold_marker, self._hold_after
                if marker is not None and link.passed < len(after):
                    if after[link.passed] in data:
                        link.passed += 1
                elif link.kept is None and marker is not None and marker in data:
                    self._hold_marker = None
                    self._holding = link
                    link.kept = bytearray()
                    self.held_once.set()
                if link.kept is not None:
                    link.kept += data
                    continue
            try:
                link.server.sendall(data)
            except OSError:
                return

    def _downstream(self, link: _Link) -> None:
        while True:
            try:
                data = link.server.recv(65536)
            except OSError:
                return
            if not data:
                with suppress(OSError):
                    link.client.shutdown(socket.SHUT_RDWR)
                return
            if self.silent.is_set():
                continue
            with suppress(OSError):
                link.client.sendall(data)


def through(proxy_port: int, url: str) -> str:
    """url with its server's port replaced by the proxy's."""
    real = ":5432/" if url.startswith("postgresql") else ":3306/"
    assert real in url
    return url.replace(real, f":{proxy_port}/")


def server_port(url: str) -> int:
    return 5432 if url.startswith("postgresql") else 3306
