"""What a broken or hostile model server answers ends the command in one line of bounded
length, never an internal error, and runs nothing: HTTP bodies that are not the Ollama
API (another service at the address, a proxy's page), no answer at all, a draft nested
deeper than any plan's params, and a draft with more faults than a line should hold."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.planners.llm import MAX_NESTING
from tests.fake_ollama import Script
from tests.helpers import digest
from tests.planners.conftest import one_try

MODELS = {
    "models": [
        {
            "name": "planner-test:latest",
            "model": "planner-test:latest",
            "modified_at": "2026-11-01T00:00:00Z",
            "size": 1,
            "digest": "0" * 64,
            "details": {"format": "gguf", "family": "test"},
        }
    ]
}


class Bodies:
    """What the server answers each path with: (status, body as bytes)."""

    def __init__(self) -> None:
        self.tags: tuple[int, bytes] = (200, json.dumps(MODELS).encode())
        self.chat: tuple[int, bytes] = (500, b"")
        # Where every answer sends the client on (a redirect's Location), if anywhere.
        self.location: str | None = None


@pytest.fixture
def bodies() -> Bodies:
    return Bodies()


@pytest.fixture
def raw_host(bodies: Bodies) -> Iterator[str]:
    """A server at the planner's address that answers as `bodies` say, whatever that is."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if bodies.location is not None:
                self.send_header("Location", bodies.location)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(*bodies.tags)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(*bodies.chat)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _one_line(args: list[str]) -> str:
    shown = CliRunner().invoke(cli, args)
    lines = shown.output.strip().splitlines()
    assert len(lines) == 1, shown.output
    assert "internal error" not in lines[0] and "Traceback" not in shown.output, shown.output
    return lines[0]


CHAT = [
    pytest.param((200, b"<html>gateway</html>"), "answered what is not the Ollama API", id="html"),
    pytest.param((200, b"[1, 2]"), "answered what is not the Ollama API", id="a list"),
    pytest.param(
        (200, json.dumps({"message": None}).encode()), "not the Ollama API", id="no message"
    ),
    pytest.param(
        (200, json.dumps({"message": {"role": "assistant", "content": 5}}).encode()),
        "not the Ollama API",
        id="content a number",
    ),
    pytest.param((400, b"[1]"), "answered what is not the Ollama API", id="an error a list"),
    pytest.param(
        (400, json.dumps({"error": {"why": 1}}).encode()),
        'refused the request (HTTP 400): {"why": 1}',
        id="an error an object",
    ),
    pytest.param((400, json.dumps({"error": 5}).encode()), "(HTTP 400): 5", id="an error a number"),
    pytest.param((404, b""), "(HTTP 404): the server gave no reason", id="a bare 404"),
]


@pytest.mark.parametrize(("chat", "said"), CHAT)
def test_a_chat_answer_that_is_not_ollama_s_is_one_line(
    edit_config: Any, demo_db: Path, raw_host: str, bodies: Bodies, chat: tuple, said: str
) -> None:
    config = edit_config(one_try(raw_host))
    bodies.chat = chat
    before = digest(demo_db)
    line = _one_line(["ask", "refresh statistics of users"])
    assert said in line and raw_host in line, line
    assert commands.list_runs(config) == []
    assert digest(demo_db) == before


@pytest.mark.parametrize(
    "tags",
    [
        (200, b"it works"),
        (200, json.dumps({"models": 5}).encode()),
        (200, json.dumps({"models": [{"model": 7}]}).encode()),
        (500, b"[1]"),
    ],
)
@pytest.mark.parametrize("args", [["planner", "check"], ["ask", "refresh statistics of users"]])
def test_a_model_list_that_is_not_ollama_s_is_one_line(
    edit_config: Any, demo_db: Path, raw_host: str, bodies: Bodies, tags: tuple, args: list
) -> None:
    edit_config(one_try(raw_host))
    bodies.tags = tags
    line = _one_line(args)
    assert "answered what is not the Ollama API" in line, line
    assert "point OLLAMA_HOST (or planner.llm.host) at an Ollama server" in line


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _report(baseline: Any) -> dict[str, Any]:
    params = {"maintenance_type": "quick", "baseline": baseline}
    step = {"tool": "generate_maintenance_report", "params": params, "rationale": "report"}
    return {"summary": "a report", "agent": "maintenance", "steps": [step]}


