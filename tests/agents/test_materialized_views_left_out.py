"""A PostgreSQL materialized view is no table to maintenance (README: materialized
views): no maintenance type plans a step on one, and one named in `--tables` is refused
in one line saying what it is, not reported missing as a typo would be."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.errors import TargetError
from tests.helpers import run_sql, use_target


def _shop(url: str) -> None:
    run_sql(
        url,
        "CREATE TABLE mv_orders (id int PRIMARY KEY, total int)",
        "INSERT INTO mv_orders SELECT g, g % 7 FROM generate_series(1, 500) g",
        "CREATE MATERIALIZED VIEW mv_totals AS SELECT total, count(*) AS n FROM mv_orders "
        "GROUP BY total",
        "CREATE UNIQUE INDEX mv_totals_total ON mv_totals (total)",
    )


def test_a_materialized_view_named_is_refused_saying_what_it_is(home: Path, pg_url: str) -> None:
    _shop(pg_url)
    config = use_target(home, pg_url)
    with pytest.raises(TargetError) as raised:
        commands.plan_job(config, "maintenance", {"type": "full", "tables": ["mv_totals"]})
    message = str(raised.value)
    assert message.startswith("'mv_totals' is a materialized view, not a table"), message
    assert "\n" not in message
    done = CliRunner().invoke(
        cli, ["plan", "maintenance", "--type", "standard", "--tables", "mv_totals"]
    )
    assert done.exit_code == 2, done.output
    assert "'mv_totals' is a materialized view, not a table" in done.output


@pytest.mark.parametrize("kind", ["quick", "standard", "full"])
def test_no_maintenance_type_plans_a_step_on_a_materialized_view(
    home: Path, pg_url: str, kind: str
) -> None:
    _shop(pg_url)
    config = use_target(home, pg_url)
    preview = commands.plan_job(config, "maintenance", {"type": kind})
    assert any("mv_orders" in line for step in preview.steps for line in step.sql)
    for step in preview.steps:
        assert "mv_totals" not in str(step.params), step.params
        assert not any("mv_totals" in line for line in step.sql), step.sql
