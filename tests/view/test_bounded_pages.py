"""Every page of the web view is of a bounded size, whatever the store holds: a run of
100,000 steps shows its first ROWS_SHOWN, how many it has and a link to the next; an error of 10 MB
shows its first TEXT_SHOWN characters and says how many more; as many steps waiting for
approval as a run has, the oldest ROWS_SHOWN; as many target names as the backup
catalog holds, the first ROWS_SHOWN. A link to a run whose stored id holds
`?` or `#` keeps it in the path.

Before, each page sent everything: the run's page 42 MB, the runs page 10 MB for one
such error."""

from __future__ import annotations

from pathlib import Path

from aishell.config.models import Config
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from aishell.view.pages import ROWS_SHOWN
from aishell.view.web import TEXT_SHOWN
from tests.conftest import EditConfig
from tests.fleet.builders import build_fleet, fleet_config
from tests.fleet.test_web import client
from tests.helpers import stored_run

RUN_ID = "h1huge000000"
STEPS = 100_000
WAITING = ROWS_SHOWN + 20
CATALOGUED = ROWS_SHOWN + 10  # target names the catalog holds backups under
HUGE = "<i>" + "x" * 10_000_000
BOUND = 2_000_000  # bytes: far above what the page needs, far below what it held
ODD_ID = "o1odd?token=x#y"


def _huge_run(config: Config) -> None:
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        for run_id, count in ((RUN_ID, STEPS), (ODD_ID, 1)):
            stored_run(
                store,
                run_id,
                "alpha",
                ["rebuild_fragmented_indexes"] * count,
                risk=lambda tool: "high",
            )
        store.step_started(RUN_ID, 0, {}, [], 1)
        store.step_finished(RUN_ID, 0, "failed", error=HUGE)
        for index in range(1, WAITING + 1):
            store.set_step_status(RUN_ID, index, "waiting_approval", "a person's yes")
        store.finish_run(RUN_ID, "waiting_approval", HUGE)
        folder = config.home / "backups"
        folder.mkdir(exist_ok=True)
        for i in range(CATALOGUED):
            (folder / f"kept-{i}").write_bytes(b"backup")
            store.record_backup(target=f"old-{i:04d}", kind="full", path=str(folder / f"kept-{i}"))


def test_every_page_is_bounded(edit_config: EditConfig, home: Path, demo_template: Path) -> None:
    config = fleet_config(edit_config, home, demo_template)
    build_fleet(config)
    _huge_run(config)
    view = client(config)
    more = f"{len(HUGE) - TEXT_SHOWN} more characters"
    for path in ("/", "/runs", f"/runs/{RUN_ID}", "/approvals", "/backups"):
        page = view.get(path)
        assert page.status_code == 200, path
        assert len(page.content) < BOUND, (path, len(page.content))

    runs = view.get("/runs").text
    assert more in runs and "&lt;i&gt;" + "x" * (TEXT_SHOWN - 3) + "…" in runs
    assert 'href="/runs/o1odd%3Ftoken%3Dx%23y"' in runs

    run = view.get(f"/runs/{RUN_ID}").text
    assert run.count(more) == 2  # the run's error and its first step's
    assert run.count('<td class="error">') == ROWS_SHOWN
    assert f"Steps 0 to {ROWS_SHOWN - 1}, of {STEPS}." in run
    assert f'href="/runs/{RUN_ID}?step={ROWS_SHOWN}">Next steps' in run

    approvals = view.get("/approvals").text
    assert approvals.count("a person&#39;s yes") == ROWS_SHOWN
    # With the fleet's own (gamma's, the oldest, shown first).
    assert f"1 to {ROWS_SHOWN} of the {WAITING + 1} that wait" in approvals
    assert "c1waiting000" in approvals and f'href="/approvals?offset={ROWS_SHOWN}"' in approvals

    backups = view.get("/backups").text
    # The four configured targets with them; alpha and beta among the catalogued.
    assert backups.count("<tr>") == 1 + ROWS_SHOWN
    assert f"Targets 1 to {ROWS_SHOWN} of {CATALOGUED + 4}, by name." in backups
    assert f'href="/backups?offset={ROWS_SHOWN}">Next targets' in backups
