"""`aishell runs list` and `aishell runs show` read a page at a time: the list goes on
after the last run it showed (--after RUN_ID; the text names the next page's command,
--json carries `next_after`), and a run is shown --limit of its steps from --step on,
saying how to see the next ones, while the whole run is still checked: a step changed
outside aishell refuses the run whichever part is asked. A negative number, a step past
the run's last, or an --after no run has is one line and exit code 2.

Before, `runs list` had no way past its first page, and `runs show` of a run of
100,000 steps read and printed every step (34 s and 310 MB; bench/view_pages.py)."""

from __future__ import annotations

import json
import shlex
import sqlite3
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import EXIT_USAGE, StateTampered
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from tests.helpers import stored_run

RUNS = 7
STEPS_SHOWN = 500  # the steps `runs show` shows unless --limit says otherwise
LONG_RUN = "l1long000000"
LONG_STEPS = STEPS_SHOWN + 5


def aishell(*args: str, code: int = 0) -> tuple[str, str]:
    done = CliRunner().invoke(cli, list(args))
    assert done.exit_code == code, (done.stdout, done.stderr)
    return done.stdout, done.stderr


def _store_file(config: Config) -> Path:
    return Path(make_url(config.state_url).database or "")


def _runs(config: Config) -> list[str]:
    """RUNS runs, three of them begun at one same time (the id decides among those);
    their ids as the list orders them, newest first."""
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        for index in range(RUNS):
            stored_run(store, f"r{index}", "demo", [])
    times = [f"2026-11-0{i}T02:00:00.000+00:00" for i in (1, 2, 3, 3, 3, 4, 5)]
    with sqlite3.connect(_store_file(config)) as conn:
        for index, at in enumerate(times):
            conn.execute("UPDATE runs SET created_at = ? WHERE run_id = ?", (at, f"r{index}"))
    return ["r6", "r5", "r2", "r3", "r4", "r1", "r0"]


def test_runs_list_goes_on_after_the_last_run_it_showed(home: Path, config: Config) -> None:
    newest_first = _runs(config)
    seen: list[str] = []
    after: list[str] = []
    while True:
        page = json.loads(aishell("runs", "list", "--limit", "2", "--json", *after)[0])
        seen += [r["run_id"] for r in page["runs"]]
        if page["next_after"] is None:
            break
        assert page["next_after"] == seen[-1]
        after = ["--after", page["next_after"]]
    assert seen == newest_first
    # The text names the command that lists the next page, with the options given.
    text = aishell("runs", "list", "--limit", "3", "--status", "running")[0]
    told = text.split("Older runs: ", 1)[1].strip()
    assert told == "aishell runs list --status running --limit 3 --after r2"
    rest = aishell(*shlex.split(told)[1:])[0]
    assert rest.split("Older runs: ", 1)[1].strip().endswith("--limit 3 --after r1")
    last = aishell("runs", "list", "--after", "r1")[0]
    assert "r0" in last and "Older runs" not in last
    # Through the store as well as the light read: a store to upgrade goes the full way.
    with sqlite3.connect(_store_file(config)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0011_backup_seal'")
        conn.execute("DROP INDEX IF EXISTS ix_runs_newest")
    page = json.loads(aishell("runs", "list", "--limit", "2", "--after", "r2", "--json")[0])
    assert [r["run_id"] for r in page["runs"]] == ["r3", "r4"]
    assert page["next_after"] == "r4"


def test_a_bad_page_is_one_line_and_exit_code_2(home: Path, config: Config) -> None:
    _runs(config)
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        stored_run(store, LONG_RUN, "demo", ["analyze_tables"] * 3)
    for args, said in (
        (["runs", "list", "--after", "nosuchrun"], "No run with id 'nosuchrun'"),
        (["runs", "list", "--after", "r"], "No run with id 'r'"),  # a full id, not a prefix
        (["runs", "list", "--after", ""], "the value is empty"),
        (["runs", "list", "--limit", "-1"], "-1"),
        (["runs", "show", LONG_RUN, "--step", "-1"], "-1"),
        (["runs", "show", LONG_RUN, "--limit", "0"], "0"),
        (["runs", "show", LONG_RUN, "--step", "3"], "has 3 steps (from 0 to 2); none from step 3"),
    ):
        err = aishell(*args, code=EXIT_USAGE)[1]
        assert said in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) <= 3, err  # click's usage lines at most


def _long_run(config: Config) -> None:
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        stored_run(store, LONG_RUN, "demo", ["analyze_tables"] * LONG_STEPS)
        store.set_step_status(LONG_RUN, STEPS_SHOWN + 1, "waiting_approval", "a person's yes")
        store.record_approval(LONG_RUN, STEPS_SHOWN + 1, "approved", "dba", "cli", "fine")
        store.record_approval(LONG_RUN, 1, "approved", "dba", "cli", "early")


def test_runs_show_shows_a_part_of_a_long_run_and_how_to_see_the_next(
    home: Path, config: Config
) -> None:
    _long_run(config)
    first = json.loads(aishell("runs", "show", LONG_RUN, "--json")[0])
    assert [s["index"] for s in first["steps"]] == list(range(STEPS_SHOWN))
    assert first["sizes"] == {"steps": LONG_STEPS, "approvals": 2}
    assert first["next_step"] == STEPS_SHOWN
    assert [a["step_idx"] for a in first["approvals"]] == [1]  # those of the steps shown
    last = json.loads(aishell("runs", "show", LONG_RUN, "--step", str(STEPS_SHOWN), "--json")[0])
    assert [s["index"] for s in last["steps"]] == list(range(STEPS_SHOWN, LONG_STEPS))
    assert last["next_step"] is None
    assert [a["step_idx"] for a in last["approvals"]] == [STEPS_SHOWN + 1]
    text = aishell("runs", "show", LONG_RUN, "--step", "2", "--limit", "3")[0]
    assert f"Steps 2 to 4 of {LONG_STEPS:,} shown; the next: " in text
    assert f"aishell runs show {LONG_RUN} --step 5 --limit 3." in text
    assert "  5 analyze_tables" not in text and "  4 analyze_tables" in text


def test_a_step_changed_outside_aishell_refuses_every_part_of_its_run(
    home: Path, config: Config
) -> None:
    _long_run(config)
    changed = LONG_STEPS - 1  # on no part but the last
    with sqlite3.connect(_store_file(config)) as conn:
        conn.execute(
            "UPDATE steps SET status = 'succeeded' WHERE run_id = ? AND idx = ?",
            (LONG_RUN, changed),
        )
    for part in ([], ["--step", "0", "--limit", "2"], ["--step", str(STEPS_SHOWN)]):
        err = aishell("runs", "show", LONG_RUN, *part, code=StateTampered.exit_code)[1]
        assert f"step {changed}" in err and "changed outside aishell" in err, (part, err)
