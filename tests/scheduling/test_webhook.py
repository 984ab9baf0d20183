"""The webhook notifier, against a real HTTP server on 127.0.0.1: what it is sent (the
JSON body and its headers), and how each way of failing (an error status, a refused
connection, no answer within the timeout, an answer dripped past it) becomes one line,
logged and returned, that never holds the webhook's URL; a redirect is one of them, never
followed."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aishell.config.models import NotificationsConfig
from aishell.scheduling import notify
from tests.helpers import closed_port, logged

MESSAGE = {"run_id": "r1", "schedule": "nightly", "status": "failed", "error": "t\x1b[2J"}
TOKEN = "s3cret-token"


@dataclass
class Received:
    """What the server was sent, one (method, path, headers, body) per request."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


class _Hook(BaseHTTPRequestHandler):
    received: Received
    STATUS = {"/ok": 200, "/accepted": 204, "/broken": 500, "/gone": 404}
    REDIRECTS = (301, 302, 303, 307, 308)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer("POST", body)

    def do_GET(self) -> None:
        self._answer("GET", b"")

    def _answer(self, method: str, body: bytes) -> None:
        path = self.path.split("?")[0].removesuffix(f"/{TOKEN}")
        self.received.requests.append((method, path, dict(self.headers), body))
        if path == "/slow":
            time.sleep(3)
        moved = path.removeprefix("/moved/")
        if moved.isdigit():  # sent on: to /ok, which answers anything 200
            self.send_response(int(moved))
            self.send_header("Location", f"/ok/{TOKEN}")
        else:
            self.send_response(self.STATUS.get(path, 200))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, Received]]:
    """The server's base URL and what it receives."""
    received = Received()
    handler = type("Hook", (_Hook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def send(url: str, timeout: float = 5.0) -> tuple[list[str], list[str]]:
    """notify.send to the webhook alone: (its failures, the lines it logged)."""
    config = NotificationsConfig(webhook=url, timeout_seconds=timeout)
    with logged() as lines:
        failures = notify.send(config, dict(MESSAGE))
    return failures, lines


def test_a_webhook_is_posted_the_json_with_its_headers(hook: tuple[str, Received]) -> None:
    base, received = hook
    failures, lines = send(f"{base}/ok")
    assert failures == [] and lines == []
    ((method, path, headers, body),) = received.requests
    assert (method, path) == ("POST", "/ok")
    assert body == json.dumps(MESSAGE, sort_keys=True).encode()
    assert "\x1b" not in body.decode()  # escaped in the JSON, as \u001b
    assert json.loads(body) == MESSAGE
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "aishell"
    assert headers["Content-Length"] == str(len(body))


def test_any_2xx_is_delivered(hook: tuple[str, Received]) -> None:
    base, _ = hook
    assert send(f"{base}/accepted") == ([], [])


@pytest.mark.parametrize(
    ("path", "said"),
    [("/broken", "HTTP Error 500: Internal Server Error"), ("/gone", "HTTP Error 404: Not Found")],
)
def test_an_error_status_is_one_line_logged_and_returned(
    hook: tuple[str, Received], path: str, said: str
) -> None:
    base, received = hook
    failures, lines = send(f"{base}{path}/{TOKEN}")
    assert failures == [f"notify webhook failed: {said}"]
    assert lines == [f"r1: notify webhook failed: {said}"]
    assert len(received.requests) == 1  # said once, not retried
    assert TOKEN not in lines[0]


@pytest.mark.parametrize("status", _Hook.REDIRECTS)
def test_a_redirect_is_not_followed(hook: tuple[str, Received], status: int) -> None:
    """A 307 or 308 would carry the summary to wherever the hook points; a 301, 302 or
    303 would go on as a GET without it and, answered 200, pass for delivered."""
    base, received = hook
    failures, lines = send(f"{base}/moved/{status}/{TOKEN}")
    said = (
        f"notify webhook failed: HTTP {status} sends the notification on elsewhere, which "
        "is not followed; set notifications.webhook to the URL that takes it"
    )
    assert (failures, lines) == ([said], [f"r1: {said}"])
    assert [(m, p) for m, p, _, _ in received.requests] == [("POST", f"/moved/{status}")]


def test_a_refused_connection_is_one_line_without_the_url() -> None:
    failures, lines = send(f"http://127.0.0.1:{closed_port()}/hook/{TOKEN}")
    assert failures == ["notify webhook failed: [Errno 111] Connection refused"]
    assert lines == ["r1: notify webhook failed: [Errno 111] Connection refused"]


def test_no_answer_within_the_timeout_fails_at_the_timeout(hook: tuple[str, Received]) -> None:
    """Bound: the timeout is 1 s and the server answers after 3 s; send returns in 2.5 s."""
    base, received = hook
    started = time.monotonic()
    failures, lines = send(f"{base}/slow/{TOKEN}", timeout=1.0)
    assert time.monotonic() - started < 2.5
    said = "notify webhook failed: no answer within 1 s (notifications.timeout_seconds)"
    assert failures == [said]
    assert lines == [f"r1: {said}"]
    assert len(received.requests) == 1


def test_an_answer_dripped_past_the_timeout_fails_at_the_timeout() -> None:
    """A server that answers a byte every 0.2 s, never waiting as long as the timeout
    between two: each wait for a byte is short, the whole POST is not. Bound: the
    timeout is 1 s, its answer would take 200 s; send returns in 2.5 s."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        client, _ = server.accept()
        with client:
            client.recv(65536)
            client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.2):
                try:
                    client.sendall(b"x")
                except OSError:
                    return

    threading.Thread(target=drip, daemon=True).start()
    try:
        started = time.monotonic()
        failures, lines = send(f"http://127.0.0.1:{server.getsockname()[1]}/{TOKEN}", 1.0)
        assert time.monotonic() - started < 2.5
    finally:
        stop.set()
        server.close()
    said = "notify webhook failed: no answer within 1 s (notifications.timeout_seconds)"
    assert (failures, lines) == ([said], [f"r1: {said}"])


def test_a_failure_is_a_warning_of_the_notify_logger(
    hook: tuple[str, Received], caplog: pytest.LogCaptureFixture
) -> None:
    base, _ = hook
    with caplog.at_level(logging.INFO, logger="aishell"):
        send(f"{base}/broken")
    assert [(r.name, r.levelname) for r in caplog.records] == [
        ("aishell.scheduling.notify", "WARNING")
    ]
