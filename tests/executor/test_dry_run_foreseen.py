"""A dry run's step after one it only previewed (the count after a purge, the statistics
step the purge's size decides) shows what its run sends, given what is known by then:
the same statements the run renders and its audit records, or a marked placeholder
naming what only the run knows; never every statement shape its tool declares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.guard.statements import driver_to_text
from aishell.plan.model import Plan, Step
from aishell.state.store import StateStore
from tests.handlers.purge.test_log_cleanup import fill, job
from tests.handlers.purge.test_purge_estimates import _analyze
from tests.helpers import scratch_target, use_target
from tests.services import scratch_postgresql

# Step 2 counts after the purge (step 1); step 3 refreshes the statistics after it.
RECOUNT, STATISTICS = 2, 3
# What a count derived after a purge shows: it sends nothing.
DERIVED = "-- no statement: the estimate before the purge less the rows the purge deleted"
# Every purge is large enough for step 3 to run.
EXTRA = {"statistics_after_rows": 1, "batch_size": 500}


def _same(sql: str) -> str:
    """A statement with every bound value as `?` and its whitespace single spaces, as the
    rendered text and the driver's text both write it."""
    return " ".join(re.sub(r"%\(\w+\)s|\$\d+|\?|(?<![:\w]):\w+", "?", sql).split())


def _audit(config: Config, run_id: str, index: int) -> list[str]:
    with StateStore(config.state_url) as store:
        rows = store.list_statements(run_id)
    return [_same(driver_to_text(r["sql"], "pyformat")) for r in rows if r["step_index"] == index]


def _statements(sql: list[str]) -> list[str]:
    return [each for each in sql if not each.startswith("--")]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_step_after_a_previewed_purge_shows_what_its_run_sends(dialect: str, home: Path) -> None:
    with scratch_target(dialect, home) as (config, url):
        fill(url)
        if dialect != "sqlite":
            _analyze(url, "events")
        dry = commands.run_job(config, "log_cleanup", job(**EXTRA), dry_run=True)
        assert dry.status == "completed", dry.error
        assert [s.status for s in dry.steps] == ["succeeded"] + ["previewed"] * 3
        real = commands.run_job(config, "log_cleanup", job(**EXTRA))
        assert real.status == "completed", real.error
        for index in (RECOUNT, STATISTICS):
            shown, ran = dry.steps[index].sql, real.steps[index].sql
            sent = _audit(config, real.run_id, index)
            assert [s for s in _statements(shown) if _same(s) not in sent] == [], (shown, sent)
            exact = dialect != "sqlite" and not real.steps[0].output["estimated"]
            if index == RECOUNT and exact:
                # The count before was made exactly (MariaDB's ranges disagreed): the
                # count after estimates afresh, from the table as the purge left it.
                assert shown[0].startswith("-- <estimated when it runs"), shown
                continue
            assert shown == ran
    recount, statistics = dry.steps[RECOUNT].sql, dry.steps[STATISTICS].sql
    if dialect == "sqlite":
        # SQLite never estimates: the exact count, and nothing of an estimate.
        assert recount == [
            'SELECT count(*), sum(CASE WHEN "created_at" < :cutoff THEN 1 ELSE 0 END) FROM "events"'
        ]
        assert statistics == ['ANALYZE main."events"']
    elif dialect == "postgresql":
        # Derived from the estimate before the purge: no statement, and no cast of a
        # histogram's type still to fill in.
        assert recount == [DERIVED]
        assert statistics == ['VACUUM (ANALYZE) "events"']
    else:
        assert recount == [DERIVED] or recount[0].startswith("-- <estimated when it runs")
        assert statistics == ["ANALYZE TABLE `events`"]
    assert "<key>" not in " ".join(recount + statistics)


def test_a_value_only_the_previewed_step_gives_is_a_named_placeholder(home: Path) -> None:
    """A count told `before` by a step only previewed (a drafted plan's purge): what it
    will estimate is not guessed, it is named with the value it waits for; so are the
    statements of a VACUUM whose options wait for it."""
    counted = {"table": "events", "date_column": "created_at", "estimate": True}
    steps = (
        Step("step_0", "count_table_rows", {**counted, "retention_days": 30}),
        Step(
            "step_1",
            "delete_old_records",
            {"table": "events", "date_column": "created_at", "retention_days": 30},
        ),
        Step(
            "step_2",
            "count_table_rows",
            {
                **counted,
                "cutoff": "${step_0.output.cutoff}",
                "before": "${step_1.output}",
                "after_purge": "${step_1.output}",
            },
        ),
        # A tool that cannot tell its statements without the value: they are named.
        Step(
            "step_3",
            "optimize_table",
            {"table": "events", "update_stats": "${step_1.output.large_purge}"},
        ),
    )
    with scratch_postgresql() as url:
        config = use_target(home, url)
        fill(url)
        plan = Plan("log_cleanup", "db", "postgresql", job(), steps)
        result = commands.apply_plan(config, plan, dry_run=True)
    assert result.status == "completed", result.error
    [shown] = result.steps[2].sql
    assert shown.startswith('-- <estimated when it runs, from "events"'), shown
    assert "<step_1.output: known once step_1 runs>" in shown
    assert result.steps[3].sql == [
        "-- <statements chosen when it runs, from update_stats (step_1.output.large_purge): "
        "step_1 only previewed>"
    ]
    # What it waits for is shown as the plan gives it; what is known, as it was found.
    params = result.steps[2].params
    assert params["before"] == "${step_1.output}"
    assert params["cutoff"] == result.steps[0].output["cutoff"]
