"""The web view through Starlette's TestClient: every page over a fleet of four targets,
nothing a request can change (any method but GET and HEAD is 405, and the store's rows
stay as they were), whatever a database or a person wrote shown as text, and who is
served: this host always; another host only with the configured token."""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import ConfigError, UsageError
from aishell.view.access import check_binding, configured_token, is_loopback
from aishell.view.serve import serve_http
from aishell.view.web import SECURITY_HEADERS, make_app
from tests.conftest import EditConfig
from tests.fleet.builders import (
    FAILED_ERROR,
    RUN_IDS,
    WAITING_REASON,
    build_fleet,
    fleet_config,
    row_counts,
)
from tests.fleet.served import serving
from tests.helpers import logged

TOKEN = "view-token-0123456789abcdef"
LOCAL = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)
PAGES = ("/", "/runs", f"/runs/{RUN_IDS['beta']}", "/approvals", "/backups")


@pytest.fixture
def fleet(edit_config: EditConfig, home: Path, demo_template: Path) -> Config:
    config = fleet_config(edit_config, home, demo_template)
    build_fleet(config)
    return config


def client(config: Config, where: tuple[str, int] = LOCAL, token: str | None = None) -> TestClient:
    """A client at `where` that names this host, as a browser given 127.0.0.1 does."""
    app = make_app(config, None if token is None else token.encode())
    return TestClient(app, base_url="http://127.0.0.1:8765", client=where)


def test_every_page_shows_the_fleet(fleet: Config) -> None:
    view = client(fleet)
    answers = {path: view.get(path) for path in PAGES}
    for path, answer in answers.items():
        assert answer.status_code == 200, path
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (path, name)
        assert answer.headers["content-type"].startswith("text/html")
    fleet_page = answers["/"].text
    assert "never ran" in fleet_page and "nightly-alpha" in fleet_page
    assert "26.0 h old" in fleet_page
    runs = answers["/runs"].text
    assert all(run_id in runs for run_id in RUN_IDS.values())
    failed = answers[f"/runs/{RUN_IDS['beta']}"].text
    assert "check_table_corruption" in failed and 'class="status failed"' in failed
    # What the database said is text on the page, never markup.
    assert "&lt;b&gt;not markup&lt;/b&gt;" in failed and "<b>not markup</b>" not in failed
    assert FAILED_ERROR not in failed
    assert WAITING_REASON.replace("'", "&#39;") in answers["/approvals"].text
    assert RUN_IDS["gamma"] in answers["/approvals"].text
    backups = answers["/backups"].text
    assert backups.count("<tr>") == 5  # the header and the four targets
    assert view.head("/").status_code == 200
    assert view.get("/static/style.css").status_code == 200
    assert view.get("/runs/nosuchrun").status_code == 404


