"""The fault proxy the fault suites use does what they rely on, on each server."""

from __future__ import annotations

import threading
from contextlib import suppress

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.faultproxy import Proxy, server_port, through
from tests.services import engine

HANG = 30  # seconds: a hang detector, never a timing assertion


def _count(url: str) -> int:
    with engine(url).connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM held_commit")).scalar_one())


def test_a_held_commit_lands_on_release_after_its_sender_is_gone(server_url):
    with engine(server_url).begin() as conn:
        conn.execute(text("CREATE TABLE held_commit (id INTEGER PRIMARY KEY)"))
    proxy = Proxy(server_port(server_url))
    try:
        sender = create_engine(through(proxy.port, server_url), poolclass=NullPool)
        conn = sender.connect()
        conn.execute(text("INSERT INTO held_commit VALUES (1), (2)"))
        proxy.hold(b"COMMIT")
        committing = threading.Thread(target=lambda: _commit_quietly(conn), daemon=True)
        committing.start()
        assert proxy.held_once.wait(HANG), "the COMMIT never reached the proxy"
        assert _count(server_url) == 0  # kept from the server
        proxy.links[-1].client.close()  # its sender is gone
        proxy.release()
        for _ in range(HANG * 10):
            if _count(server_url) == 2:
                break
            threading.Event().wait(0.1)
        assert _count(server_url) == 2
    finally:
        proxy.close()


def test_a_cut_ends_the_connection(server_url):
    proxy = Proxy(server_port(server_url))
    try:
        sender = create_engine(through(proxy.port, server_url), poolclass=NullPool)
        with sender.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            proxy.cut()
            try:
                conn.execute(text("SELECT 1"))
            except Exception as exc:  # the driver's lost-connection error
                assert "closed" in str(exc).lower() or "lost" in str(exc).lower(), exc
            else:
                raise AssertionError("a cut connection still answered")
    finally:
        proxy.close()


def _commit_quietly(conn) -> None:
    with suppress(Exception):  # its connection is closed under it
        conn.commit()
