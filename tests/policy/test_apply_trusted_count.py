"""`apply` counts a saved plan's tables as a run would: with the target's
trusted_functions. A table whose CHECK calls a function the site lists as only reading
was refused at apply ("could not be counted": the guard, which did not take the list
there, refused the count), though the plan still fitted it and the run would count it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.errors import PlanError
from aishell.policy.approvers import NonInteractive
from tests.policy.test_limits_on_facts import _limited, _pg_stale, _sql, pg_url

__all__ = ["pg_url"]  # the fixture, found by pytest in this module

TABLE = "fixtrust_logs"


def _trusting(home: Path, url: str, trusted: list[str]) -> Config:
    _limited(home, url, max_rows=1_000_000)
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["trusted_functions"] = trusted
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def _planned_then_grown(home: Path, url: str, config: Config) -> Path:
    """A plan made at 1,000 rows, then 500 more written without an ANALYZE: within what
    apply lets a plan's table grow, but past what its size alone can settle."""
    out = home / "plan.json"
    commands.plan_job(config, "maintenance", {"type": "quick", "tables": [TABLE]}, out=out)
    _sql(url, f"INSERT INTO {TABLE} (v) SELECT 'row ' || g FROM generate_series(1, 500) g")
    return out


@pytest.fixture
def checked_table(pg_url: str) -> str:
    _pg_stale(pg_url, TABLE, 1_000, 0)
    _sql(
        pg_url,
        "CREATE FUNCTION fixtrust_ok(bigint) RETURNS boolean LANGUAGE sql IMMUTABLE "
        "AS 'SELECT true'",
        f"ALTER TABLE {TABLE} ADD CONSTRAINT fixtrust_checked CHECK (fixtrust_ok(id))",
    )
    return pg_url


def test_apply_counts_a_table_with_the_targets_trusted_functions(
    home: Path, checked_table: str
) -> None:
    config = _trusting(home, checked_table, ["public.fixtrust_ok"])
    plan = commands.load_plan_file(_planned_then_grown(home, checked_table, config))
    result = commands.apply_plan(config, plan, approver=NonInteractive())
    assert result.status == "completed", result.error


def test_without_the_trust_the_count_is_refused_and_so_is_the_plan(
    home: Path, checked_table: str
) -> None:
    config = _trusting(home, checked_table, [])
    plan = commands.load_plan_file(_planned_then_grown(home, checked_table, config))
    with pytest.raises(PlanError, match="changed since the plan was made") as err:
        commands.apply_plan(config, plan, approver=NonInteractive())
    assert f"the rows of '{TABLE}' could not be counted against the plan's 1,000" in str(err.value)
