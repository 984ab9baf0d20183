"""A page that fails on a row it cannot read (a time another program wrote into the
store) is answered `Internal Server Error` alone, with the security headers and no
traceback, and is logged as a request like any other, with its status 500.

Before, the request that failed left no line in the request log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from starlette.testclient import TestClient

from aishell.config.models import Config
from aishell.view.web import SECURITY_HEADERS, make_app
from tests.conftest import EditConfig
from tests.fleet.builders import RUN_IDS, build_fleet, fleet_config
from tests.helpers import logged


def test_a_failed_page_shows_no_traceback_and_is_logged(
    edit_config: EditConfig, home: Path, demo_template: Path
) -> None:
    config: Config = fleet_config(edit_config, home, demo_template)
    build_fleet(config)
    with sqlite3.connect(config.state_url.split("///", 1)[1]) as db:
        db.execute(
            "UPDATE runs SET created_at = 'not a time', finished_at = NULL WHERE run_id = ?",
            (RUN_IDS["gamma"],),
        )
    view = TestClient(
        make_app(config, None),
        base_url="http://127.0.0.1:8765",
        client=("127.0.0.1", 50000),
        raise_server_exceptions=False,
    )
    with logged() as lines:
        answer = view.get("/approvals")
    assert answer.status_code == 500 and answer.text == "Internal Server Error"
    assert all(answer.headers[name] == value for name, value in SECURITY_HEADERS.items())
    assert any("GET /approvals 500 from 127.0.0.1" in line for line in lines), lines
