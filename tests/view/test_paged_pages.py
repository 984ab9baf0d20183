"""Each page of the web view reads from the store only the rows it shows, and links to
the next page where it cuts: a run's steps from an index on (?step=), its decisions and
the waiting approvals past an offset (?decisions=, ?offset=), the runs listed after the
last one shown (?after=). The store counts the rest.

Before, the run page read every step of the run (a run of 100,000 steps: 29 s and
219 MB, bench/view_pages.py) and checked each one's signature, so a step the page never
showed refused the whole page; the runs and approvals pages had no way past their first
rows; a run id with a NUL in it was a 500 on a PostgreSQL store."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from aishell.config.models import Config
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from aishell.view.pages import ROWS_SHOWN, RUNS_SHOWN
from aishell.view.web import make_app
from tests.conftest import EditConfig
from tests.fleet.builders import fleet_config
from tests.helpers import stored_run

RUN_ID = "p1paged00000"
STEPS = 2 * ROWS_SHOWN + 200
CHANGED = 2 * ROWS_SHOWN + 100  # a step whose status changed outside aishell
WAITING = ROWS_SHOWN + 10
DECIDED = ROWS_SHOWN + 3
OTHER_RUNS = 2 * RUNS_SHOWN + 7
# A link to a page's next, by its words.
NEXT = 'href="([^"]*)">{}<'


def view_of(config: Config) -> TestClient:
    return TestClient(
        make_app(config, None),
        base_url="http://127.0.0.1:8765",
        client=("127.0.0.1", 50000),
        raise_server_exceptions=False,
    )


def _paged_run(config: Config) -> None:
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        stored_run(store, RUN_ID, "alpha", ["analyze_tables"] * STEPS, risk=lambda tool: "high")
        for index in range(WAITING):
            store.set_step_status(RUN_ID, index, "waiting_approval", f"yes for {index}?")
        for index in range(DECIDED):
            store.record_approval(RUN_ID, index, "approved", "dba", "cli", f"decided {index}")
        store.finish_run(RUN_ID, "waiting_approval", "waits")


def _step_indexes(page: str) -> list[str]:
    steps = page.split('<table id="steps">', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr>\s*<td>(\d+)</td>", steps)


def _walk(view: TestClient, path: str, words: str = "Next") -> list[str]:
    """Every page from `path` on, following its link of `words`, each page's text."""
    texts = []
    while path:
        page = view.get(path.replace("&amp;", "&"))
        assert page.status_code == 200, (path, page.text[-500:])
        texts.append(page.text)
        found = re.findall(NEXT.format(words), page.text)
        path = found[0] if found else ""
        assert len(texts) < 20, path
    return texts


def test_a_run_page_reads_and_checks_only_the_steps_it_shows(
    edit_config: EditConfig, home: Path, demo_template: Path
) -> None:
    config = fleet_config(edit_config, home, demo_template)
    _paged_run(config)
    with sqlite3.connect(config.state_url.split("///", 1)[1]) as db:
        db.execute(
            "UPDATE steps SET status = 'succeeded' WHERE run_id = ? AND idx = ?",
            (RUN_ID, CHANGED),
        )
    view = view_of(config)
    first = view.get(f"/runs/{RUN_ID}")
    assert first.status_code == 200, first.text[-500:]
    assert f"Steps 0 to {ROWS_SHOWN - 1}, of {STEPS}." in first.text
    second = view.get(f"/runs/{RUN_ID}?step={ROWS_SHOWN}")
    assert f"Steps {ROWS_SHOWN} to {2 * ROWS_SHOWN - 1}, of {STEPS}." in second.text
    assert f'href="/runs/{RUN_ID}?step={2 * ROWS_SHOWN}">Next steps' in second.text
    shown = [int(i) for page in (first, second) for i in _step_indexes(page.text)]
    assert shown == list(range(2 * ROWS_SHOWN))
    # The page that shows the changed step is refused, as `runs show` refuses the run.
    third = view.get(f"/runs/{RUN_ID}?step={2 * ROWS_SHOWN}")
    assert third.status_code == 500 and f"step {CHANGED}" in third.text
    assert view.get(f"/runs/{RUN_ID}?step={STEPS}").status_code == 200  # past its last


def test_decisions_approvals_and_runs_go_on_past_a_page(
    edit_config: EditConfig, home: Path, demo_template: Path
) -> None:
    config = fleet_config(edit_config, home, demo_template)
    _paged_run(config)
    _other_runs(config)
    view = view_of(config)
    decisions = _walk(view, f"/runs/{RUN_ID}?step={2 * ROWS_SHOWN}", "Next decisions")
    decided = [int(d) for page in decisions for d in re.findall(r"<td>decided (\d+)</td>", page)]
    assert decided == list(range(DECIDED))
    assert f"Decisions 1 to {ROWS_SHOWN}, of {DECIDED}." in decisions[0]

    approvals = _walk(view, "/approvals")
    asked = [int(d) for page in approvals for d in re.findall(r"<td>yes for (\d+)\?</td>", page)]
    assert asked == list(range(WAITING)) and len(approvals) == 2
    assert f"{ROWS_SHOWN + 1} to {WAITING} of the {WAITING} that wait" in approvals[1]
    assert f">{WAITING}</a>, oldest" in view.get("/").text  # alpha's count, by the store

    listed = [
        run_id
        for page in _walk(view, "/runs", "Older runs")
        for run_id in re.findall(r'<a href="/runs/([^"?]+)">', page)
    ]
    with StateStore(config.state_url) as store:
        every = [run["run_id"] for run in store.list_runs(limit=10 * OTHER_RUNS)]
    assert listed == every and len(every) == OTHER_RUNS + 1


