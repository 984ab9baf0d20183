"""A local HTTP server that speaks the Ollama API (/api/tags, /api/chat, streaming off)
and plays back scripted answers, so the real `ollama` client is tested end to end."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Script:
    """What the server answers: chat contents in order (a dict is sent as JSON text, a
    str as is), the models it has, and failures to give first."""

    answers: list[Any] = field(default_factory=list)
    models: list[str] = field(default_factory=lambda: ["planner-test:latest"])
    # HTTP statuses to answer /api/chat with before the scripted answers.
    chat_failures: list[int] = field(default_factory=list)
    # Seconds to think before each chat answer.
    delay: float = 0.0
    # Seconds between the bytes of each chat answer's body (0: all at once).
    drip: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def chats(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"] == "/api/chat"]


class _Handler(BaseHTTPRequestHandler):
    script: Script

    def log_message(self, *_: Any) -> None:  # quiet test output
        pass

    def _send(self, status: int, body: dict[str, Any], drip: float = 0.0) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not drip:
                self.wfile.write(data)
                return
            for at in range(len(data)):
                self.wfile.write(data[at : at + 1])
                self.wfile.flush()
                time.sleep(drip)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout test)

    def do_GET(self) -> None:
        with self.script.lock:
            self.script.requests.append({"path": self.path, "body": None})
        if self.path == "/api/tags":
            self._send(
                200,
                {
                    "models": [
                        {
                            "name": m,
                            "model": m,
                            "modified_at": "2026-11-01T00:00:00Z",
                            "size": 1,
                            "digest": "0" * 64,
                            "details": {"format": "gguf", "family": "test"},
                        }
                        for m in self.script.models
                    ]
                },
            )
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.script.lock:
            self.script.requests.append({"path": self.path, "body": body})
            failure = self.script.chat_failures.pop(0) if self.script.chat_failures else None
            answer = self.script.answers.pop(0) if failure is None and self.script.answers else None
        if self.path != "/api/chat":
            self._send(404, {"error": "not found"})
            return
        if body.get("stream", True):
            self._send(400, {"error": "this test server does not stream"})
            return
        model = str(body.get("model"))
        if model not in self.script.models and f"{model}:latest" not in self.script.models:
            self._send(404, {"error": f"model '{body.get('model')}' not found"})
            return
        if failure is not None:
            self._send(failure, {"error": "server busy"})
            return
        time.sleep(self.script.delay)
        if answer is None:
            self._send(500, {"error": "the script has no more answers"})
            return
        content = answer if isinstance(answer, str) else json.dumps(answer)
        self._send(
            200,
            {
                "model": body["model"],
                "created_at": "2026-11-22T00:00:00Z",
                "message": {"role": "assistant", "content": content},
                "done": True,
                "done_reason": "stop",
            },
            self.script.drip,
        )


@contextmanager
def fake_ollama(script: Script, port: int = 0) -> Iterator[str]:
    """Serve the script on 127.0.0.1; yields the server's address."""
    handler = type("Handler", (_Handler,), {"script": script})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    # Polled often: the shutdown at the end waits one poll.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
