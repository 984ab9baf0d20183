"""What a database or a server wrote shows on the web view's pages as it would in a
terminal: a bidi override, an escape sequence or any other control character as a
visible escape, never as a character that reorders or hides the text around it."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from aishell.config.models import Config
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from aishell.view.web import make_app
from tests.conftest import EditConfig
from tests.fleet.builders import build_fleet, fleet_config

RUN_ID = "d1spoofed000"
# A name written backwards behind a right-to-left override reads forwards on a page.
SPOOFED = "table \u202eelbat_eurt\u202c is locked\x1b[2J\r\nby another session"
SHOWN = "table \\u202eelbat_eurt\\u202c is locked\\x1b[2J\\x0d\nby another session"


def test_control_characters_show_as_escapes(
    edit_config: EditConfig, home: Path, demo_template: Path
) -> None:
    config: Config = fleet_config(edit_config, home, demo_template)
    build_fleet(config)
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        store.create_run(
            run_id=RUN_ID,
            agent="maintenance",
            target="alpha",
            dialect="sqlite",
            job={"type": "quick"},
            plan={},
            plan_hash="0" * 64,
            tool_fingerprints={},
            dry_run=False,
            safety_level="strict",
            step_rows=[
                {
                    "index": 0,
                    "step_id": "step_0",
                    "tool": "analyze_database_health",
                    "risk_level": "safe",
                    "params": {},
                }
            ],
        )
        store.step_started(RUN_ID, 0, {}, [], 1)
        store.step_finished(RUN_ID, 0, "failed", error=SPOOFED)
        store.finish_run(RUN_ID, "failed", SPOOFED)
    view = TestClient(
        make_app(config, None), base_url="http://127.0.0.1:8765", client=("127.0.0.1", 50000)
    )
    for path in ("/runs", f"/runs/{RUN_ID}"):
        page = view.get(path)
        assert page.status_code == 200, path
        assert "\u202e" not in page.text and "\x1b" not in page.text, path
        assert page.text.count(SHOWN) == (1 if path == "/runs" else 2), path
