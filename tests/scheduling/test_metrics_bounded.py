"""`aishell metrics` reads only what it shows: each last run's steps counted by the store
and only its purges' outputs read, never every step's params and SQL (a run of 100,000
steps cost seconds and hundreds of megabytes). The text is what reading each run whole
gave, on a SQLite store and on one on PostgreSQL; a step changed outside aishell is
shown as stored by the metrics (opened without the key, as before) and refused by a
store with the key."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, update

from aishell.config.models import Config
from aishell.errors import StateTampered
from aishell.scheduling import metrics
from aishell.state.schema import steps
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from tests.conftest import EditConfig
from tests.helpers import stored_run

PURGING = {"purge_rows": "rows_deleted"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request: pytest.FixtureRequest, edit_config: EditConfig) -> Iterator[Config]:
    if request.param == "sqlite":
        yield edit_config()
        return
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        yield edit_config({"state": {"url": url}})


def _run(store: StateStore, run_id: str, target: str, tools: list[str], bulk: str = "") -> None:
    stored_run(
        store,
        run_id,
        target,
        tools,
        risk=lambda tool: "low",
        params=lambda n: {"table": f"t{n}", "bulk": bulk},
    )


def _step(
    store: StateStore, run_id: str, index: int, status: str, output: Any, error: str | None = None
) -> None:
    store.step_started(run_id, index, {}, [], 1)
    store.step_finished(run_id, index, status, output=output, error=error)
    store.flush()


def _filled(store: StateStore) -> None:
    """Runs of two targets: done, failed and skipped steps, purges with and without a
    count, and a run waiting for approval."""
    _run(store, "oldrun", "alpha", ["purge_rows"])
    store.finish_run("oldrun", "completed")
    _run(store, "alpharun", "alpha", ["purge_rows", "purge_rows", "vacuum", "analyze"])
    _step(store, "alpharun", 0, "completed", {"rows_deleted": 120})
    _step(store, "alpharun", 1, "completed", {"other": 3})
    _step(store, "alpharun", 2, "failed", None, "disk full")
    store.finish_run("alpharun", "failed", "disk full")
    _run(store, "betarun", "beta", ["vacuum", "purge_rows", "analyze"])
    _step(store, "betarun", 0, "completed", {})
    store.record_request("betarun", 1, False, {"risk": "high", "reasons": ["big"]})
    store.finish_run("betarun", "waiting_approval")


def _whole_read(store: StateStore) -> dict[tuple[str, str], tuple[dict[str, int], int | None]]:
    """Each last run's figures as the metrics read them before: the run whole."""
    found = {}
    for key, run in store.last_real_runs().items():
        counts: dict[str, int] = {}
        rows: int | None = None
        for step in store.get_run(run["run_id"])["steps"]:
            counts[step["status"]] = counts.get(step["status"], 0) + 1
            if step["tool"] in PURGING:
                out = step["output"]
                deleted = out.get(PURGING[step["tool"]]) if isinstance(out, dict) else None
                rows = (rows or 0) + int(deleted or 0)
        found[key] = (counts, rows)
    return found


def _text(config: Config, store: StateStore) -> str:
    return metrics.exposition(metrics.collect(config, store, [], PURGING, ["alpha", "beta"]))


def _figures(text: str) -> list[str]:
    """The lines of the text that do not move with the clock."""
    moving = ("aishell_approval_oldest_wait_seconds{",)
    return [line for line in text.splitlines() if not line.startswith(moving)]


def test_the_text_is_what_reading_each_run_whole_gave(store_config: Config) -> None:
    with StateStore(store_config.state_url) as store:
        _filled(store)
        text = _text(store_config, store)
        whole = _whole_read(store)
    assert whole[("alpha", "maintenance")] == ({"completed": 2, "failed": 1, "pending": 1}, 120)
    assert whole[("beta", "maintenance")] == (
        {"completed": 1, "waiting_approval": 1, "pending": 1},
        0,
    )
    for (target, agent), (counts, rows) in whole.items():
        labels = f'agent="{agent}",target="{target}"'
        for status, n in counts.items():
            line = f'aishell_last_run_steps{{agent="{agent}",status="{status}",target="{target}"}}'
            assert f"{line} {float(n)}" in text
        assert f"aishell_last_run_rows_purged{{{labels}}} {float(rows or 0)}" in text
    # In the order reading each run whole gave: by target and agent, then by first step.
    listed = [line for line in text.splitlines() if line.startswith("aishell_last_run_steps{")]
    assert listed == [
        f'aishell_last_run_steps{{agent="{agent}",status="{status}",target="{target}"}} {n:.1f}'
        for (target, agent), (counts, _) in sorted(whole.items())
        for status, n in counts.items()
    ]
    assert 'aishell_approvals_waiting{target="alpha"} 0.0' in text
    assert 'aishell_approvals_waiting{target="beta"} 1.0' in text
    assert 'aishell_approval_oldest_wait_seconds{target="beta"}' in text
    assert 'aishell_approval_oldest_wait_seconds{target="alpha"}' not in text
    with StateStore(store_config.state_url) as again:
        assert _figures(_text(store_config, again)) == _figures(text)


def test_a_step_changed_outside_aishell_is_shown_as_stored_and_refused_with_the_key(
    store_config: Config,
) -> None:
    with StateStore(store_config.state_url, key=load_key(store_config.home)) as store:
        _filled(store)
        assert 'status="failed"' in _text(store_config, store)
    engine = create_engine(store_config.state_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(steps)
                .where((steps.c.run_id == "alpharun") & (steps.c.idx == 3))
                .values(status="completed")
            )
    finally:
        engine.dispose()
    with StateStore(store_config.state_url) as listing:  # as `aishell metrics` opens it
        text = _text(store_config, listing)
    assert 'aishell_last_run_steps{agent="maintenance",status="completed",target="alpha"} 3.0' in (
        text
    )
    keyed = StateStore(store_config.state_url, key=load_key(store_config.home))
    with keyed, pytest.raises(StateTampered, match="alpharun's step 3 \\(status\\)"):
        _text(store_config, keyed)


def test_a_long_run_costs_its_metrics_no_more_memory(edit_config: EditConfig) -> None:
    config = edit_config()
    with StateStore(config.state_url) as store:
        _run(store, "longrun", "alpha", ["vacuum"] * 20_000, bulk="x" * 500)
        store.finish_run("longrun", "completed")
        tracemalloc.start()
        try:
            text = _text(config, store)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert 'status="pending",target="alpha"} 20000.0' in text
    # Reading the run whole held every step's params: over 10 MB.
    assert peak < 2_000_000, f"metrics of one run held {peak} bytes"


def test_runs_read_a_page_of_ids_at_a_time_give_the_same_text(
    store_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More last runs than one statement binds ids for (SQLite binds 32,766 values): the
    ids are read in pages, and pages of one id give the text one page gave."""
    from aishell.state import fleetreads

    with StateStore(store_config.state_url) as store:
        _filled(store)
        whole = _figures(_text(store_config, store))
        monkeypatch.setattr(fleetreads, "_IDS_AT_ONCE", 1)
        assert _figures(_text(store_config, store)) == whole
    assert 'aishell_last_run_rows_purged{agent="maintenance",target="alpha"} 120.0' in "\n".join(
        whole
    )