def _other_runs(config: Config) -> None:
    """OTHER_RUNS runs, many begun at the same moment: a page cut between two of them
    goes on with the other."""
    with sqlite3.connect(config.state_url.split("///", 1)[1]) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(runs)")]
        row = dict(zip(columns, db.execute("SELECT * FROM runs").fetchone(), strict=True))
        rows = [
            {
                **row,
                "run_id": f"q{i:011d}",
                "status": "completed",
                "created_at": f"2026-10-0{1 + i % 3}T02:00:00.000+00:00",
            }
            for i in range(OTHER_RUNS)
        ]
        db.executemany(
            f"INSERT INTO runs ({', '.join(columns)}) VALUES "
            f"({', '.join(':' + c for c in columns)})",
            rows,
        )


def test_a_malformed_page_parameter_is_a_line_not_a_page(
    edit_config: EditConfig, home: Path, demo_template: Path
) -> None:
    config = fleet_config(edit_config, home, demo_template)
    _paged_run(config)
    view = view_of(config)
    for query in ("step=-1", "step=abc", "step=1e3", "step=99999999999", "decisions=%00", "step=٣"):
        answer = view.get(f"/runs/{RUN_ID}?{query}")
        assert answer.status_code == 400, query
        assert "takes a whole number" in answer.text and "Traceback" not in answer.text
    assert view.get("/approvals?offset=-5").status_code == 400
    assert view.get("/runs?after=" + "x" * 65).status_code == 400
    assert view.get("/runs?after=nosuchrun").status_code == 404
    assert view.get("/runs/" + "x" * 50_000).status_code == 404


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_pages_of_a_store_on_a_server(
    edit_config: EditConfig, home: Path, demo_template: Path, dialect: str
) -> None:
    """On PostgreSQL and MariaDB as on SQLite: the pages go on, counted by the store; a
    run id no store holds is 404 (PostgreSQL refuses a text with a NUL: a 500 before)."""
    from tests.services import scratch_server

    fleet_config(edit_config, home, demo_template)
    with scratch_server(dialect) as url:
        config = edit_config({"state": {"url": url}})
        _paged_run(config)
        view = view_of(config)
        for path in ("/runs/%00", "/runs/a%00b", "/runs?after=a%00"):
            answer = view.get(path)
            assert answer.status_code == 404, (path, answer.text)
            assert "No run with id" in answer.text
        approvals = _walk(view, "/approvals")
        asked = [
            int(d) for page in approvals for d in re.findall(r"<td>yes for (\d+)\?</td>", page)
        ]
        assert asked == list(range(WAITING))
        assert view.get(f"/approvals?offset={WAITING + 5}").status_code == 200
        assert f">{WAITING}</a>, oldest" in view.get("/").text
        steps = [
            int(i)
            for page in _walk(view, f"/runs/{RUN_ID}", "Next steps")
            for i in _step_indexes(page)
        ]
        assert steps == list(range(STEPS))
        assert RUN_ID in view.get("/runs").text


ODD_ID = 'z"><script>alert(1)</script>'
ODD_TARGET = "<img src=x onerror=alert(1)>"


def test_a_next_link_carries_any_run_id_as_text(
    edit_config: EditConfig, home: Path, demo_template: Path
) -> None:
    """The run a page ends with names the next page: an id or target holding markup is
    text on the page and a quoted value in the link, which opens the page after it."""
    config = fleet_config(edit_config, home, demo_template)
    _paged_run(config)
    with sqlite3.connect(config.state_url.split("///", 1)[1]) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(runs)")]
        row = dict(zip(columns, db.execute("SELECT * FROM runs").fetchone(), strict=True))
        # Newest first: the odd run is the last of the first page.
        ids = [f"n{i:011d}" for i in range(RUNS_SHOWN - 1)] + [ODD_ID, "zzlast"]
        rows = [
            {
                **row,
                "run_id": run_id,
                "target": ODD_TARGET,
                "created_at": f"2027-01-01T{23 - i // 60:02d}:{59 - i % 60:02d}:00.000+00:00",
            }
            for i, run_id in enumerate(ids)
        ]
        db.executemany(
            f"INSERT INTO runs ({', '.join(columns)}) VALUES "
            f"({', '.join(':' + c for c in columns)})",
            rows,
        )
    view = view_of(config)
    first = view.get("/runs").text
    assert "<script>" not in first and "<img" not in first
    assert "&lt;img src=x onerror=alert(1)&gt;" in first
    assert 'href="/runs?after=z%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E">Older runs' in first
    second = view.get("/runs?after=z%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E")
    assert second.status_code == 200 and "zzlast" in second.text and ODD_ID not in second.text
    assert "Older runs" not in _walk(view, "/runs", "Older runs")[-1]