@pytest.mark.parametrize("depth", [MAX_NESTING, 400, 900])
def test_a_draft_nested_deeper_than_a_plan_is_rejected_in_one_line(
    llm_config: Config, demo_db: Path, script: Script, depth: int
) -> None:
    """A few hundred levels parse as JSON, but exhaust the recursion of what checks,
    shows and runs a plan."""
    script.answers = [_report(_nested(depth))]
    line = _one_line(["ask", "--dry-run", "report on the database"])
    assert f"the answer nests deeper than {MAX_NESTING} levels" in line, line
    assert commands.list_runs(llm_config) == []


def test_a_draft_nested_as_plans_are_runs(
    llm_config: Config, demo_db: Path, script: Script
) -> None:
    script.answers = [_report(_nested(8))]
    shown = CliRunner().invoke(cli, ["ask", "report on the database"])
    assert shown.exit_code == 0, shown.output
    assert [r["status"] for r in commands.list_runs(llm_config)] == ["completed"]


def test_a_draft_of_many_faults_is_refused_in_a_line_of_a_few_of_them(
    llm_config: Config, demo_db: Path, script: Script
) -> None:
    """Each of 100 steps with five fields no step has: the first five reasons are
    named, the rest counted."""
    steps = [
        {"tool": "update_table_statistics", "params": {"table": "users"}, "rationale": "r"}
        | {f"extra_{n}": n for n in range(5)}
        for _ in range(100)
    ]
    script.answers = [{"summary": "s", "agent": "maintenance", "steps": steps}]
    line = _one_line(["ask", "refresh statistics of users"])
    assert "step_0: unknown field 'extra_0'" in line
    assert "and 495 more" in line
    assert len(line) < 1500, len(line)


def test_a_job_s_fallback_names_a_few_of_the_last_draft_s_faults(
    llm_config: Config, demo_db: Path, script: Script
) -> None:
    steps = [
        {"tool": "update_table_statistics", "params": {"table": f"t{n}"}, "rationale": "r"}
        for n in range(60)
    ]
    script.answers = [{"summary": "s", "steps": steps}]
    shown = CliRunner().invoke(cli, ["run", "maintenance", "--type", "quick", "--planner", "llm"])
    assert shown.exit_code == 0, shown.output
    warning = next(line for line in shown.output.splitlines() if "rule-based plan" in line)
    assert "table 't0' does not exist" in warning and "and 55 more" in warning, warning


@pytest.fixture
def silent_host() -> Iterator[str]:
    """An address that takes connections and never answers a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    taken: list[socket.socket] = []

    def take() -> None:
        with suppress(OSError):
            while True:
                taken.append(listener.accept()[0])

    threading.Thread(target=take, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for each in taken:
            each.close()


@pytest.mark.parametrize("args", [["planner", "check"], ["ask", "refresh statistics of users"]])
def test_a_server_that_never_answers_is_one_line_at_the_timeout(
    edit_config: Any, demo_db: Path, silent_host: str, args: list
) -> None:
    """Nothing answers the list of models the planner asks first: the line says so, not
    that a model was slow."""
    edit_config(
        {"planner": {"llm": {**one_try(silent_host)["planner"]["llm"], "timeout_seconds": 1}}}
    )
    started = time.monotonic()
    line = _one_line(args)
    assert time.monotonic() - started < 8
    assert f"The server at {silent_host} (planner.llm.host) did not list its models within 1 s" in (
        line
    ), line


def test_a_redirect_is_not_followed_with_the_prompt(
    edit_config: Any, demo_db: Path, raw_host: str, bodies: Bodies
) -> None:
    """The prompt holds the catalog's tables and the job: it goes to the server
    configured, never on to one that server names."""
    sent: list[str] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            sent.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
            self.send_response(500)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        config = edit_config(one_try(raw_host))
        bodies.chat = (307, b"")
        bodies.location = f"http://127.0.0.1:{server.server_address[1]}/api/chat"
        line = _one_line(["ask", "refresh statistics of users"])
    finally:
        server.shutdown()
        server.server_close()
    assert sent == [], "the prompt went where the redirect pointed"
    assert f"The server at {raw_host} sent the request on elsewhere (HTTP 307)" in line, line
    assert commands.list_runs(config) == []