def test_no_method_but_get_changes_or_reaches_anything(fleet: Config) -> None:
    before = row_counts(fleet)
    view = client(fleet)
    for path in (*PAGES, f"/runs/{RUN_IDS['gamma']}", "/static/style.css"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            answer = view.request(method, path, data={"decision": "approve"})
            assert answer.status_code == 405, (method, path)
            assert answer.headers["x-frame-options"] == "DENY"
    assert row_counts(fleet) == before
    assert before["runs"] == 3


def test_a_websocket_is_closed_before_any_route(fleet: Config) -> None:
    """The access rules judge HTTP requests: a websocket, from anywhere, is refused by
    policy (1008) before a route could take it, whatever routes come later."""
    for where in (LOCAL, REMOTE):
        view = client(fleet, where)
        with pytest.raises(WebSocketDisconnect) as refused, view.websocket_connect("/"):
            pass
        assert refused.value.code == 1008, where


def test_another_host_needs_the_token(fleet: Config) -> None:
    assert client(fleet, REMOTE).get("/").status_code == 403  # no token configured
    view = client(fleet, REMOTE, TOKEN)
    refused = view.get("/runs")
    assert refused.status_code == 401 and TOKEN not in refused.text
    assert refused.headers["cache-control"] == "no-store"
    assert view.get("/", headers={"Authorization": "Bearer wrong-token"}).status_code == 403
    assert view.get("/?token=wrong-token").status_code == 403
    assert view.post("/runs").status_code == 401  # refused before any route
    bearer = view.get("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200 and RUN_IDS["beta"] in bearer.text
    with logged() as lines:
        by_query = view.get(f"/?token={TOKEN}")
    assert by_query.status_code == 200
    assert lines == ["GET / 200 from 203.0.113.7"]  # the query, and the token, never
    # Links on a page opened with ?token= carry it on, so the next page opens too.
    assert f'href="/approvals?token={TOKEN}"' in by_query.text
    assert view.post(f"/runs?token={TOKEN}").status_code == 405


def test_a_request_a_local_proxy_relayed_is_not_local(fleet: Config) -> None:
    relayed = {"X-Forwarded-For": "198.51.100.4"}
    assert client(fleet).get("/", headers=relayed).status_code == 403
    view = client(fleet, token=TOKEN)
    assert view.get("/", headers={**relayed, "Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client(fleet, ("::1", 50000)).get("/").status_code == 200
    assert client(fleet, ("testclient", 50000)).get("/").status_code == 403  # not an address


def test_a_page_naming_another_host_is_no_local_request(fleet: Config) -> None:
    """DNS rebinding: a web page the person opens points a name of its own at 127.0.0.1,
    and its script reads the view from this host. Only its Host header tells it apart."""
    with serving(fleet.home) as (_, url):
        port = url.rsplit(":", 1)[1].rstrip("/")
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            opened = urllib.request.Request(url + "runs", headers={"Host": host})
            with urllib.request.urlopen(opened, timeout=30) as answer:
                assert answer.status == 200, host
                assert RUN_IDS["beta"] in answer.read().decode()
        rebound = urllib.request.Request(url + "runs", headers={"Host": f"evil.example:{port}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=30)
        assert refused.value.code == 403
        shown = refused.value.read().decode()
        assert RUN_IDS["beta"] not in shown and "Host header" in shown
    # With a token configured, such a request is served with it alone.
    view = client(fleet, token=TOKEN)
    assert view.get("/", headers={"Host": "evil.example"}).status_code == 401
    bearer = {"Host": "evil.example", "Authorization": f"Bearer {TOKEN}"}
    assert view.get("/", headers=bearer).status_code == 200


def test_the_token_comes_from_the_environment_or_a_private_file(
    edit_config: EditConfig, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert configured_token(edit_config()) is None
    config = edit_config({"web": {"token_env": "AISHELL_WEB_TOKEN"}})
    monkeypatch.delenv("AISHELL_WEB_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="AISHELL_WEB_TOKEN"):
        configured_token(config)
    monkeypatch.setenv("AISHELL_WEB_TOKEN", "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        configured_token(config)
    monkeypatch.setenv("AISHELL_WEB_TOKEN", TOKEN)
    assert configured_token(config) == TOKEN.encode()
    token_file = home / "web.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o644)
    from_file = edit_config({"web": {"token_env": None, "token_file": "web.token"}})
    with pytest.raises(ConfigError, match="chmod 600"):
        configured_token(from_file)
    os.chmod(token_file, 0o600)
    assert configured_token(from_file) == TOKEN.encode()
    with pytest.raises(ConfigError, match="not both"):
        edit_config({"web": {"token_env": "AISHELL_WEB_TOKEN", "token_file": "web.token"}})


def test_listening_beyond_loopback_needs_a_token(config: Config) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_binding("127.0.0.1", None)
    check_binding("0.0.0.0", TOKEN.encode())
    with pytest.raises(UsageError, match=r"^Refusing to listen on 0\.0\.0\.0: .*token"):
        serve_http(config, "0.0.0.0", 0)


def test_serve_says_what_it_refuses_in_one_line(config: Config) -> None:
    runner = CliRunner()
    bare = runner.invoke(cli, ["serve"])
    assert bare.exit_code == 2 and "--http" in bare.output
    wide = runner.invoke(cli, ["serve", "--http", "--host", "0.0.0.0"])
    assert wide.exit_code == 2
    assert wide.output.strip().splitlines() == [
        "Error: Refusing to listen on 0.0.0.0: a host other than loopback needs a token "
        "(web.token_env or web.token_file in the config)"
    ]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stopped_by_a_signal_ends_as_its_normal_end(config: Config, stop) -> None:
    """The web view stopped by its operator (a service manager's SIGTERM, a Ctrl-C)
    ends with exit 0 and no error line: uvicorn raises the signal again once it has
    shut down, which ended the command as "interrupted" (SIGINT) or silently by the
    signal's default (SIGTERM)."""
    with serving(config.home) as (serve, url):
        assert serve.stderr is not None
        with urllib.request.urlopen(url, timeout=30) as answer:  # serving, signals taken
            assert answer.status == 200
        serve.send_signal(stop)
        rest = serve.stderr.read()
        code = serve.wait(timeout=30)
    assert code == 0, (code, rest)
    assert "Error" not in rest, rest
